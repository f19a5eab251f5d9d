"""Unwind tables into the CPU sampler's maps (bpf/unwind.h), per captured process.

A process's executable mappings are read from /proc/PID/maps, each mapped file
is opened as the symbolizer opens it (inside the process's root, the inode
checked), and its unwind table (built from .eh_frame, cached by build-id and
content: symbolizer/unwind_tables.py) is written once into the shared row
array. The process then gets its ranges: (start, end, load bias, first row,
row count). All of it on a thread of its own: a big library's table takes
seconds to build the first time, and neither the agent's lock nor the
announcements wait for it.

Which process first: the ones the kernel sampled without tables, most samples
first (the BPF side counts them in `unwind_wanted`), then those whose loading
was cut short, then announced ones, newest first. A process's files are taken
smallest first, and after a slice of building, if other processes wait, what
is built is written and the rest is resumed later. A busy process thus gets
its tables within about one slice and one table build, however many idle or
big processes came before it.

Rows are placed in free extents of the array and never moved. A table is
freed when no process with tables maps it any more: processes that exited or
exec'd are swept every second. When a table of a sampled process does not fit,
processes loaded only because they were announced (and not sampled since)
are unloaded to make room; past that, the table is not loaded (counted) and
its code is walked with frame pointers.
"""

from __future__ import annotations

import bisect
import ctypes
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from podflame.agent.metrics import PREFIX, labelled
from podflame.agent.sampler import CpuSampler, UnwindSizes
from podflame.agent.settings import AgentSettings
from podflame.symbolizer import Symbolizer
from podflame.symbolizer.diskcache import DiskCache
from podflame.symbolizer.elf import LoadSegment
from podflame.symbolizer.procmaps import Mapping, ProcessGone, read_maps
from podflame.symbolizer.unwind_tables import ObjectUnwind, UnwindTables

log = logging.getLogger(__name__)

MAX_RANGES = 32  # UNWIND_RANGES in bpf/unwind.h
MAX_QUEUED = 4096  # processes waiting for their tables; older ones are dropped
WANTED_POLL_SECONDS = 0.2  # how often an idle loader looks at the kernel's wanted counts
SWEEP_SECONDS = 1.0  # how often processes that exited or exec'd are unloaded
# A process's tables are built for this long before the loader looks whether
# others wait; then what is built is written and the rest comes later. (A Python
# process with numpy and BCC maps 80-140 files; its tables took 106-130 s to
# build on a loaded 2-CPU machine, libLLVM alone 32 s.)
SLICE_SECONDS = 2.0
UNWIND_PROCESSES = 4096  # processes with tables in the kernel at once (LRU)
MAX_UNWOUND_STACKS = 4096  # per drain interval; past it, frame-pointer stacks
TABLE_CACHE_BYTES = 128 << 20  # decoded tables kept in the agent's memory
_BATCH_ROWS = 1 << 16

# Opens the file behind one of a process's mappings (the symbolizer's way), or None.
Opener = Callable[[int, Mapping], BinaryIO | None]


@dataclass(frozen=True)
class Range:
    """One executable mapping with a table, as struct unwind_range."""

    start: int
    end: int
    bias: int  # runtime address - link-time address
    first_row: int
    rows: int


@dataclass
class UnwindLoaderStats:
    processes_loaded: int = 0
    processes_gone: int = 0
    tables_placed: int = 0
    tables_not_placed: int = 0  # the row array was full
    ranges_dropped: int = 0  # a process mapped more than MAX_RANGES files with tables
    queue_dropped: int = 0
    processes_wanted: int = 0  # loaded because the kernel sampled them without tables
    processes_unloaded: int = 0  # exited, exec'd or dropped by the kernel's LRU
    processes_evicted: int = 0  # announced-only processes unloaded to make room
    processes_sliced: int = 0  # loading cut short for others waiting, resumed later
    tables_freed: int = 0  # no process with tables mapped them any more


@dataclass
class RowExtents:
    """Free extents of the row array: first fit, freed extents merged with their
    neighbours. Rows are never moved (the kernel may be reading them)."""

    capacity: int
    _free: list[tuple[int, int]] = field(default_factory=list)  # (first, rows), sorted

    def __post_init__(self) -> None:
        self._free = [(0, self.capacity)] if self.capacity > 0 else []

    def take(self, rows: int) -> int | None:
        """The first row of `rows` free rows in a row, now taken; None if none is that long."""
        for index, (first, length) in enumerate(self._free):
            if length >= rows:
                if length == rows:
                    del self._free[index]
                else:
                    self._free[index] = (first + rows, length - rows)
                return first
        return None

    def give_back(self, first: int, rows: int) -> None:
        index = bisect.bisect(self._free, (first, rows))
        self._free.insert(index, (first, rows))
        # Merge with the next extent, then with the previous one.
        if index + 1 < len(self._free) and first + rows == self._free[index + 1][0]:
            rows += self._free.pop(index + 1)[1]
            self._free[index] = (first, rows)
        if index > 0 and sum(self._free[index - 1]) == first:
            before = self._free.pop(index - 1)
            self._free[index - 1] = (before[0], before[1] + rows)

    @property
    def free_rows(self) -> int:
        return sum(length for _, length in self._free)


