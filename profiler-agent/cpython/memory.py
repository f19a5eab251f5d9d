"""Bounded reads of another process's memory.

`process_vm_readv(2)` reads without stopping the process (ptrace access: the agent runs
as root, or with CAP_SYS_PTRACE). Every address read comes from that process, so each
read is refused unless it lies wholly inside one readable mapping captured at attach
time, and is at most `MAX_READ` bytes: a garbage pointer costs one refused read, never a
fault, a huge allocation or a read of the agent's own memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import struct
import time
from bisect import bisect_right
from collections.abc import Iterable
from pathlib import Path

from podflame.symbolizer.procmaps import Mapping, parse_line

MAX_READ = 1 << 20
# A process maps memory after it was attached (new heap arenas hold new code objects):
# an address outside the known mappings reads the maps again, at most this often. Short:
# a process is attached at its first sample, before its imports made most of its code
# objects, and one that lives under a second must still be read while it lives.
REFRESH_SECONDS = 0.1


class UnreadableMemory(Exception):
    """An address outside the process's readable mappings, or a read the kernel refused."""


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


@functools.cache
def _readv() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    call = libc.process_vm_readv
    call.restype = ctypes.c_ssize_t
    call.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(_IoVec),
        ctypes.c_ulong,
        ctypes.POINTER(_IoVec),
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    return call


def readable_ranges(pid: int, proc: Path = Path("/proc")) -> list[tuple[int, int]]:
    """(start, end) of the process's readable mappings, sorted (OSError if it is gone)."""
    text = (proc / str(pid) / "maps").read_text(errors="surrogateescape")
    return _readable(parse_line(line) for line in text.splitlines())


def all_mappings(pid: int, proc: Path = Path("/proc")) -> list[Mapping]:
    """Every mapping of the process (not only executable ones), sorted by start."""
    text = (proc / str(pid) / "maps").read_text(errors="surrogateescape")
    parsed = (parse_line(line) for line in text.splitlines())
    return sorted((p[0] for p in parsed if p is not None), key=lambda m: m.start)


def _readable(parsed: Iterable[tuple[Mapping, str] | None]) -> list[tuple[int, int]]:
    return sorted((m.start, m.end) for m, perms in filter(None, parsed) if perms.startswith("r"))


class ProcessMemory:
    """Reads of one process's memory, checked against its readable mappings."""

    def __init__(self, pid: int, ranges: list[tuple[int, int]], proc: Path = Path("/proc")) -> None:
        self.pid = pid
        self.proc = proc
        self._set_ranges(ranges)
        self.bytes_read = 0

    @classmethod
    def attach(cls, pid: int, proc: Path = Path("/proc")) -> ProcessMemory:
        return cls(pid, readable_ranges(pid, proc), proc)

    def _set_ranges(self, ranges: list[tuple[int, int]]) -> None:
        self._ranges = ranges
        self._starts = [start for start, _ in ranges]
        self._refreshed = time.monotonic()

    def _refresh(self) -> bool:
        """Read the mappings again if the last reading is old enough; whether it was."""
        if time.monotonic() - self._refreshed < REFRESH_SECONDS:
            return False
        try:
            self._set_ranges(readable_ranges(self.pid, self.proc))
        except OSError:
            self._refreshed = time.monotonic()
            return False
        return True

    def contains(self, address: int, size: int) -> bool:
        """[address, address + size) lies inside one readable mapping."""
        i = bisect_right(self._starts, address) - 1
        return i >= 0 and address + size <= self._ranges[i][1] and size >= 0

    def read(self, address: int, size: int) -> bytes:
        if not 0 <= size <= MAX_READ:
            raise UnreadableMemory(f"{size} bytes at {address:#x}: over the bound")
        if not self.contains(address, size) and not (
            self._refresh() and self.contains(address, size)
        ):
            raise UnreadableMemory(f"{size} bytes at {address:#x}")
        buffer = ctypes.create_string_buffer(size)
        local = _IoVec(ctypes.cast(buffer, ctypes.c_void_p), size)
        remote = _IoVec(address, size)
        done = _readv()(self.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if done != size:
            error = ctypes.get_errno() if done < 0 else 0
            raise UnreadableMemory(f"{size} bytes at {address:#x}: {os.strerror(error)}")
        self.bytes_read += size
        return buffer.raw

    def pointer(self, address: int) -> int:
        return int(struct.unpack("<Q", self.read(address, 8))[0])

    def u32(self, address: int) -> int:
        return int(struct.unpack("<I", self.read(address, 4))[0])

    def i32(self, address: int) -> int:
        return int(struct.unpack("<i", self.read(address, 4))[0])
