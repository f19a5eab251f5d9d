"""Symbol tables on disk, so that a restarted agent does not parse again.

Keyed as in memory: by build-id and a digest of the bytes the table was built
from (elf.ElfIdentity.key), so that a forged file carrying another's build-id
cannot leave names for the genuine one, not even across a restart. One file
per key holds a table's arrays and its string table as raw
bytes after a small JSON header, and a CRC-32 of everything before it at the
end. Raw rather than .npz: reading back is then one pass over the file with
no copies beyond the arrays themselves, several times faster than parsing.
Only binaries with a build-id are stored: without one, nothing ties a file on
disk to the table, and a stale table names frames wrongly.

The cache is an optimisation and never a reason to fail: every file is
written to a temporary name and renamed into place (a crash leaves no half
file), checked when read back (a damaged or foreign file is removed and
counted, and the binary parsed again), and the directory is kept under a size
cap by removing the least recently used files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import tempfile
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .elf import ElfSymbols, LoadSegment
from .symtab import U64, SymbolTable

# Bumped whenever the layout or the meaning of the contents changes: files of
# another version are simply not found (and age out under the size cap).
# 2: keyed by build-id and content digest; files of 1 (by build-id alone) are
# not trusted.
FORMAT = 2
_SUFFIX = f".v{FORMAT}.symbols"
_MAGIC = b"PODFLAME-SYMBOLS" + struct.pack("<I", FORMAT)
_LENGTH = struct.Struct("<I")
_MAX_HEADER = 1 << 20
_KEY = re.compile(r"(none|[0-9a-f]{2,128})-[0-9a-f]{32}")
_STALE_TMP_SECONDS = 3600  # a temporary file this old was left by a crash


@dataclass
class DiskCacheStats:
    hits: int = 0
    writes: int = 0
    errors: int = 0  # damaged files removed, and failed writes
    evicted: int = 0  # files removed to stay under the size cap


class DiskCache:
    """Symbol tables under `directory`, at most about `max_bytes` in total."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.stats = DiskCacheStats()

    def path(self, key: str) -> Path | None:
        """Where the table of `key` lives; None for a key unfit for a file name."""
        if not _KEY.fullmatch(key):
            return None
        return self.directory / (key + _SUFFIX)

    def load(self, key: str) -> ElfSymbols | None:
        """The stored table of `key`, or None (not stored, or damaged and removed)."""
        path = self.path(key)
        if path is None:
            return None
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError:
            return None  # not stored, or unreachable: the same to us
        with stream:
            try:
                symbols = _read(stream, key)
            except Exception:  # damaged in any way: bad header, wrong size, checksum, ...
                self.stats.errors += 1
                with contextlib.suppress(OSError):
                    path.unlink()
                return None
        _touch(path)  # least recently *used* goes first
        self.stats.hits += 1
        return symbols

    def store(self, key: str, symbols: ElfSymbols) -> bool:
        """Write the table of a binary with a build-id under `key`; True if it was written."""
        path = None if symbols.build_id is None else self.path(key)
        ends = symbols.table.ends  # always there for ELF tables (kallsyms has none)
        if path is None or ends is None or symbols.nbytes > self.max_bytes:
            return False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, _serialize(key, symbols, ends))
        except OSError:
            self.stats.errors += 1
            return False
        self.stats.writes += 1
        self._evict(keep=path)
        return True

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used files until the total fits the cap.

        Files of every format version count, so that old ones age out.
        """
        files = []
        for path in self.directory.glob("*.symbols"):
            try:
                st = path.stat()
            except OSError:
                continue  # removed meanwhile
            files.append((st.st_mtime_ns, st.st_size, path))
        _remove_stale_temporaries(self.directory)
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            if path != keep:
                with contextlib.suppress(OSError):  # gone already, or not ours to remove
                    path.unlink()
                total -= size
                self.stats.evicted += 1


def _serialize(key: str, symbols: ElfSymbols, ends: U64) -> list[bytes]:
    """Magic, header length, JSON header, starts, ends, name offsets, strings, CRC-32."""
    table = symbols.table
    width = table.name_offsets.dtype.itemsize
    header = json.dumps(
        {
            "key": key,
            "build_id": symbols.build_id,
            "source": symbols.source,
            "segments": [[s.offset, s.vaddr, s.filesz] for s in symbols.segments],
            "symbols": len(table),
            "name_offset_bytes": width,
            "strings": len(table.strings),
        }
    ).encode()
    chunks = [
        _MAGIC + _LENGTH.pack(len(header)) + header,
        table.starts.astype("<u8").tobytes(),
        ends.astype("<u8").tobytes(),
        table.name_offsets.astype(f"<u{width}").tobytes(),
        table.strings,
    ]
    return [*chunks, _LENGTH.pack(_crc32(chunks))]


def _read(stream: BinaryIO, key: str) -> ElfSymbols:
    """A table back from its file; raises (anything) if the file is not exactly right."""
    size = os.fstat(stream.fileno()).st_size
    head = _exactly(stream, len(_MAGIC) + _LENGTH.size)
    if head[: len(_MAGIC)] != _MAGIC:
        raise ValueError("not a symbol cache file of this format")
    (header_length,) = _LENGTH.unpack_from(head, len(_MAGIC))
    if header_length > _MAX_HEADER:
        raise ValueError("header too long")
    header_bytes = _exactly(stream, header_length)
    header = json.loads(header_bytes)
    if header["key"] != key:
        raise ValueError("the file holds another key")
    count, width, strings_length = header["symbols"], header["name_offset_bytes"], header["strings"]
    if width not in (4, 8) or min(count, strings_length) < 0:
        raise ValueError("bad sizes in the header")
    arrays_length = count * (16 + width)
    if len(head) + header_length + arrays_length + strings_length + _LENGTH.size != size:
        raise ValueError("the file size does not match its header")
    arrays = _exactly(stream, arrays_length)
    strings = _exactly(stream, strings_length)
    (crc,) = _LENGTH.unpack(_exactly(stream, _LENGTH.size))
    if crc != _crc32([head, header_bytes, arrays, strings]):
        raise ValueError("checksum mismatch")
    # astype copies out of `arrays`, which can then be freed.
    starts = np.frombuffer(arrays, "<u8", count, 0).astype(np.uint64)
    ends = np.frombuffer(arrays, "<u8", count, 8 * count).astype(np.uint64)
    offsets = np.frombuffer(arrays, f"<u{width}", count, 16 * count)
    names = offsets.astype(np.uint32 if width == 4 else np.uint64)
    return ElfSymbols(
        build_id=str(header["build_id"]),
        segments=tuple(LoadSegment(int(o), int(v), int(f)) for o, v, f in header["segments"]),
        table=SymbolTable.checked(starts, ends, names, strings),
        source=str(header["source"]),
    )


def _exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError("truncated")
    return data


def _crc32(chunks: Iterable[bytes]) -> int:
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
    return crc


def _write_atomically(path: Path, chunks: list[bytes]) -> None:
    """Write to a temporary file in the same directory, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_stale_temporaries(directory: Path) -> None:
    """Temporary files of writes that never finished (the agent was killed)."""
    limit = time.time() - _STALE_TMP_SECONDS
    for path in directory.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < limit:
                path.unlink()


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):  # removed meanwhile: no matter
        os.utime(path)
