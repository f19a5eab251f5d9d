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
the process would see it), never out of it.

Nothing here raises: every problem means "no debug file".
"""

from __future__ import annotations

import os
import posixpath
import stat
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .elf import ElfError, read_named_section
from .files import open_regular

DEBUG_DIR = "/usr/lib/debug"
_MAX_SYMLINKS = 40  # as the kernel allows in one path walk
# A debuglink section holds a file name, padding and a CRC: anything bigger
# is not one, and is not worth reading.
_MAX_DEBUGLINK_SIZE = 4096
_CRC_CHUNK = 1 << 20


def find_debug_file(
    root: Path,
    binary_path: str,
    build_id: str | None,
    debuglink: str | None,
    *,
    debuglink_crc: int | None = None,
) -> Path | None:
    """The separate debug file of the binary at `binary_path` (as seen under `root`).

    Candidates in order: by `build_id` (lowercase hex), then the `debuglink`
    name in the binary's directory, in its ``.debug/`` and under
    ``/usr/lib/debug``. With `debuglink_crc` (from `read_debuglink`), a
    debuglink candidate whose CRC differs is skipped. The result is a path
    on this host (under `root`) to a regular file; None if there is none.
    """
    try:
        for candidate, by_debuglink in _candidates(binary_path, build_id, debuglink):
            found = _regular_file(root, candidate)
            if found is None:
                continue
            if by_debuglink and not _debuglink_acceptable(found, root, binary_path, debuglink_crc):
                continue
            return found
    except (OSError, ValueError):
        pass
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
    """Whether the file at `path` has this CRC32 (as in a debuglink); False on any error."""
    try:
        value = 0
        with open_regular(path) as stream:
            while chunk := stream.read(_CRC_CHUNK):
                value = zlib.crc32(chunk, value)
        return value == crc & 0xFFFFFFFF
    except OSError:
        return False


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


def _debuglink_acceptable(found: Path, root: Path, binary_path: str, crc: int | None) -> bool:
    """Not the binary itself (a debuglink may name its own file), and the right CRC."""
    binary = _regular_file(root, binary_path)
    if binary is not None and os.path.samefile(found, binary):
        return False
    return crc is None or crc_matches(found, crc)


def _regular_file(root: Path, path: str) -> Path | None:
    resolved = _resolve_in_root(root, path)
    if resolved is None:
        return None
    try:
        return resolved if stat.S_ISREG(os.stat(resolved).st_mode) else None
    except (OSError, ValueError):
        return None


def _resolve_in_root(root: Path, path: str) -> Path | None:
    """`path` with every symbolic link followed as if `root` were ``/``.

    The kernel would resolve an absolute link under /proc/PID/root against
    the host's root, so links are followed here one component at a time.
    ``..`` stops at `root`. None if a component is missing or links loop.
    """
    pending = _components(path)
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        current = root.joinpath(*resolved, part)
        try:
            if not stat.S_ISLNK(os.lstat(current).st_mode):
                resolved.append(part)
                continue
            target = os.readlink(current)
        except (OSError, ValueError):
            return None
        links += 1
        if links > _MAX_SYMLINKS:
            return None
        if target.startswith("/"):
            resolved = []
        pending.extend(_components(target))
    return root.joinpath(*resolved)


def _components(path: str) -> list[str]:
    """The parts of `path`, last first (a stack to pop from)."""
    return [p for p in reversed(path.split("/")) if p not in ("", ".")]
