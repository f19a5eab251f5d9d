"""The executable mappings of a process, parsed from /proc/PID/maps.

Only executable mappings matter to a profiler: a sampled instruction pointer
(or return address) always lies in code. Keeping the rest out makes the lookup
table small and avoids attributing a frame to a data mapping of the same file.
"""

from __future__ import annotations

import errno
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

_DELETED = " (deleted)"


class ProcessGone(LookupError):
    """The process exited (or never existed) before its maps could be read.

    Raised by `read_maps` instead of a bare `FileNotFoundError` so callers can
    tell "this pid is gone, drop its frames" apart from real I/O problems such
    as a missing permission, which still surface as `OSError`.
    """


@dataclass(frozen=True, slots=True)
class Mapping:
    """One line of /proc/PID/maps.

    `path` is what the kernel shows: an absolute path as seen from the
    process's own mount namespace, a pseudo name such as ``[vdso]``, or ``""``
    for anonymous memory (JIT code, for instance). A " (deleted)" suffix is
    stripped from `path` and recorded in `deleted`.
    """

    start: int
    end: int
    offset: int
    dev_major: int
    dev_minor: int
    inode: int
    path: str
    deleted: bool = False

    @property
    def is_file(self) -> bool:
        """Backed by a regular file (inode 0 means anonymous or pseudo memory)."""
        return self.inode != 0 and self.path.startswith("/")

    @property
    def is_pseudo(self) -> bool:
        """A kernel-provided region such as ``[vdso]`` or ``[vsyscall]``."""
        return self.path.startswith("[") and self.path.endswith("]")

    def file_offset(self, address: int) -> int:
        """The offset in the mapped file of the byte at `address`."""
        return address - self.start + self.offset


def parse_line(line: str) -> tuple[Mapping, str] | None:
    """Parse one maps line into (mapping, permissions); None if malformed.

    The path is the sixth field and may itself contain spaces, hence the
    bounded split.
    """
    fields = line.split(None, 5)
    if len(fields) < 5:
        return None
    path = fields[5] if len(fields) == 6 else ""
    if "\0" in path:  # no file name holds one: not a line the kernel wrote
        return None
    deleted = path.endswith(_DELETED)
    if deleted:
        path = path[: -len(_DELETED)]
    try:
        start_text, end_text = fields[0].split("-", 1)
        major_text, minor_text = fields[3].split(":", 1)
        mapping = Mapping(
            start=int(start_text, 16),
            end=int(end_text, 16),
            offset=int(fields[2], 16),
            dev_major=int(major_text, 16),
            dev_minor=int(minor_text, 16),
            inode=int(fields[4]),
            path=path,
            deleted=deleted,
        )
    except ValueError:
        return None
    return mapping, fields[1]


def parse_maps(text: str) -> list[Mapping]:
    """The executable mappings in the text of a maps file, sorted by start."""
    mappings: list[Mapping] = []
    for line in text.splitlines():
        parsed = parse_line(line)
        if parsed is not None and "x" in parsed[1]:
            mappings.append(parsed[0])
    mappings.sort(key=lambda m: m.start)
    return mappings


def read_maps(pid: int, proc: Path = Path("/proc")) -> list[Mapping]:
    """The executable mappings of `pid`, sorted by start address.

    Raises `ProcessGone` if the process does not exist (any more). A zombie or
    a kernel thread has an empty maps file and yields an empty list. Other
    `OSError`s (such as `PermissionError`) propagate unchanged.
    """
    try:
        text = (proc / str(pid) / "maps").read_text(errors="surrogateescape")
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            raise ProcessGone(pid) from exc
        raise
    return parse_maps(text)


class MappingIndex:
    """Finds the mapping that contains an address (binary search on starts)."""

    def __init__(self, mappings: list[Mapping]) -> None:
        self.mappings = sorted(mappings, key=lambda m: m.start)
        self._starts = [m.start for m in self.mappings]

    def find(self, address: int) -> Mapping | None:
        """The mapping containing `address`, or None if there is none."""
        i = bisect_right(self._starts, address) - 1
        if i >= 0 and address < self.mappings[i].end:
            return self.mappings[i]
        return None

    def __len__(self) -> int:
        return len(self.mappings)
