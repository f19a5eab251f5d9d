"""Unwind tables into the CPU sampler's maps (bpf/unwind.h), per captured process.

When a process is announced, its executable mappings are read from
/proc/PID/maps, each mapped file is opened as the symbolizer opens it (inside
the process's root, the inode checked), and its unwind table (built from
.eh_frame, cached by build-id and content: symbolizer/unwind_tables.py) is
written once into the shared row array. The process then gets its ranges:
(start, end, load bias, first row, row count). All of it on a thread of its
own: a big library's table takes seconds to build the first time, and neither
the agent's lock nor the announcements wait for it.

Rows are placed one after another and never moved; when the array is full,
further tables are not loaded (counted) and their code is walked with frame
pointers. A table shared by many processes is placed once.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
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
    _queue: deque[int] = field(default_factory=deque)
    _wake: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _stopping: bool = False

    rows_used: int = 0

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

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                # Newest first: at the start every running process is announced at
                # once, and one new binary's table takes seconds; a process started
                # since should not wait behind all of them.
                pid = self._queue.pop()
            try:
                self.load(pid)
            except Exception:  # one process's files must not stop the loader
                log.exception("unwind tables of pid %d", pid)

    def load(self, pid: int) -> list[Range]:
        """Place the tables of `pid`'s executable mappings and give the process its ranges."""
        try:
            mappings = read_maps(pid, self.proc)
        except (ProcessGone, OSError):
            self.stats.processes_gone += 1
            return []
        ranges = []
        for mapping in mappings:
            if not mapping.is_file:
                continue
            found = self._range(pid, mapping)
            if found is not None:
                ranges.append(found)
        if len(ranges) > MAX_RANGES:
            self.stats.ranges_dropped += len(ranges) - MAX_RANGES
            ranges = sorted(ranges, key=lambda r: -r.rows)[:MAX_RANGES]  # the biggest code
        ranges.sort(key=lambda r: r.start)  # the BPF side searches them
        # A forked child announced before its exec() may exec while its files are
        # read (seconds, for a parent that maps big libraries): the ranges then
        # describe the old image and are not written, and the new image is loaded.
        if self._exec_since(pid, mappings):
            return []
        self._write_process(pid, ranges)
        if self._exec_since(pid, mappings):
            self._forget(pid)  # the exec hook may have run before the ranges were written
            return []
        self.stats.processes_loaded += 1
        return ranges

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

    def _forget(self, pid: int) -> None:
        table = self.maps("unwind_processes")
        key = table.Key(pid)
        if key in table:
            del table[key]

    def _range(self, pid: int, mapping: Mapping) -> Range | None:
        stream = self.opener(pid, mapping)
        if stream is None:
            return None
        with stream:
            found = self.tables.read(stream)
        if found is None or len(found.table) == 0:
            return None
        bias = _bias(mapping, found.segments)
        placed = self._place(found)
        if bias is None or placed is None:
            return None
        return Range(mapping.start, mapping.end, bias, *placed)

    def _place(self, found: ObjectUnwind) -> tuple[int, int] | None:
        """Where `found`'s rows are in the BPF array, writing them the first time."""
        known = self._placed.get(found.key)
        if known is not None:
            return known
        rows = found.table.rows
        first = self.rows_used
        if first + len(rows) > self.capacity:
            self.stats.tables_not_placed += 1
            return None
        _write_rows(self.maps("unwind_rows"), first, rows)
        self._placed[found.key] = (first, len(rows))
        self.rows_used += len(rows)
        self.stats.tables_placed += 1
        return first, len(rows)

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
