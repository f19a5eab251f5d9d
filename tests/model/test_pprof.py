"""pprof profiles through model/pprof.proto: round trips, Go's own pprof tool, hostile input."""

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podflame.model import pprof
from podflame.model import pprof_pb2 as pb
from podflame.model.frames import Frame, FrameKind
from podflame.model.pprof import (
    DecodedProfile,
    PprofError,
    PprofLimitExceeded,
    PprofLimits,
    PprofTooLarge,
    StringTable,
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


def full_profile() -> pb.Profile:
    """Every field podflame reads, with inlining, labels and negative numbers."""
    s = StringTable()
    message = pb.Profile(
        sample_type=[pb.ValueType(type=s("samples"), unit=s("count")), cpu_type(s)],
        sample=[
            pb.Sample(
                location_id=[2, 1],
                value=[3, 30_000_000],
                label=[pb.Label(key=s("thread"), str=s("w1")), pb.Label(key=s("bytes"), num=-5)],
            ),
            pb.Sample(location_id=[1], value=[1, 10_000_000]),
        ],
        mapping=[
            pb.Mapping(
                id=1,
                memory_start=0x400000,
                memory_limit=0x500000,
                file_offset=0x1000,
                filename=s("/usr/bin/app"),
                build_id=s("abc123"),
            )
        ],
        location=[
            pb.Location(
                id=1, mapping_id=1, address=0x401000, line=[pb.Line(function_id=1, line=10)]
            ),
            # Inlined: `inner` was inlined into `outer`; the caller comes last.
            pb.Location(
                id=2,
                mapping_id=1,
                address=0x402000,
                line=[pb.Line(function_id=3, line=7), pb.Line(function_id=2, line=-1)],
            ),
        ],
        function=[
            pb.Function(
                id=1, name=s("main"), system_name=s("main"), filename=s("app.c"), start_line=1
            ),
            pb.Function(
                id=2, name=s("outer"), system_name=s("_Z5outerv"), filename=s("app.c"), start_line=5
            ),
            pb.Function(id=3, name=s("inner"), filename=s("app.c")),
        ],
        time_nanos=1_700_000_000_000_000_000,
        duration_nanos=10_000_000_000,
        period_type=cpu_type(s),
        period=10_000_000,
        default_sample_type=s("cpu"),
    )
    message.string_table.extend(s.table())
    return message


def cpu_type(strings: StringTable) -> pb.ValueType:
    return pb.ValueType(type=strings(CPU.type), unit=strings(CPU.unit))


def read(message: pb.Profile) -> DecodedProfile:
    return DecodedProfile.of(message)


def test_encode_decode_round_trip() -> None:
    message = full_profile()
    assert pprof.decode(pprof.encode(message), LIMIT).message == message
    assert pprof.decode(pprof.encode_gzip(message), LIMIT).message == message
    # encode_gzip writes a plain gzip member, as pprof files are.
    assert gzip.decompress(pprof.encode_gzip(message)) == pprof.encode(message)
    profile = pprof.decode(pprof.encode(message), LIMIT)
    assert profile.sample_types == (ValueType("samples", "count"), CPU)
    assert (profile.period_type, profile.default_sample_type) == (CPU, "cpu")
    (labelled, _) = profile.message.sample
    assert profile.text_labels(labelled) == [("thread", "w1")]  # numeric labels left out


def test_stacks_are_root_first_with_inlined_frames_expanded() -> None:
    profile = read(full_profile())
    assert pprof.folded_totals(profile, profile.sample_type_index()) == {
        ("main", "outer", "inner"): 30_000_000,
        ("main",): 10_000_000,
    }
    assert pprof.folded_totals(profile, profile.sample_type_index("samples")) == {
        ("main", "outer", "inner"): 3,
        ("main",): 1,
    }


def test_a_location_without_lines_is_named_by_its_module_and_offset() -> None:
    message = full_profile()
    del message.location[1].line[:]  # at 0x402000 in a mapping of offset 0x1000 at 0x400000
    message.location.add(id=3, mapping_id=9, address=0x402010)  # no such mapping
    message.sample.add(location_id=[3], value=[1, 1])
    totals = pprof.folded_totals(read(message), 0)
    assert totals == {("main", "app+0x3000"): 3, ("main",): 1, ("0x402010",): 1}


def expanding_profile(lines: int = 3000, references: int = 3000) -> pb.Profile:
    """Issue 16's attack: one location of `lines` inlined lines, `references` times in one
    sample: lines x references frames from about a hundred gzip-compressed bytes."""
    return pb.Profile(
        sample_type=[pb.ValueType(type=1, unit=2)],
        sample=[pb.Sample(location_id=[1] * references, value=[1])],
        location=[pb.Location(id=1, line=[pb.Line(function_id=1)] * lines)],
        function=[pb.Function(id=1, name=3)],
        string_table=[b"", b"cpu", b"nanoseconds", b"f"],
    )


def test_the_frames_a_profile_expands_to_are_counted_without_expanding() -> None:
    message = expanding_profile()
    assert len(gzip.compress(pprof.encode(message), 9)) < 128
    assert pprof.expanded_frames(read(message), 10**9) == 9_000_000
    assert pprof.expanded_frames(read(message), 1024) == 1024
    dangling = pb.Profile(sample_type=[pb.ValueType()], sample=[pb.Sample(location_id=[7])])
    with pytest.raises(PprofError, match="unknown location"):
        pprof.expanded_frames(read(dangling), 1024)


def test_deep_stacks_keep_their_leaf_end() -> None:
    stack = tuple(f"f{depth}" for depth in range(2000))  # root first
    profile = read(pprof.profile_from_stacks([(stack, 5)], CPU))
    ((_, _, frames),) = pprof.stacks_from_profile(profile, 0, max_frames=100)
    assert frames == (TRUNCATED_FRAME, *stack[-99:])
    assert list(frames) == truncate_stack(stack, 100)
    ((_, _, whole),) = pprof.stacks_from_profile(profile, 0, max_frames=2000)
    assert whole == stack
    ((_, _, exact),) = pprof.stacks_from_profile(profile, 0, max_frames=1999)
    assert exact == (TRUNCATED_FRAME, *stack[-1998:])
    ((_, _, cut),) = pprof.stacks_from_profile(read(expanding_profile()), 0, max_frames=1024)
    assert cut == (TRUNCATED_FRAME, *["f"] * 1023)


@pytest.mark.parametrize(
    ("limits", "limit"),
    [
        (PprofLimits(max_samples=1), "max_samples"),
        (PprofLimits(max_locations=1), "max_locations"),
        (PprofLimits(max_lines=2), "max_lines"),
        (PprofLimits(max_functions=2), "max_functions"),
        (PprofLimits(max_strings=14), "max_strings"),
        (PprofLimits(max_sample_entries=8), "max_sample_entries"),
    ],
)
def test_decoding_stops_at_the_limits(limits: PprofLimits, limit: str) -> None:
    data = pprof.encode(full_profile())
    # full_profile() has 2 samples, 2 locations, 3 lines, 3 functions and 15 strings.
    enough = PprofLimits(
        max_samples=2,
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


def varint(value: int) -> bytes:
    return varint_field(1, value)[1:]  # a field's key is one byte for field 1


@pytest.mark.parametrize("data", [b"\x81", b"\x80" * 11 + b"\x01", b"\x01\x81"])
def test_broken_packed_varints_raise_pprof_error(data: bytes) -> None:
    with pytest.raises(PprofError, match="malformed protobuf"):
        pprof.decode(bytes_field(2, bytes_field(1, data)), LIMIT)


def test_profile_from_stacks_has_one_location_per_frame_name() -> None:
    message = pprof.profile_from_stacks(STACKS.items(), CPU, period=10_000_000)
    profile = read(message)
    names = [profile.string(function.name) for function in message.function]
    assert sorted(names) == sorted({frame for stack in STACKS for frame in stack})
    assert all(len(location.line) == 1 for location in message.location)
    decoded = pprof.decode(pprof.encode_gzip(message), LIMIT)
    assert pprof.folded_totals(decoded, 0) == STACKS


def test_typed_frames_keep_their_file_and_line() -> None:
    shop = Frame(FrameKind.PYTHON, "Shop.checkout", file="/app/shop.py", line=42)
    stacks = [((Frame(FrameKind.NATIVE, "main"), shop, Frame(FrameKind.KERNEL, "read")), 7)]
    profile = read(pprof.profile_from_stacks(stacks, CPU))
    (function,) = [f for f in profile.message.function if profile.string(f.name) == shop.name]
    assert profile.string(function.filename) == "/app/shop.py"
    lines = [line for location in profile.message.location for line in location.line]
    assert any(line.function_id == function.id and line.line == 42 for line in lines)
    assert pprof.folded_totals(profile, 0) == {("main", "Shop.checkout", "read_[k]"): 7}


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


def test_names_that_are_not_utf8_are_replaced_not_refused() -> None:
    message = expanding_profile(lines=1, references=1)
    message.string_table[3] = b"f\xff\xfe"
    profile = pprof.decode(pprof.encode(message), LIMIT)
    assert pprof.folded_totals(profile, 0) == {("f\ufffd\ufffd",): 1}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x08", "malformed protobuf"),  # a key, then nothing
        (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "malformed protobuf"),  # 11 bytes
        (b"\x12\x05ab", "malformed protobuf"),  # a length past the end
        (b"\x0b", "malformed protobuf"),  # a group, never closed
        (b"\x00", "malformed protobuf"),  # field number 0
        (b"\x0a\x02\x08\x05", "string index 5"),  # sample_type.type -> no such string
        (b"\x0a\x0b\x08" + b"\xff" * 9 + b"\x01", "string index -1"),  # a negative index
        (b"\x70\x07", "string index 7"),  # default_sample_type
        (b"\x1f\x8bnot gzip", "gzip"),
    ],
)
def test_malformed_profiles_raise_pprof_error(data: bytes, message: str) -> None:
    with pytest.raises(PprofError, match=message):
        pprof.decode(data, LIMIT)