@dataclass
class _Held:
    """A process with ranges in the kernel: the tables it uses, and why it was loaded."""

    keys: frozenset[str]
    wanted: bool  # sampled without tables (else only announced)


@dataclass
class UnwindLoader:
    """Loads processes' tables into the sampler's maps from a thread of its own."""

    maps: Any  # what `CpuSampler.table` returns by name
    tables: UnwindTables
    opener: Opener
    capacity: int  # rows of the BPF row array
    proc: Path = Path("/proc")
    stats: UnwindLoaderStats = field(default_factory=UnwindLoaderStats)
    _placed: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> first row, rows
    _held: dict[int, _Held] = field(default_factory=dict)  # pid -> its tables, oldest first
    _extents: RowExtents = field(init=False)
    _loading: set[str] = field(default_factory=set)  # tables of the load under way: kept
    _queue: deque[int] = field(default_factory=deque)
    _resume: deque[tuple[int, bool]] = field(default_factory=deque)  # cut short: pid, sampled
    _wake: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _stopping: bool = False
    _swept: float = 0.0

    rows_used: int = 0

    def __post_init__(self) -> None:
        self._extents = RowExtents(self.capacity)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="unwind-tables", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def submit(self, pid: int) -> None:
        """Load `pid`'s tables soon (not the agent's own: it maps LLVM and runs little)."""
        if pid == os.getpid():
            return
        with self._wake:
            if len(self._queue) >= MAX_QUEUED:
                self._queue.popleft()
                self.stats.queue_dropped += 1
            self._queue.append(pid)
            self._wake.notify()

    def has_tables(self, pid: int) -> bool:
        """Whether the kernel side holds ranges for `pid` (it unwinds it with tables)."""
        table = self.maps("unwind_processes")
        return table.Key(pid) in table

    @property
    def processes_held(self) -> int:
        return len(self._held)

    def _run(self) -> None:
        while True:
            wanted = self._most_wanted()
            with self._wake:
                idle = wanted is None and not self._resume and not self._queue
                if idle and not self._stopping:
                    self._wake.wait(WANTED_POLL_SECONDS)
                if self._stopping:
                    return
                # Announced ones newest first: at the start every running process is
                # announced at once, and one new binary's table takes seconds.
                sampled = True
                if wanted is None and self._resume:
                    wanted, sampled = self._resume.popleft()
                elif wanted is None and self._queue:
                    wanted, sampled = self._queue.pop(), False
            try:
                if time.monotonic() - self._swept >= SWEEP_SECONDS:
                    self.sweep()
                if wanted is not None:
                    self.load(wanted, sampled=sampled, slice_seconds=SLICE_SECONDS)
            except Exception:  # one process's files must not stop the loader
                log.exception("unwind tables of pid %s", wanted)

    def _others_wait(self, pid: int) -> bool:
        """Whether the kernel sampled other processes than `pid` (and the agent) without
        tables, or loadings cut short wait."""
        counts = self.maps("unwind_wanted")
        return bool(self._resume) or any(int(key.value) not in (pid, os.getpid()) for key in counts)

    def _most_wanted(self) -> int | None:
        """The process sampled most often without tables (taken off the kernel's counts)."""
        counts = self.maps("unwind_wanted")
        found = sorted(
            ((int(value.value), int(key.value)) for key, value in counts.items()), reverse=True
        )
        own = os.getpid()
        for _, pid in found:
            del counts[counts.Key(pid)]
            if pid != own:
                return pid
        return None

    def load(
        self, pid: int, sampled: bool = False, slice_seconds: float | None = None
    ) -> list[Range]:
        """Place the tables of `pid`'s executable mappings and give the process its ranges.
        `sampled`: the kernel sampled it without tables (it may evict announced ones);
        `slice_seconds`: cut short after that long if others wait (the loader's thread)."""
        try:
            return self._load(pid, sampled, slice_seconds)
        finally:
            self._loading.clear()

    def _load(self, pid: int, sampled: bool, slice_seconds: float | None) -> list[Range]:
        try:
            mappings = read_maps(pid, self.proc)
        except (ProcessGone, OSError):
            self.stats.processes_gone += 1
            return []
        found = self._ranges(pid, mappings, sampled, slice_seconds)
        kept = [pair for pair in found if pair is not None]
        if len(kept) > MAX_RANGES:
            self.stats.ranges_dropped += len(kept) - MAX_RANGES
            kept = sorted(kept, key=lambda pair: -pair[0].rows)[:MAX_RANGES]  # the biggest code
        ranges = sorted((pair[0] for pair in kept), key=lambda r: r.start)  # searched in BPF
        # A forked child announced before its exec() may exec while its files are
        # read (seconds, for a parent that maps big libraries): the ranges then
        # describe the old image and are not written, and the new image is loaded.
        # Tables placed for it and used by no one are freed by the next sweep.
        if self._exec_since(pid, mappings):
            return []
        self._write_process(pid, ranges)
        if self._exec_since(pid, mappings):
            self._unload(pid)  # the exec hook may have run before the ranges were written
            return []
        self._hold(pid, _Held(frozenset(key for _, key in kept), sampled))
        self.stats.processes_loaded += 1
        self.stats.processes_wanted += sampled
        return ranges

    def _ranges(
        self, pid: int, mappings: list[Mapping], sampled: bool, slice_seconds: float | None
    ) -> list[tuple[Range, str] | None]:
        """The ranges of `pid`'s files, smallest first (the program and libc before
        libLLVM); cut short after a slice if other processes wait (resumed later)."""
        files = sorted((m for m in mappings if m.is_file), key=lambda m: m.end - m.start)
        started = time.monotonic()
        found = []
        for index, mapping in enumerate(files):
            found.append(self._range(pid, mapping, sampled))
            late = slice_seconds is not None and time.monotonic() - started > slice_seconds
            if late and index + 1 < len(files) and self._others_wait(pid):
                self._resume.append((pid, sampled))
                self.stats.processes_sliced += 1
                break
        return found

    def _hold(self, pid: int, held: _Held) -> None:
        previous = self._held.pop(pid, None)
        self._held[pid] = held
        if previous is not None:
            self._free_unused(previous.keys - held.keys)

    def sweep(self) -> None:
        """Unload processes that exited, or whose ranges the kernel dropped (exec, LRU)."""
        self._swept = time.monotonic()
        processes = self.maps("unwind_processes")
        for pid in list(self._held):
            if processes.Key(pid) not in processes or not (self.proc / str(pid)).exists():
                self._unload(pid)
                self.stats.processes_unloaded += 1
        self._free_unused(set(self._placed))  # placed for loads that wrote no ranges

    def _unload(self, pid: int) -> None:
        table = self.maps("unwind_processes")
        key = table.Key(pid)
        if key in table:
            del table[key]
        held = self._held.pop(pid, None)
        if held is not None:
            self._free_unused(held.keys)

    def _free_unused(self, keys: set[str] | frozenset[str]) -> None:
        """Free the rows of those of `keys` that no process holds any more."""
        in_use = self._loading.union(*(held.keys for held in self._held.values()))
        for key in keys - in_use:
            placed = self._placed.pop(key, None)
            if placed is not None:
                self._extents.give_back(*placed)
                self.rows_used -= placed[1]
                self.stats.tables_freed += 1

    def _exec_since(self, pid: int, mappings: list[Mapping]) -> bool:
        """Whether `pid` maps other code than `mappings` now; if so, it is loaded again."""
        if _executable(self._maps_now(pid)) == _executable(mappings):
            return False
        self.submit(pid)
        return True

    def _maps_now(self, pid: int) -> list[Mapping]:
        try:
            return read_maps(pid, self.proc)
        except (ProcessGone, OSError):
            return []

    def _range(self, pid: int, mapping: Mapping, sampled: bool) -> tuple[Range, str] | None:
        stream = self.opener(pid, mapping)
        if stream is None:
            return None
        with stream:
            found = self.tables.read(stream)
        if found is None or len(found.table) == 0:
            return None
        bias = _bias(mapping, found.segments)
        placed = self._place(found, sampled)
        if bias is None or placed is None:
            return None
        self._loading.add(found.key)
        return Range(mapping.start, mapping.end, bias, *placed), found.key

    def _place(self, found: ObjectUnwind, sampled: bool) -> tuple[int, int] | None:
        """Where `found`'s rows are in the BPF array, writing them the first time."""
        known = self._placed.get(found.key)
        if known is not None:
            return known
        rows = found.table.rows
        first = self._extents.take(len(rows))
        while first is None and sampled and self._evict_one():
            first = self._extents.take(len(rows))
        if first is None:
            self.stats.tables_not_placed += 1
            return None
        _write_rows(self.maps("unwind_rows"), first, rows)
        self._placed[found.key] = (first, len(rows))
        self.rows_used += len(rows)
        self.stats.tables_placed += 1
        return first, len(rows)

    def _evict_one(self) -> bool:
        """Unload the oldest process loaded only because it was announced; False if none."""
        for pid, held in self._held.items():
            if not held.wanted:
                self._unload(pid)
                self.stats.processes_evicted += 1
                return True
        return False

    def _write_process(self, pid: int, ranges: list[Range]) -> None:
        table = self.maps("unwind_processes")
        leaf = table.Leaf()
        leaf.ranges = len(ranges)
        for slot, found in zip(leaf.range, ranges, strict=False):
            slot.start, slot.end, slot.bias = found.start, found.end, found.bias % (1 << 64)
            slot.first_row, slot.rows = found.first_row, found.rows
        table[table.Key(pid)] = leaf


