"""JIT code: names from perf map files.

A JIT (Node.js with ``--perf-basic-prof``, Java with perf-map-agent, Python
3.12+ with ``-X perf``) appends one line per compiled function to
``/tmp/perf-<pid>.map``: ``START SIZE name``, hex start and size, the name
running to the end of the line. The file lives in the process's own mount
namespace and carries the pid as the process sees it in its own PID
namespace, so it is read as ``/proc/PID/root/tmp/perf-<NSpid>.map``.

A JIT may reuse an address range for new code (after a GC moves or frees the
old), so where entries overlap the later one wins, as in perf.
"""

from __future__ import annotations

import heapq
import os
import threading
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO

from .files import open_in_root
from .text import decode

_U64 = 1 << 64
MiB = 1 << 20
_CHUNK = 1 * MiB  # read and parsed at a time

# (start, end, name) of one map line.
_Entry = tuple[int, int, str]


def namespaced_pid(pid: int, proc: Path = Path("/proc")) -> int | None:
    """`pid` as its own (innermost) PID namespace numbers it; None if unreadable.

    The last field of the ``NSpid:`` line in /proc/PID/status. Kernels before
    4.1 have no such line: then `pid` itself is the best guess.
    """
    try:
        text = decode((proc / str(pid) / "status").read_bytes())
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("NSpid:"):
            fields = line.split()[1:]
            try:
                return int(fields[-1]) if fields else None
            except ValueError:
                return None
    return pid


