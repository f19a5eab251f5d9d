"""Separate debug files, split off with objcopy and laid out in a fake root."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from podflame.symbolizer import debuginfo
from podflame.symbolizer.debuginfo import (
    DebugFileStats,
    crc_matches,
    open_debug_file,
    read_debuglink,
)

SOURCE = Path(__file__).resolve().parent.parent / "fixtures" / "symbolizer" / "debuginfo.c"
APP_DIR = "/opt/app/bin"  # where the binary sits inside the fake root


@dataclass(frozen=True)
class Split:
    """A stripped program and its debug file, as the standard recipe makes them."""

    program: Path
    debug: Path
    build_id: str
    crc: int


def split_build(directory: Path, *defines: str) -> Split:
    """gcc -g, then objcopy --only-keep-debug / strip / objcopy --add-gnu-debuglink."""
    for tool in ("gcc", "objcopy", "strip", "readelf"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed to build the debug-file fixture (scripts/install.sh)")
    directory.mkdir(parents=True, exist_ok=True)
    program, debug = directory / "prog", directory / "prog.debug"
    commands = [
        ["gcc", "-g", "-O0", *defines, "-o", str(program), str(SOURCE)],
        ["objcopy", "--only-keep-debug", str(program), str(debug)],
        ["strip", "--strip-debug", "--strip-unneeded", str(program)],
        # Run where the debug file is: objcopy reads it for the CRC.
        ["objcopy", f"--add-gnu-debuglink={debug.name}", program.name],
    ]
    for command in commands:
        subprocess.run(command, check=True, capture_output=True, cwd=directory)
    notes = subprocess.run(["readelf", "-n", str(program)], capture_output=True, text=True)
    match = re.search(r"Build ID: ([0-9a-f]+)", notes.stdout)
    assert match is not None, notes.stdout
    crc = zlib.crc32(debug.read_bytes())
    return Split(program, debug, match.group(1), crc)


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Split:
    return split_build(tmp_path_factory.mktemp("debuginfo") / "main")


@pytest.fixture(scope="module")
def other_build(tmp_path_factory: pytest.TempPathFactory) -> Split:
    """The same program compiled differently: same debuglink name, another CRC."""
    return split_build(tmp_path_factory.mktemp("debuginfo") / "other", "-DVARIANT=3")


@pytest.fixture
def root(tmp_path: Path, split: Split) -> Path:
    """A container-like root holding the stripped program at /opt/app/bin/prog."""
    root = tmp_path / "root"
    place(root, f"{APP_DIR}/prog", split.program)
    return root


def place(root: Path, path: str, source: Path) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def find_debug_file(
    root: Path,
    binary_path: str,
    build_id: str | None,
    debuglink: str | None,
    *,
    debuglink_crc: int | None = None,
    stats: DebugFileStats | None = None,
) -> Path | None:
    """Where the debug file `open_debug_file` opened lies on this host (or None)."""
    stream = open_debug_file(
        root, binary_path, build_id, debuglink, debuglink_crc=debuglink_crc, stats=stats
    )
    if stream is None:
        return None
    with stream:
        return Path(os.readlink(f"/proc/self/fd/{stream.fileno()}"))


def build_id_path(build_id: str) -> str:
    return f"/usr/lib/debug/.build-id/{build_id[:2]}/{build_id[2:]}.debug"


def function_symbols(path: Path) -> set[str]:
    with path.open("rb") as stream:
        section = ELFFile(stream).get_section_by_name(".symtab")
        if section is None:
            return set()
        return {s.name for s in section.iter_symbols() if s["st_info"]["type"] == "STT_FUNC"}


# --- The fixture itself ----------------------------------------------------------


def test_the_split_moved_the_symbols_into_the_debug_file(split: Split) -> None:
    assert "debuginfo_marker_function" not in function_symbols(split.program)
    assert "debuginfo_static_helper" in function_symbols(split.debug)
    notes = subprocess.run(["readelf", "-n", str(split.debug)], capture_output=True, text=True)
    assert split.build_id in notes.stdout


# --- read_debuglink / crc_matches -----------------------------------------------------


def test_read_debuglink_gives_the_name_and_crc(split: Split) -> None:
    with split.program.open("rb") as stream:
        assert read_debuglink(stream) == ("prog.debug", split.crc)


def test_read_debuglink_agrees_with_readelf(split: Split) -> None:
    dump = subprocess.run(
        ["readelf", "-x", ".gnu_debuglink", str(split.program)], capture_output=True, text=True
    ).stdout
    words = re.findall(r"^\s+0x[0-9a-f]+ ((?:[0-9a-f]{2,8} ?)+)", dump, re.MULTILINE)
    raw = bytes.fromhex("".join(words).replace(" ", ""))

    assert raw.startswith(b"prog.debug\0")
    assert int.from_bytes(raw[-4:], "little") == split.crc


def test_read_debuglink_without_a_section_or_an_elf_gives_none(split: Split) -> None:
    with split.debug.open("rb") as stream:
        assert read_debuglink(stream) is None  # a debug file has no debuglink
    assert read_debuglink(io.BytesIO(b"not an ELF file at all")) is None
    assert read_debuglink(io.BytesIO(b"")) is None
    data = split.program.read_bytes()
    assert read_debuglink(io.BytesIO(data[: len(data) // 2])) is None  # no section headers


def test_read_debuglink_survives_damage(split: Split) -> None:
    data = split.program.read_bytes()
    offset = data.index(b"prog.debug\0")
    for damaged in (
        data[:offset] + b"\0" * 16 + data[offset + 16 :],  # empty name
        data[:offset] + b"../../etc/passwd\0" + data[offset + 17 :],  # a path, not a name
        data[:offset] + b"x" * 16 + data[offset + 16 :],  # no NUL: no room left for the CRC
    ):
        assert read_debuglink(io.BytesIO(damaged)) is None


def test_crc_matches(split: Split, other_build: Split, tmp_path: Path) -> None:
    assert crc_matches(split.debug, split.crc)
    assert not crc_matches(other_build.debug, split.crc)
    assert not crc_matches(tmp_path / "missing", split.crc)
    assert not crc_matches(tmp_path, split.crc)  # a directory


# --- find_debug_file --------------------------------------------------------------


def test_found_by_build_id(root: Path, split: Split) -> None:
    expected = place(root, build_id_path(split.build_id), split.debug)

    found = find_debug_file(root, f"{APP_DIR}/prog", split.build_id, None)

    assert found == expected
    assert "debuginfo_marker_function" in function_symbols(found)


@pytest.mark.parametrize(
    "location",
    [
        f"{APP_DIR}/prog.debug",
        f"{APP_DIR}/.debug/prog.debug",
        f"/usr/lib/debug{APP_DIR}/prog.debug",
    ],
)
def test_found_by_debuglink(root: Path, split: Split, location: str) -> None:
    expected = place(root, location, split.debug)
    with (root / APP_DIR.lstrip("/") / "prog").open("rb") as stream:
        link = read_debuglink(stream)
    assert link is not None
    name, crc = link

    found = find_debug_file(root, f"{APP_DIR}/prog", split.build_id, name, debuglink_crc=crc)

    assert found == expected
    assert find_debug_file(root, f"{APP_DIR}/prog", None, name) == expected


def test_candidates_are_tried_in_order(root: Path, split: Split, other_build: Split) -> None:
    by_build_id = place(root, build_id_path(split.build_id), split.debug)
    place(root, f"/usr/lib/debug{APP_DIR}/prog.debug", split.debug)
    next_to_binary = place(root, f"{APP_DIR}/prog.debug", split.debug)
    program = f"{APP_DIR}/prog"

    assert find_debug_file(root, program, split.build_id, "prog.debug") == by_build_id
    assert find_debug_file(root, program, None, "prog.debug") == next_to_binary
    assert find_debug_file(root, program, other_build.build_id, "prog.debug") == next_to_binary


def test_a_debug_file_of_another_build_is_rejected(
    root: Path, split: Split, other_build: Split
) -> None:
    place(root, f"{APP_DIR}/prog.debug", other_build.debug)
    expected = place(root, f"/usr/lib/debug{APP_DIR}/prog.debug", split.debug)
    program = f"{APP_DIR}/prog"

    found = find_debug_file(root, program, None, "prog.debug", debuglink_crc=split.crc)

    assert found == expected  # the wrong build next to the binary was skipped
    expected.unlink()
    assert find_debug_file(root, program, None, "prog.debug", debuglink_crc=split.crc) is None


def test_nothing_found(root: Path, split: Split) -> None:
    program = f"{APP_DIR}/prog"

    assert find_debug_file(root, program, split.build_id, "prog.debug") is None
    assert find_debug_file(root, program, None, None) is None
    assert find_debug_file(root / "missing", program, split.build_id, "prog.debug") is None


def test_the_binary_itself_is_not_its_debug_file(root: Path) -> None:
    assert find_debug_file(root, f"{APP_DIR}/prog", None, "prog") is None


@pytest.mark.parametrize(
    ("build_id", "debuglink"),
    [
        ("zz" * 20, None),
        ("a", None),
        ("", ""),
        ("../../../../etc", None),
        (None, "../../../../../../etc/hostname"),
        (None, "a/b"),
        (None, ".."),
        (None, "x\0y"),
    ],
)
def test_hostile_names_find_nothing_and_never_raise(
    root: Path, build_id: str | None, debuglink: str | None
) -> None:
    place(root, "/etc/hostname", root / APP_DIR.lstrip("/") / "prog")

    assert find_debug_file(root, f"{APP_DIR}/prog", build_id, debuglink) is None
    assert find_debug_file(root, "\0", build_id, debuglink) is None


def test_absolute_symlinks_resolve_inside_the_root(root: Path, split: Split) -> None:
    """As in a container seen through /proc/PID/root: "/x" means <root>/x."""
    real = place(root, "/usr/lib/debug/real/prog.debug", split.debug)
    link = root / build_id_path(split.build_id).lstrip("/")
    link.parent.mkdir(parents=True)
    link.symlink_to("/usr/lib/debug/real/prog.debug")

    assert find_debug_file(root, f"{APP_DIR}/prog", split.build_id, None) == real


def test_symlinks_do_not_lead_out_of_the_root(root: Path, split: Split, tmp_path: Path) -> None:
    outside = tmp_path / "outside.debug"  # exists on the host, not under root
    shutil.copyfile(split.debug, outside)
    link = root / build_id_path(split.build_id).lstrip("/")
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    relative = root / APP_DIR.lstrip("/") / "prog.debug"
    relative.symlink_to("../" * 12 + str(outside).lstrip("/"))

    assert find_debug_file(root, f"{APP_DIR}/prog", split.build_id, "prog.debug") is None


def test_symlink_loops_end(root: Path, split: Split) -> None:
    loop = root / APP_DIR.lstrip("/") / "prog.debug"
    loop.symlink_to("prog.debug")

    assert find_debug_file(root, f"{APP_DIR}/prog", None, "prog.debug") is None


def test_relative_symlinks_as_fedora_lays_them_out(root: Path, split: Split) -> None:
    real = place(root, f"/usr/lib/debug{APP_DIR}/prog-1.0.debug", split.debug)
    link = root / build_id_path(split.build_id).lstrip("/")
    link.parent.mkdir(parents=True)
    link.symlink_to(f"../..{APP_DIR}/prog-1.0.debug")

    assert find_debug_file(root, f"{APP_DIR}/prog", split.build_id, None) == real


def test_the_host_root_works(split: Split) -> None:
    """With root "/", the paths are the host's own (here: a temporary directory)."""
    program = str(split.program)

    assert find_debug_file(Path("/"), program, None, "prog.debug") == split.debug