def _executable(mappings: list[Mapping]) -> list[tuple[int, int, int]]:
    return [(m.start, m.end, m.inode) for m in mappings if m.is_file]


def _bias(mapping: Mapping, segments: tuple[LoadSegment, ...]) -> int | None:
    """Runtime minus link-time address in `mapping`: from the PT_LOAD holding its bytes."""
    length = mapping.end - mapping.start
    for segment in segments:
        if segment.offset < mapping.offset + length and mapping.offset < (
            segment.offset + segment.filesz
        ):
            return mapping.start - mapping.offset + segment.offset - segment.vaddr
    return None


def _write_rows(table: Any, first: int, rows: np.ndarray[Any, Any]) -> None:
    """Rows into the BPF array from index `first`, in batches where the kernel has them."""
    from bcc import lib  # BCC's ctypes library

    for start in range(0, len(rows), _BATCH_ROWS):
        chunk = np.ascontiguousarray(rows[start : start + _BATCH_ROWS])
        keys = np.arange(first + start, first + start + len(chunk), dtype=np.uint32)
        count = ctypes.c_uint32(len(chunk))
        result = lib.bpf_update_batch(
            table.map_fd,
            ctypes.c_void_p(keys.ctypes.data),
            ctypes.c_void_p(chunk.ctypes.data),
            ctypes.byref(count),
        )
        if result != 0:  # kernels before 5.6: one by one
            for index in range(len(chunk)):
                lib.bpf_update_elem(
                    table.map_fd,
                    ctypes.c_void_p(keys[index:].ctypes.data),
                    ctypes.c_void_p(chunk[index:].ctypes.data),
                    0,
                )


