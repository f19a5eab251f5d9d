"""Parsing /proc/PID/maps: synthetic lines and the test process's own maps."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from podflame.symbolizer.procmaps import (
    Mapping,
    MappingIndex,
    ProcessGone,
    parse_maps,
    read_maps,
)

MAPS = "\n".join(
    [
        "55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1048601             /usr/bin/prog",
        "55d0c0a02000-55d0c0a07000 r-xp 00002000 fd:01 1048601             /usr/bin/prog",
        "55d0c0a07000-55d0c0a09000 rw-p 00007000 fd:01 1048601             /usr/bin/prog",
        "7f1200000000-7f1200001000 rwxp 00000000 00:00 0 ",  # anonymous: note the space
        "7f1300000000-7f1300004000 r-xp 00001000 103:02 77   /tmp/my lib.so (deleted)",
        "7ffd4a1f0000-7ffd4a1f2000 r-xp 00000000 00:00 0                   [vdso]",
        "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0           [vsyscall]",
        "this line is garbage",
    ]
)


def test_keeps_only_executable_mappings_with_every_field() -> None:
    mappings = parse_maps(MAPS)

    assert [m.path for m in mappings] == [
        "/usr/bin/prog",
        "",
        "/tmp/my lib.so",
        "[vdso]",
        "[vsyscall]",
    ]
    assert mappings[0] == Mapping(
        0x55D0C0A02000, 0x55D0C0A07000, 0x2000, 0xFD, 0x01, 1048601, "/usr/bin/prog", False
    )
    deleted = mappings[2]
    assert (deleted.dev_major, deleted.dev_minor, deleted.inode) == (0x103, 0x02, 77)
    assert deleted.deleted and deleted.is_file
    assert not mappings[1].is_file and not mappings[1].is_pseudo  # anonymous (JIT)
    assert mappings[3].is_pseudo and not mappings[3].is_file


def test_file_offset_and_index_boundaries() -> None:
    index = MappingIndex(parse_maps(MAPS))
    prog = index.find(0x55D0C0A02000)

    assert prog is not None and prog.path == "/usr/bin/prog"
    assert prog.file_offset(0x55D0C0A02010) == 0x2010
    assert index.find(0x55D0C0A06FFF) == prog
    assert index.find(0x55D0C0A07000) is None  # end is exclusive; rw-p is dropped
    assert index.find(0x55D0C0A01FFF) is None  # r--p part of the same file
    assert index.find(0) is None


def test_own_maps_contain_libc_function() -> None:
    libc = ctypes.CDLL(None)
    address = ctypes.cast(libc.getpid, ctypes.c_void_p).value
    assert address is not None

    mapping = MappingIndex(read_maps(os.getpid())).find(address)

    assert mapping is not None
    assert os.path.basename(mapping.path).startswith("libc")
    assert mapping.inode == os.stat(mapping.path).st_ino


def test_vanished_process_raises_process_gone(tmp_path: Path) -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    with pytest.raises(ProcessGone):
        read_maps(pid_max + 1)
    with pytest.raises(LookupError):
        read_maps(1, proc=tmp_path)  # an empty "procfs"