def test_symlinks_through_a_directory_stay_inside_the_root(
    root: Path, split: Split, tmp_path: Path
) -> None:
    """A container's /usr/lib/debug as a link to a host directory holding the file:
    resolved inside the container, so not found (O_NOFOLLOW guarded only the last part)."""
    host = tmp_path / "host-debug"
    place(host, build_id_path(split.build_id).removeprefix("/usr/lib/debug"), split.debug)
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "debug").symlink_to(host)

    assert find_debug_file(root, f"{APP_DIR}/prog", split.build_id, None) is None


def test_a_debuglink_candidate_over_the_crc_cap_is_not_used(
    root: Path, split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    place(root, f"{APP_DIR}/prog.debug", split.debug)
    stats = DebugFileStats()
    found = find_debug_file(root, f"{APP_DIR}/prog", None, "prog.debug", debuglink_crc=split.crc)
    assert found is not None  # within the cap: checked and used

    monkeypatch.setattr(debuginfo, "MAX_CRC_BYTES", split.debug.stat().st_size - 1)
    program = f"{APP_DIR}/prog"
    assert (
        find_debug_file(root, program, None, "prog.debug", debuglink_crc=split.crc, stats=stats)
        is None
    )
    assert stats.too_big_to_check == 1
    assert not crc_matches(split.debug, split.crc)
