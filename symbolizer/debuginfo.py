"""Separate debug files: the full symbol table of a stripped binary.

Distributions strip binaries and ship their symbols apart (Debian's -dbgsym,
Fedora's -debuginfo packages), and builds do the same with
``objcopy --only-keep-debug``. The debug file is found like gdb finds it:
first by build-id, ``/usr/lib/debug/.build-id/ab/cdef....debug``, then by
the name in the binary's ``.gnu_debuglink`` section, next to the binary, in
its ``.debug/`` subdirectory, or under ``/usr/lib/debug`` + its directory.
A debuglink also carries the CRC32 of the debug file, which tells a file of
another build of the binary apart.

Lookups happen under a root: ``/proc/PID/root`` for a process, so that a
container's own files are read, or ``/`` for the host. Symbolic links are
followed inside that root (an absolute target is taken relative to it, as
the process would see it), never out of it (files.open_in_root).

Nothing here raises: every problem means "no debug file".
"""

from __future__ import annotations

import os
import posixpath
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .elf import ElfError, read_named_section
from .files import open_in_root, open_regular

DEBUG_DIR = "/usr/lib/debug"
# A debuglink candidate is CRC-checked by reading all of it: one larger is
# not used (a sparse file could claim terabytes). Debug files of big
# libraries (libLLVM's is near 1 GiB with DWARF) are then found by build-id.
MAX_CRC_BYTES = 256 << 20
# A debuglink section holds a file name, padding and a CRC: anything bigger
# is not one, and is not worth reading.
_MAX_DEBUGLINK_SIZE = 4096
_CRC_CHUNK = 1 << 20


@dataclass
class DebugFileStats:
    """What the lookups refused (the symbolizer exports it)."""

    # Debuglink candidates larger than the CRC cap: not checked, so not used.
    too_big_to_check: int = 0


def open_debug_file(
    root: Path,
    binary_path: str,
    build_id: str | None,
    debuglink: str | None,
    *,
    debuglink_crc: int | None = None,
    binary: tuple[int, int] | None = None,
    stats: DebugFileStats | None = None,
) -> BinaryIO | None:
    """The separate debug file of the binary at `binary_path` (as seen under `root`), open.

    Candidates in order: by `build_id` (lowercase hex), then the `debuglink`
    name in the binary's directory, in its ``.debug/`` and under
    ``/usr/lib/debug``. With `debuglink_crc` (from `read_debuglink`), a
    debuglink candidate whose CRC differs, or that is too big to check, is
    skipped; so is the binary itself, `binary` being its (st_dev, st_ino)
    (looked up when not given). Every candidate is opened with links resolved
    inside `root` (`open_in_root`). None if there is none.
    """
    for candidate, by_debuglink in _candidates(binary_path, build_id, debuglink):
        try:
            stream = open_in_root(root, candidate)
        except (OSError, ValueError):
            continue
        if not by_debuglink:
            return stream
        if binary is None:
            binary = _identity(root, binary_path)
        if _debuglink_acceptable(stream, binary, debuglink_crc, stats):
            stream.seek(0)
            return stream
        stream.close()
    return None


def read_debuglink(stream: BinaryIO) -> tuple[str, int] | None:
    """(file name, CRC32) from an ELF file's ``.gnu_debuglink`` section; None if absent.

    The section is the NUL-terminated name, padding to a multiple of 4, and
    the CRC32 of the debug file in the ELF file's byte order.
    """
    try:
        found = read_named_section(stream, ".gnu_debuglink", _MAX_DEBUGLINK_SIZE)
    except ElfError:
        return None
    if found is None:
        return None
    data, little_endian = found
    return _parse_debuglink(data, "<" if little_endian else ">")


def crc_matches(path: Path, crc: int) -> bool:
    """Whether the file at `path` has this CRC32 (as in a debuglink); False on any error,
    and for a file of more than MAX_CRC_BYTES."""
    try:
        with open_regular(path) as stream:
            return _crc_of(stream) == crc & 0xFFFFFFFF
    except OSError:
        return False


def _crc_of(stream: BinaryIO) -> int | None:
    """CRC32 of the whole file, or None past MAX_CRC_BYTES (bytes read, not st_size:
    a sparse file may claim anything). Raises OSError."""
    value, length = 0, 0
    while chunk := stream.read(min(_CRC_CHUNK, MAX_CRC_BYTES + 1 - length)):
        value = zlib.crc32(chunk, value)
        length += len(chunk)
        if length > MAX_CRC_BYTES:
            return None
    return value


def _parse_debuglink(data: bytes, order: str) -> tuple[str, int] | None:
    end = data.find(b"\0")
    if end <= 0:
        return None
    crc_offset = (end + 1 + 3) // 4 * 4
    if crc_offset + 4 > len(data):
        return None
    name = data[:end].decode("utf-8", "surrogateescape")
    if not _is_plain_name(name):
        return None
    (crc,) = struct.unpack_from(order + "I", data, crc_offset)
    return name, crc


def _is_plain_name(name: str) -> bool:
    """A bare file name: a debuglink naming a path could reach anywhere."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _candidates(
    binary_path: str, build_id: str | None, debuglink: str | None
) -> Iterator[tuple[str, bool]]:
    """(path as the process sees it, found by debuglink?) in gdb's order."""
    if build_id and len(build_id) > 2 and _is_hex(build_id):
        build_id = build_id.lower()
        yield f"{DEBUG_DIR}/.build-id/{build_id[:2]}/{build_id[2:]}.debug", False
    if debuglink and _is_plain_name(debuglink):
        directory = posixpath.dirname(posixpath.join("/", binary_path))
        yield posixpath.join(directory, debuglink), True
        yield posixpath.join(directory, ".debug", debuglink), True
        yield DEBUG_DIR + posixpath.join(directory, debuglink), True


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _debuglink_acceptable(
    stream: BinaryIO,
    binary: tuple[int, int] | None,
    crc: int | None,
    stats: DebugFileStats | None,
) -> bool:
    """Not the binary itself (a debuglink may name its own file), and the right CRC."""
    try:
        st = os.fstat(stream.fileno())
        if binary == (st.st_dev, st.st_ino):
            return False
        if crc is None:
            return True
        value = _crc_of(stream)
    except OSError:
        return False
    if value is None and stats is not None:
        stats.too_big_to_check += 1
    return value == crc & 0xFFFFFFFF


def _identity(root: Path, path: str) -> tuple[int, int] | None:
    try:
        with open_in_root(root, path) as stream:
            st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino
