"""The profile.proto codec: round trips, Go's own pprof tool, and hostile input."""

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podflame.model import pprof
from podflame.model.pprof import (
    Function,
    Label,
    Line,
    Location,
    Mapping,
    PprofError,
    PprofLimitExceeded,
    PprofLimits,
    PprofTooLarge,
    Profile,
    Sample,
    ValueType,
)
from podflame.model.profile import TRUNCATED_FRAME, truncate_stack
from tests.protobuf import bytes_field, varint_field

LIMIT = 1 << 20
CPU = ValueType("cpu", "nanoseconds")

STACKS = {
    ("main", "work", "burn"): 30_000_000,
    ("main", "work"): 10_000_000,
    ("main", "sys_write", "vfs_write_[k]"): 20_000_000,
}


def full_profile() -> Profile:
    """Every field the codec knows, with inlining, labels and negative numbers."""
    return Profile(
        sample_types=[ValueType("samples", "count"), CPU],
        samples=[
            Sample([2, 1], [3, 30_000_000], [Label("thread", text="w1"), Label("bytes", num=-5)]),
            Sample([1], [1, 10_000_000]),
        ],
        mappings=[Mapping(1, 0x400000, 0x500000, 0x1000, "/usr/bin/app", "abc123")],
        locations=[
            Location(1, mapping_id=1, address=0x401000, lines=[Line(1, 10)]),
            # Inlined: `inner` was inlined into `outer`; the caller comes last.
            Location(2, mapping_id=1, address=0x402000, lines=[Line(3, 7), Line(2, -1)]),
        ],
        functions=[
            Function(1, "main", "main", "app.c", 1),
            Function(2, "outer", "_Z5outerv", "app.c", 5),
            Function(3, "inner", filename="app.c"),
        ],
        time_nanos=1_700_000_000_000_000_000,
        duration_nanos=10_000_000_000,
        period_type=CPU,
        period=10_000_000,
        default_sample_type="cpu",
    )


def test_encode_decode_round_trip() -> None:
    profile = full_profile()
    assert pprof.decode(pprof.encode(profile), LIMIT) == profile
    assert pprof.decode(pprof.encode_gzip(profile), LIMIT) == profile
    # encode_gzip writes a plain gzip member, as pprof files are.
    assert gzip.decompress(pprof.encode_gzip(profile)) == pprof.encode(profile)


def test_stacks_are_root_first_with_inlined_frames_expanded() -> None:
    profile = full_profile()
    assert pprof.folded_totals(profile, profile.sample_type_index()) == {
        ("main", "outer", "inner"): 30_000_000,
        ("main",): 10_000_000,
    }
    assert pprof.folded_totals(profile, profile.sample_type_index("samples")) == {
        ("main", "outer", "inner"): 3,
        ("main",): 1,
    }


def expanding_profile(lines: int = 3000, references: int = 3000) -> Profile:
    """Issue 16's attack: one location of `lines` inlined lines, `references` times in one
    sample: lines x references frames from about a hundred gzip-compressed bytes."""
    return Profile(
        sample_types=[CPU],
        samples=[Sample([1] * references, [1])],
        locations=[Location(1, lines=[Line(1)] * lines)],
        functions=[Function(1, "f")],
    )


def test_the_frames_a_profile_expands_to_are_counted_without_expanding() -> None:
    profile = expanding_profile()
    assert len(gzip.compress(pprof.encode(profile), 9)) < 128
    assert pprof.expanded_frames(profile, 10**9) == 9_000_000
    assert pprof.expanded_frames(profile, 1024) == 1024
    with pytest.raises(PprofError, match="unknown location"):
        pprof.expanded_frames(Profile([CPU], [Sample([7], [1])]), 1024)


