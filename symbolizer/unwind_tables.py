"""Unwind tables of ELF files, cached like the symbol tables: in memory and on disk.

A file's table is built from its .eh_frame, with .debug_frame's rows where
.eh_frame has none (cfi.py). It is keyed by build-id and a digest of every
byte it is built from (the section headers, the CFI sections, the notes and
the program headers, read through the same bounds-checked, byte-budgeted
reader as the symbols, elf._Elf): a forged file with libc's build-id gets a
table of its own, while a library shared by a thousand pods is decoded once.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from .cfi import ROW_DTYPE, UnwindTable, decode, merge
from .diskcache import DiskCache, _crc32, _exactly, _touch, _write_atomically
from .elf import ElfError, LoadSegment, _build_id, _Elf, _guarded

# What one file's CFI may cost to read and decode (about 1.5 s per MB): libc's
# .eh_frame is 150 KB, libLLVM's 5 MB; bigger ones (chDB's library) are not
# decoded, their code is walked with frame pointers (counted in `errors`).
MAX_CFI_BYTES = 8 << 20
FORMAT = 1
_SUFFIX = f".v{FORMAT}.unwind.symbols"  # *.symbols: under the symbol cache's size cap
_MAGIC = b"PODFLAME-UNWIND" + struct.pack("<I", FORMAT)
_LENGTH = struct.Struct("<I")
_SHT_NOBITS = 8


@dataclass(frozen=True)
class ObjectUnwind:
    """The unwind table of one ELF file, with what maps its addresses to the file's."""

    key: str
    build_id: str | None
    segments: tuple[LoadSegment, ...]
    table: UnwindTable


@dataclass
class UnwindTableStats:
    built: int = 0  # decoded from CFI
    memory_hits: int = 0
    disk_hits: int = 0
    errors: int = 0  # files that are not ELF, or whose CFI is over the budget
    truncated: int = 0  # tables cut short (hostile or malformed CFI)
    problems: int = 0  # CFI entries dropped
    evicted: int = 0


@dataclass
class UnwindTables:
    """Tables by key, the least recently used past `max_bytes` dropped. Thread-safe."""

    max_bytes: int = 256 << 20
    disk: DiskCache | None = None
    stats: UnwindTableStats = field(default_factory=UnwindTableStats)
    _tables: OrderedDict[str, ObjectUnwind] = field(default_factory=OrderedDict)
    _bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, stream: BinaryIO) -> ObjectUnwind | None:
        """The table of an open ELF file; None if it is not one or has no CFI to read."""
        try:
            sources = _guarded(_read_sources, stream)
        except ElfError:
            with self._lock:
                self.stats.errors += 1
            return None
        key, build_id, segments, cfi = sources
        with self._lock:
            known = self._tables.get(key)
            if known is not None:
                self._tables.move_to_end(key)
                self.stats.memory_hits += 1
                return known
        table = self._from_disk(key) if build_id is not None else None
        if table is None:
            table = _decode(cfi)
            with self._lock:
                self.stats.built += 1
                self.stats.truncated += table.truncated
                self.stats.problems += table.problems
            if build_id is not None and self.disk is not None:
                _store(self.disk, key, table)
        found = ObjectUnwind(key, build_id, segments, table)
        with self._lock:
            self._keep(found)
        return found

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def _from_disk(self, key: str) -> UnwindTable | None:
        if self.disk is None:
            return None
        table = _load(self.disk, key)
        if table is not None:
            with self._lock:
                self.stats.disk_hits += 1
        return table

    def _keep(self, found: ObjectUnwind) -> None:
        previous = self._tables.pop(found.key, None)
        if previous is not None:
            self._bytes -= previous.table.nbytes
        self._tables[found.key] = found
        self._bytes += found.table.nbytes
        while len(self._tables) > 1 and self._bytes > self.max_bytes:
            _, evicted = self._tables.popitem(last=False)
            self._bytes -= evicted.table.nbytes
            self.stats.evicted += 1


# (section bytes, section address, is .debug_frame)
_Cfi = list[tuple[bytes, int, bool]]