def start_time(pid: int, proc: Path = Path("/proc")) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot); None if unreadable.

    Together with the pid it names a process for good: a reused pid comes
    with a later start time.
    """
    try:
        text = (proc / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold
    # spaces and parentheses: count fields from the last ")".
    fields = text[text.rfind(b")") + 1 :].split()
    try:
        return int(fields[22 - 3])
    except (IndexError, ValueError):
        return None


class PerfMap:
    """The functions of one perf map, as disjoint ranges sorted by start.

    Build with `parse`; `updated` applies lines appended since.
    """

    def __init__(self, starts: array[int], ends: array[int], names: list[str]) -> None:
        self._starts = starts
        self._ends = ends
        self._names = names
        self.malformed = 0  # lines skipped because they did not parse

    @classmethod
    def parse(cls, data: bytes) -> PerfMap:
        """A map from the bytes of a perf map file; bad lines are skipped and counted."""
        return cls.empty().updated(data)

    @classmethod
    def empty(cls) -> PerfMap:
        return cls(array("Q"), array("Q"), [])

    def updated(self, data: bytes) -> PerfMap:
        """A new map: this one with the lines in `data` laid over it (later lines win).

        Costs a parse of `data` plus one pass over this map's arrays (slice
        copies), so appending a few lines to a big map stays cheap.
        """
        entries, malformed = _parse_lines(data)
        result = PerfMap(*_overlay(self._starts, self._ends, self._names, entries))
        result.malformed = self.malformed + malformed
        return result

    def lookup(self, address: int) -> str | None:
        """The function whose range [start, start+size) holds `address`, or None."""
        i = bisect_right(self._starts, address) - 1
        if i >= 0 and address < self._ends[i]:
            return self._names[i]
        return None

    def __len__(self) -> int:
        return len(self._names)


def _parse_lines(data: bytes) -> tuple[list[_Entry], int]:
    """The (start, end, name) entries of perf map lines, and how many lines were bad."""
    entries: list[_Entry] = []
    malformed = 0
    for line in data.splitlines():
        entry = _parse_line(line)
        if entry is None:
            if line.strip():  # blank lines are not worth counting
                malformed += 1
        elif entry[1] > entry[0]:  # zero-sized: holds no address, but is not wrong
            entries.append(entry)
    return entries, malformed


def _parse_line(line: bytes) -> _Entry | None:
    """``START SIZE name`` (hex, hex, the rest); perf also accepts a 0x prefix."""
    fields = line.split(b" ", 2)
    if len(fields) != 3 or not fields[2].strip():
        return None
    try:
        start, size = int(fields[0], 16), int(fields[1], 16)
    except ValueError:
        return None
    if start < 0 or size < 0 or start + size > _U64:
        return None
    return start, start + size, decode(fields[2].rstrip(b"\r"))


def _resolve_overlaps(entries: list[_Entry]) -> Iterable[_Entry]:
    """Disjoint ranges, sorted, where each address keeps the last entry covering it.

    The usual map has no overlaps, and that case is a sort and one pass.
    Otherwise a sweep over the range boundaries, with a heap of the entries
    open at each point ordered by line number (latest on top).
    """
    order = sorted(range(len(entries)), key=lambda i: entries[i][0])
    if all(entries[a][1] <= entries[b][0] for a, b in pairwise(order)):
        return [entries[i] for i in order]
    return _sweep(entries, order)


def _sweep(entries: list[_Entry], order: list[int]) -> Iterable[_Entry]:
    boundaries = sorted({e[0] for e in entries} | {e[1] for e in entries})
    open_entries: list[tuple[int, int]] = []  # (-line, end)
    next_entry = 0
    for low, high in pairwise(boundaries):
        while next_entry < len(order) and entries[order[next_entry]][0] <= low:
            index = order[next_entry]
            heapq.heappush(open_entries, (-index, entries[index][1]))
            next_entry += 1
        while open_entries and open_entries[0][1] <= low:
            heapq.heappop(open_entries)  # ended before this range
        if open_entries:
            yield low, high, entries[-open_entries[0][0]][2]


class _Builder:
    """Parallel arrays being built; touching pieces of one name are joined."""

    def __init__(self) -> None:
        self.starts: array[int] = array("Q")
        self.ends: array[int] = array("Q")
        self.names: list[str] = []

    def add(self, start: int, end: int, name: str) -> None:
        if self.names and self.ends[-1] == start and self.names[-1] == name:
            self.ends[-1] = end
        elif end > start:
            self.starts.append(start)
            self.ends.append(end)
            self.names.append(name)

    def add_slice(self, starts: array[int], ends: array[int], names: list[str]) -> None:
        self.starts.extend(starts)
        self.ends.extend(ends)
        self.names.extend(names)

    def result(self) -> tuple[array[int], array[int], list[str]]:
        return self.starts, self.ends, self.names


def _overlay(
    starts: array[int], ends: array[int], names: list[str], entries: list[_Entry]
) -> tuple[array[int], array[int], list[str]]:
    """The disjoint ranges (starts, ends, names) with `entries` laid on top.

    Old ranges that a new one overlaps are cut back or dropped; the ones in
    between are copied a slice at a time.
    """
    out = _Builder()
    i = 0  # the first old range not yet copied
    head: int | None = None  # where old range i now starts, if a new range cut its front
    for start, end, name in _resolve_overlaps(entries):
        j = bisect_right(ends, start, i)  # old ranges i..j-1 end before `start`
        if j > i:
            out.add(starts[i] if head is None else head, ends[i], names[i])
            out.add_slice(starts[i + 1 : j], ends[i + 1 : j], names[i + 1 : j])
            i, head = j, None
        if i < len(names):
            old_start = starts[i] if head is None else head
            if old_start < start:
                out.add(old_start, start, names[i])  # the part before the new range
        out.add(start, end, name)
        i, head = bisect_right(ends, end, i), None  # skip the ranges it covers
        if i < len(names) and starts[i] < end:
            head = end  # the part after the new range remains
    if i < len(names):
        out.add(starts[i] if head is None else head, ends[i], names[i])
        out.add_slice(starts[i + 1 :], ends[i + 1 :], names[i + 1 :])
    return out.result()


@dataclass
class _Cached:
    """What `PerfMaps` holds for one process."""

    start_time: int
    nspid: int
    perf_map: PerfMap
    # (st_dev, st_ino, st_size, st_mtime_ns) of the file last read; None: no file.
    file_key: tuple[int, int, int, int] | None = None
    consumed: int = 0  # bytes parsed so far: up to the last complete line
    truncated: bool = False  # the read stopped at the per-file cap


@dataclass
class PerfMapStats:
    """Counters since the PerfMaps was created (the symbolizer exports them)."""

    # Files read up to the per-file cap and no further (counted once per file).
    truncated: int = 0
    # Maps dropped to keep the total of bytes read under the cap.
    evicted_for_bytes: int = 0


class PerfMaps:
    """Perf maps of many processes, re-read only when their file changes.

    Keyed by pid and start time, so a reused pid never gets the names of the
    process that had it before. Bounded by what was read, not by what the
    files claim: at most `max_bytes` of one file are parsed (the rest is
    ignored and counted), a chunk at a time, and the maps held come from at
    most `max_total_bytes` of files in all (least recently used out), as
    they are at most `max_processes` maps. A map's memory is about 1.8 times
    the bytes it was parsed from (8 MiB: some 110,000 JIT functions).

    Thread-safe, and no lock is held across a file read: two threads reading one
    process's map read it twice, and the later result is kept.
    """

    def __init__(
        self,
        *,
        max_processes: int = 256,
        max_bytes: int = 8 * MiB,
        max_total_bytes: int = 32 * MiB,
    ) -> None:
        if max_processes < 1:
            raise ValueError("max_processes must be at least 1")
        self._max_processes = max_processes
        self._max_bytes = max_bytes
        self._max_total_bytes = max_total_bytes
        self._cache: OrderedDict[int, _Cached] = OrderedDict()
        self._lock = threading.Lock()  # _cache and stats, never across a read
        self.stats = PerfMapStats()

    def lookup(
        self, pid: int, addresses: Sequence[int], proc: Path = Path("/proc")
    ) -> list[str | None]:
        """JIT function names of `addresses` in process `pid`; None where there is none.

        All None when the process is gone or has no perf map. Never raises.
        """
        cached = self._refreshed(pid, proc)
        if cached is None:
            return [None] * len(addresses)
        return [cached.perf_map.lookup(address) for address in addresses]

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def total_bytes(self) -> int:
        """Bytes of perf map files behind the maps held."""
        return sum(cached.consumed for cached in self._cache.values())

    def get(
        self, pid: int, proc: Path = Path("/proc"), *, started: int | None = None
    ) -> PerfMap | None:
        """The current map of `pid` (None: process gone, or `started` given and the pid
        names another process now), read or refreshed as needed."""
        cached = self._refreshed(pid, proc, started)
        return cached.perf_map if cached is not None else None

    def forget(self, pid: int) -> None:
        """Drop what is held for `pid` (call when the process exits)."""
        with self._lock:
            self._cache.pop(pid, None)

    def _refreshed(self, pid: int, proc: Path, expected: int | None = None) -> _Cached | None:
        """The entry of `pid` brought up to date: the file is read into a copy, with no
        lock held (a slow file holds up only its reader), and the copy published."""
        started = start_time(pid, proc)
        if started is None or (expected is not None and started != expected):
            if started is None:
                self.forget(pid)
            return None
        with self._lock:
            known = self._cache.get(pid)
        if known is not None and known.start_time == started:
            cached = replace(known)
        else:
            nspid = namespaced_pid(pid, proc)
            if nspid is None:
                self.forget(pid)
                return None
            cached = _Cached(started, nspid, PerfMap.empty())
        was_truncated = cached.truncated
        _refresh(cached, proc / str(pid) / "root", f"/tmp/perf-{cached.nspid}.map", self._max_bytes)
        with self._lock:
            self.stats.truncated += cached.truncated and not was_truncated
            self._cache[pid] = cached
            self._cache.move_to_end(pid)
            self._evict()
        return cached

    def _evict(self) -> None:
        """Least recently used out past the count cap and the byte cap (never the latest)."""
        while len(self._cache) > self._max_processes:
            self._cache.popitem(last=False)
        total = self.total_bytes
        while len(self._cache) > 1 and total > self._max_total_bytes:
            _, evicted = self._cache.popitem(last=False)
            total -= evicted.consumed
            self.stats.evicted_for_bytes += 1


def _refresh(cached: _Cached, root: Path, path: str, max_bytes: int) -> None:
    """Bring `cached` up to date with the file at `path` under `root`; no file means an
    empty map."""
    try:
        _read_changes(cached, root, path, max_bytes)
    except OSError:
        # Only a file that went away is forgotten: while there is none, the map
        # stays the same object, so callers can tell that nothing changed.
        if cached.file_key is not None:
            cached.perf_map, cached.file_key, cached.consumed = PerfMap.empty(), None, 0
            cached.truncated = False


def _read_changes(cached: _Cached, root: Path, path: str, max_bytes: int) -> None:
    """Read what changed since the last call.

    A file that only grew (same inode, not shorter) is read from where the
    last read stopped, which is how JITs write these files; any other change
    means a full read. The file is the process's, opened inside its root: a
    symbolic link (/tmp itself, say) could otherwise lead to one of the
    host's files, and a FIFO would block the read.
    """
    with open_in_root(root, path) as stream:
        info = os.fstat(stream.fileno())
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if key == cached.file_key:
            return
        old = cached.file_key
        grew = old is not None and old[:2] == key[:2] and info.st_size >= cached.consumed
        if not grew:
            cached.perf_map, cached.consumed, cached.truncated = PerfMap.empty(), 0, False
        stream.seek(cached.consumed)
        _read_lines(cached, stream, max_bytes)
    cached.file_key = key


def _read_lines(cached: _Cached, stream: BinaryIO, max_bytes: int) -> None:
    """Parse complete lines from the stream's position, a chunk at a time, up to
    `max_bytes` of the file in all: memory stays the map plus one chunk."""
    pending = b""  # the start of a line that continues in the next chunk
    while cached.consumed + len(pending) < max_bytes:
        room = max_bytes - cached.consumed - len(pending)
        chunk = stream.read(min(_CHUNK, room))
        if not chunk:
            return  # a line still being written is left for the next read
        data = pending + chunk
        end = data.rfind(b"\n") + 1
        complete, pending = data[:end], data[end:]
        if complete:
            cached.perf_map = cached.perf_map.updated(complete)
            cached.consumed += len(complete)
        elif len(pending) > _CHUNK:
            break  # no perf map line is this long: not worth joining more chunks to
    cached.truncated = True