def test_deep_stacks_keep_their_leaf_end() -> None:
    stack = tuple(f"f{depth}" for depth in range(2000))  # root first
    profile = pprof.profile_from_stacks([(stack, 5)], CPU)
    ((_, frames),) = pprof.stacks_from_profile(profile, 0, max_frames=100)
    assert frames == (TRUNCATED_FRAME, *stack[-99:])
    assert list(frames) == truncate_stack(stack, 100)
    ((_, whole),) = pprof.stacks_from_profile(profile, 0, max_frames=2000)
    assert whole == stack
    ((_, cut),) = pprof.stacks_from_profile(expanding_profile(), 0, max_frames=1024)
    assert cut == (TRUNCATED_FRAME, *["f"] * 1023)


@pytest.mark.parametrize(
    ("limits", "limit"),
    [
        (PprofLimits(max_samples=1), "max_samples"),
        (PprofLimits(max_locations=1), "max_locations"),
        (PprofLimits(max_lines=2), "max_lines"),
        (PprofLimits(max_functions=2), "max_functions"),
        (PprofLimits(max_strings=4), "max_strings"),
        (PprofLimits(max_sample_entries=8), "max_sample_entries"),
    ],
)
def test_decoding_stops_at_the_limits(limits: PprofLimits, limit: str) -> None:
    data = pprof.encode(full_profile())
    # full_profile() has 2 samples, 2 locations, 3 lines, 3 functions and 15 strings.
    enough = PprofLimits(
        max_samples=2,
        max_sample_locations=2,
        max_sample_entries=2 + 2 + 1 + 2 + 2,  # location ids, values and labels
        max_locations=2,
        max_lines=3,
        max_functions=3,
        max_strings=15,
    )
    assert pprof.decode(data, LIMIT, enough) == pprof.decode(data, LIMIT)
    with pytest.raises(PprofLimitExceeded) as exceeded:
        pprof.decode(data, LIMIT, limits)
    assert exceeded.value.limit == limit


@pytest.mark.parametrize("packed", [True, False])
def test_a_sample_keeps_its_leaf_end_locations_unread_past_the_limit(packed: bool) -> None:
    ids = list(range(1, 3001))  # leaf first; 200 and up take two bytes
    encoded = (
        bytes_field(1, b"".join(varint(i) for i in ids))
        if packed
        else b"".join(varint_field(1, i) for i in ids)
    )
    data = bytes_field(2, encoded + varint_field(2, 7))
    (sample,) = pprof.decode(data, LIMIT, PprofLimits(max_sample_locations=300)).samples
    assert (sample.location_ids, sample.values) == (ids[:300], [7])
    (whole,) = pprof.decode(data, LIMIT).samples
    assert whole.location_ids == ids


def varint(value: int) -> bytes:
    return varint_field(1, value)[1:]  # a field's key is one byte for field 1


@pytest.mark.parametrize("data", [b"\x81", b"\x80" * 11 + b"\x01", b"\x01\x81"])
def test_broken_packed_varints_raise_pprof_error(data: bytes) -> None:
    with pytest.raises(PprofError, match="varint"):
        pprof.decode(bytes_field(2, bytes_field(1, data)), LIMIT)


def test_profile_from_stacks_has_one_location_per_frame_name() -> None:
    profile = pprof.profile_from_stacks(STACKS.items(), CPU, period=10_000_000)
    names = [function.name for function in profile.functions]
    assert sorted(names) == sorted({frame for stack in STACKS for frame in stack})
    assert all(len(location.lines) == 1 for location in profile.locations)
    decoded = pprof.decode(pprof.encode_gzip(profile), LIMIT)
    assert pprof.folded_totals(decoded, 0) == STACKS