def _read_sources(
    stream: BinaryIO,
) -> tuple[str, str | None, tuple[LoadSegment, ...], _Cfi]:
    """Key, build-id, load segments and CFI sections, every byte read hashed."""
    elf = _Elf(stream, hashed=True)
    assert elf.hasher is not None
    if elf.elfclass != 64 or not elf.little_endian or elf.header["e_machine"] != "EM_X86_64":
        raise ElfError("unwind tables are made for x86-64 ELF files only")
    elf.hasher.update(struct.pack("<Q", elf.size))
    build_id = _build_id(elf)
    segments = elf.load_segments()
    cfi: _Cfi = []
    budget = MAX_CFI_BYTES
    for name in (".eh_frame", ".debug_frame"):
        section = next((s for s in elf.sections if s.name == name), None)
        if section is None or section.kind == _SHT_NOBITS or section.size == 0:
            continue
        if section.size > budget:
            raise ElfError(f"{name} of {section.size} bytes is over the budget")
        budget -= section.size
        elf.hasher.update(struct.pack("<QQ", section.addr, len(cfi)))
        cfi.append((elf.read(section.offset, section.size), section.addr, name == ".debug_frame"))
    digest = elf.hasher.hexdigest()[:32]
    return f"{build_id or 'none'}-{digest}", build_id, segments, cfi


def _decode(cfi: _Cfi) -> UnwindTable:
    table = UnwindTable(np.zeros(0, dtype=ROW_DTYPE))
    for data, addr, debug_frame in cfi:
        table = merge(table, decode(data, addr, debug_frame=debug_frame))
    return table


def _store(disk: DiskCache, key: str, table: UnwindTable) -> None:
    path = disk.path(key)
    if path is None or table.nbytes > disk.max_bytes:
        return
    path = path.with_name(path.name.replace(".v2.symbols", _SUFFIX))
    header = json.dumps(
        {"key": key, "rows": len(table), "fdes": table.fdes, "problems": table.problems}
    ).encode()
    header = header[:-1] + b', "truncated": ' + json.dumps(table.truncated).encode() + b"}"
    chunks = [_MAGIC + _LENGTH.pack(len(header)) + header, table.rows.tobytes()]
    chunks.append(_LENGTH.pack(_crc32(chunks)))
    try:
        disk.directory.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, chunks)
    except OSError:
        disk.stats.errors += 1
        return
    disk.stats.writes += 1
    disk._evict(keep=path)


def _load(disk: DiskCache, key: str) -> UnwindTable | None:
    path = disk.path(key)
    if path is None:
        return None
    path = path.with_name(path.name.replace(".v2.symbols", _SUFFIX))
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return None
    with stream:
        try:
            table = _read_file(stream, key)
        except Exception:  # damaged in any way: removed, decoded again
            disk.stats.errors += 1
            with contextlib.suppress(OSError):
                path.unlink()
            return None
    _touch(path)
    return table


def _read_file(stream: BinaryIO, key: str) -> UnwindTable:
    size = os.fstat(stream.fileno()).st_size
    head = _exactly(stream, len(_MAGIC) + _LENGTH.size)
    if head[: len(_MAGIC)] != _MAGIC:
        raise ValueError("not an unwind table file of this format")
    (length,) = _LENGTH.unpack_from(head, len(_MAGIC))
    if length > 1 << 16:
        raise ValueError("header too long")
    header_bytes = _exactly(stream, length)
    header = json.loads(header_bytes)
    rows = int(header["rows"])
    if header["key"] != key or rows < 0:
        raise ValueError("another key, or a bad row count")
    if len(head) + length + rows * ROW_DTYPE.itemsize + _LENGTH.size != size:
        raise ValueError("the file size does not match its header")
    data = _exactly(stream, rows * ROW_DTYPE.itemsize)
    (crc,) = _LENGTH.unpack(_exactly(stream, _LENGTH.size))
    if crc != _crc32([head, header_bytes, data]):
        raise ValueError("checksum mismatch")
    return UnwindTable(
        np.frombuffer(data, ROW_DTYPE).copy(),
        fdes=int(header["fdes"]),
        problems=int(header["problems"]),
        truncated=bool(header["truncated"]),
    )