def unwind_map_sizes(settings: AgentSettings) -> UnwindSizes:
    """The unwinding maps: rows as set, unwound stacks as many as distinct stacks per drain."""
    cpus = os.cpu_count() or 1
    samples = max(1, int(settings.frequency * settings.interval * cpus))
    stacks = 1 << max(10, min(MAX_UNWOUND_STACKS, 2 * samples).bit_length() - 1)
    return UnwindSizes(rows=settings.unwind_table_rows, processes=UNWIND_PROCESSES, stacks=stacks)


def build_unwinder(
    settings: AgentSettings, sampler: CpuSampler, symbolizer: Symbolizer, sizes: UnwindSizes
) -> UnwindLoader:
    """The loader of a started sampler, its tables cached beside the symbols on disk."""
    cache_dir = settings.symbol_cache_dir
    disk = DiskCache(cache_dir, 1 << 30) if cache_dir is not None else None
    tables = UnwindTables(max_bytes=TABLE_CACHE_BYTES, disk=disk)
    return UnwindLoader(sampler.table, tables, symbolizer.open_mapping, capacity=sizes.rows)


class UnwindCollector(Collector):
    """How user stacks were walked, and the unwind tables' sizes, for /metrics."""

    def __init__(self, sampler: CpuSampler, loader: UnwindLoader) -> None:
        self._sampler, self._loader = sampler, loader

    def collect(self) -> Iterator[Metric]:
        walks = CounterMetricFamily(
            PREFIX + "user_stacks_total",
            "User stacks by how they were walked: with unwind tables, or with frame pointers "
            "because the process has no tables yet, was sampled in the kernel, or the "
            "unwound-stack map was full; truncated: the walk stopped early.",
            labels=["walk"],
        )
        yield labelled(walks, self._sampler.unwind_outcomes())
        sizes = self._sampler.unwind
        for name, text, value in (
            ("unwind_rows", "Unwind table rows loaded.", self._loader.rows_used),
            ("unwind_rows_capacity", "--unwind-table-rows.", self._loader.capacity),
            (
                "unwind_processes",
                "Processes whose tables the kernel holds.",
                self._loader.processes_held,
            ),
            (
                "unwind_maps_bytes",
                "Kernel memory of the unwinding maps (rows, processes, unwound stacks).",
                sizes.nbytes if sizes is not None else 0,
            ),
            (
                "unwind_tables_memory_bytes",
                "Decoded unwind tables held in the agent's memory.",
                self._loader.tables.cached_bytes,
            ),
        ):
            yield GaugeMetricFamily(PREFIX + name, text, value=value)