def test_dangling_references_raise_pprof_error() -> None:
    message = pb.Profile(
        sample_type=[pb.ValueType()], sample=[pb.Sample(location_id=[9], value=[1])]
    )
    with pytest.raises(PprofError, match="unknown location 9"):
        pprof.folded_totals(pprof.decode(pprof.encode(message), LIMIT), 0)
    message = pb.Profile(sample_type=[pb.ValueType()], sample=[pb.Sample(value=[1, 2])])
    with pytest.raises(PprofError, match="2 values"):
        pprof.folded_totals(read(message), 0)
    message = expanding_profile(lines=1, references=1)
    message.location[0].line[0].function_id = 2
    with pytest.raises(PprofError, match="location 1 refers to unknown function"):
        pprof.folded_totals(read(message), 0)
    message = expanding_profile(lines=1, references=1)
    message.function[0].name = 4
    with pytest.raises(PprofError, match="string index 4"):
        pprof.folded_totals(read(message), 0)


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
    message = pprof.profile_from_stacks(
        STACKS.items(), CPU, period=10_000_000, time_nanos=1, duration_nanos=10**9
    )
    path.write_bytes(pprof.encode_gzip(message))
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
    assert decoded.sample_types == read(full_profile()).sample_types
    index = decoded.sample_type_index("cpu")
    assert pprof.folded_totals(decoded, index) == pprof.folded_totals(read(full_profile()), 1)