def test_unpacked_repeated_fields_and_unknown_fields_are_read() -> None:
    # Encoders may write repeated numbers one per field; unknown fields are skipped.
    strings = ["", "cpu", "nanoseconds", "f"]
    sample = varint_field(1, 1) + varint_field(1, 1) + varint_field(2, 7) + varint_field(99, 5)
    message = (
        bytes_field(1, varint_field(1, 1) + varint_field(2, 2))
        + bytes_field(2, sample)
        + bytes_field(4, varint_field(1, 1) + bytes_field(4, varint_field(1, 1)))
        + bytes_field(5, varint_field(1, 1) + varint_field(2, 3))
        + bytes_field(42, b"ignored")
        + b"".join(bytes_field(6, text.encode()) for text in strings)
    )
    assert pprof.folded_totals(pprof.decode(message, LIMIT), 0) == {("f", "f"): 7}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x08", "varint"),  # a key, then nothing
        (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "varint"),  # 11 bytes
        (b"\x12\x05ab", "past the end"),
        (b"\x0b", "wire type 3"),  # a group
        (b"\x00", "field number 0"),
        (b"\x0a\x02\x08\x05", "string index 5"),  # sample_type.type -> no such string
        (b"\x4a\x02ab", "expected a number"),  # time_nanos as bytes
        (b"\x1f\x8bnot gzip", "gzip"),
    ],
)
def test_malformed_profiles_raise_pprof_error(data: bytes, message: str) -> None:
    with pytest.raises(PprofError, match=message):
        pprof.decode(data, LIMIT)


def test_dangling_references_raise_pprof_error() -> None:
    profile = Profile(sample_types=[CPU], samples=[Sample([9], [1])])
    with pytest.raises(PprofError, match="unknown location 9"):
        pprof.folded_totals(pprof.decode(pprof.encode(profile), LIMIT), 0)
    profile = Profile(sample_types=[CPU], samples=[Sample([], [1, 2])])
    with pytest.raises(PprofError, match="2 values"):
        pprof.folded_totals(profile, 0)


def test_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\x00" * (50 * LIMIT))
    assert len(bomb) < LIMIT // 10
    with pytest.raises(PprofTooLarge):
        pprof.decode(bomb, LIMIT)
    with pytest.raises(PprofTooLarge):
        pprof.decode(b"\x0a\x00" * LIMIT, LIMIT)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_pprof_error(data: bytes) -> None:
    try:
        profile = pprof.decode(data, LIMIT)
        for index in range(len(profile.sample_types)):
            pprof.folded_totals(profile, index)
    except PprofError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_corrupted_profiles_raise_only_pprof_error(position: int, byte: int) -> None:
    data = bytearray(pprof.encode(full_profile()))
    data[position % len(data)] = byte
    try:
        profile = pprof.decode(bytes(data), LIMIT)
        pprof.folded_totals(profile, 0)
    except PprofError:
        pass


# --- Go's pprof tool ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def go() -> str:
    path = shutil.which("go")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("go is required in CI (apt-get install golang-go)")
        pytest.skip("go is not installed")
    return path


def go_pprof(go: str, *args: str) -> str:
    result = subprocess.run(
        [go, "tool", "pprof", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_go_tool_pprof_reads_our_profiles(go: str, tmp_path: Path) -> None:
    path = tmp_path / "cpu.pb.gz"
    profile = pprof.profile_from_stacks(
        STACKS.items(), CPU, period=10_000_000, time_nanos=1, duration_nanos=10**9
    )
    path.write_bytes(pprof.encode_gzip(profile))
    top = go_pprof(go, "-top", "-nodecount=100", str(path))
    assert "Type: cpu" in top
    assert "Total samples = 60ms" in top
    flat = {line.split()[-1]: line.split()[0] for line in top.splitlines() if "%" in line}
    assert flat["burn"] == "30ms"
    assert flat["vfs_write_[k]"] == "20ms"
    raw = go_pprof(go, "-raw", str(path))
    assert "cpu/nanoseconds" in raw
    assert "30000000: " in raw


def test_profiles_written_by_go_decode_to_the_same_stacks(go: str, tmp_path: Path) -> None:
    # `-proto` re-encodes with Go's own encoder: its field order and packing.
    ours = tmp_path / "ours.pb.gz"
    ours.write_bytes(pprof.encode_gzip(full_profile()))
    theirs = tmp_path / "theirs.pb.gz"
    go_pprof(go, "-proto", "-output", str(theirs), str(ours))
    decoded = pprof.decode(theirs.read_bytes(), LIMIT)
    assert decoded.sample_types == full_profile().sample_types
    index = decoded.sample_type_index("cpu")
    assert pprof.folded_totals(decoded, index) == pprof.folded_totals(full_profile(), 1)
