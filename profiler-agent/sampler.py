"""Loads the CPU sampling BPF program and drains its double-buffered maps.

The kernel side (bpf/cpu_profile.bpf.c) counts samples per (process, user
stack, kernel stack) into the active slot. A drain flips the slot, waits for
programs that already read the old slot to finish, then reads and clears the
old slot's maps: nothing is lost or counted twice at the boundary.
"""

import ctypes
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from podflame.agent.bpfmaps import (
    DropCounters,
    call_sites,
    clear_stack_map,
    read_and_clear,
    read_and_clear_counts,
    stack_call_sites,
)
from podflame.agent.cpython.bpfmaps import (
    NativeKey,
    NewPythonStack,
    PyOffsets,
    PythonSample,
    PythonStack,
    native_key,
    read_new_python_stack,
    read_python_slot,
)
from podflame.agent.programs import DoubleBuffered, ProcessGeneration, Program, Programs
from podflame.symbolizer.text import decode

log = logging.getLogger(__name__)

BPF_SOURCE = "cpu_profile.bpf.c"


# Must match enum drop_reason in the BPF program (a drain adds the programs'
# announcements lost, "new_process").
DROP_REASONS = ("user_stack", "kernel_stack", "count_map", "overflow")

MAX_STACK_DEPTH = 127  # as in the BPF program

# Must match py_error()'s reasons in the BPF program (cpu_profile.bpf.c): a sampled thread
# of a Python process with no thread state (it never ran Python, or is not in the list
# yet), a walk cut by its bound or by memory that was not a frame, the count map full.
PY_WALK_ERRORS = ("no_thread_state", "stack_cut", "count_map_full", "announce_ring_full")
# New Python stacks received, waiting for the announcement loop to name their code objects
# (`take_python_stacks`); past this many the oldest go (named at the drain, if still alive).
MAX_NEW_PYTHON_STACKS = 4096


class _OverflowSample(ctypes.Structure):
    """struct overflow_sample in the BPF program: one sample whose stack collided."""

    _fields_ = [
        ("pid", ctypes.c_uint32),
        ("generation", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16),
        ("user_bytes", ctypes.c_int32),
        ("kernel_bytes", ctypes.c_int32),
        ("user", ctypes.c_uint64 * MAX_STACK_DEPTH),
        ("kernel", ctypes.c_uint64 * MAX_STACK_DEPTH),
    ]


@dataclass(frozen=True)
class SampleCount:
    """Samples of one process with one pair of stacks.

    Stacks are leaf first, as call sites (see `bpfmaps.call_sites`), ready to look up.
    """

    process: ProcessGeneration
    comm: str
    user_stack: tuple[int, ...]
    kernel_stack: tuple[int, ...]
    count: int
    # The Python frames these samples ran, for a process whose CPython the BPF program
    # walks (`CpuSampler.watch_python`): the batch puts them in the native stack.
    python: PythonStack | None = None


@dataclass
class Drain:
    """Everything the kernel counted during one interval."""

    start_ns: int
    end_ns: int
    samples: list[SampleCount] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)
    overflowed: int = 0  # samples among `samples` whose stacks collided in the stack map
    # How many of a native sample's count ran which Python stack (bpf/cpython.h), for
    # the processes registered with `CpuSampler.watch_python`; `samples` holds them too,
    # each native count split by the Python stacks it ran (`with_python`).
    python: list[PythonSample] = field(default_factory=list)

    @property
    def total_samples(self) -> int:
        return sum(s.count for s in self.samples)


@dataclass(frozen=True)
class MapSizes:
    stack_entries: int
    count_entries: int


@dataclass(frozen=True)
class UnwindSizes:
    """The maps of unwinding with .eh_frame tables (bpf/unwind.h)."""

    rows: int  # rows of all tables together (16 bytes each)
    processes: int  # processes with tables at once (LRU)
    stacks: int  # unwound stacks per drain interval (1,032 bytes each, two maps)

    def cflags(self) -> list[str]:
        return [
            "-DUNWIND_ENABLED=1",
            f"-DUNWIND_ROWS={self.rows}",
            f"-DUNWIND_PROCESSES={self.processes}",
            f"-DUNWIND_STACKS={self.stacks}",
        ]

    @property
    def nbytes(self) -> int:
        """Memory of the maps' values (the kernel adds some per entry)."""
        return 16 * self.rows + 1032 * self.processes + 2 * 1024 * self.stacks


# Must match enum unwind_outcome in bpf/unwind.h.
UNWIND_OUTCOMES = ("tables", "no_tables", "kernel_mode", "truncated", "map_full")


def map_sizes(frequency: int, interval: float, cpus: int) -> MapSizes:
    """Size the maps for the samples one interval can produce.

    Each sample adds at most one user and one kernel stack. The stack map is a
    hash table without collision chaining, so it gets 4x headroom; entries are
    powers of two, bounded so a mistaken setting cannot eat the node's memory.
    """
    samples = max(1, int(frequency * interval * cpus))
    stacks = _power_of_two(4 * 2 * samples, low=1024, high=1 << 18)
    counts = _power_of_two(2 * samples, low=1024, high=1 << 18)
    return MapSizes(stack_entries=stacks, count_entries=counts)


def _power_of_two(value: int, *, low: int, high: int) -> int:
    size = 1 << max(0, value - 1).bit_length()
    return max(low, min(high, size))


class CpuSampler(DoubleBuffered):
    """The CPU program: attach, drain periodically, detach on close."""

    config_map = "config"
    not_started = "sampler not started"

    def __init__(
        self,
        *,
        frequency: int,
        interval: float,
        kernel_stacks: bool,
        sizes: MapSizes | None = None,
        unwind: UnwindSizes | None = None,
    ) -> None:
        self.frequency = frequency
        self.period_ns = round(1e9 / frequency)
        self.kernel_stacks = kernel_stacks
        self.sizes = sizes or map_sizes(frequency, interval, os.cpu_count() or 1)
        self.unwind = unwind  # None: frame pointers only
        super().__init__()
        self._drops = DropCounters(DROP_REASONS)
        # Collided samples received from the kernel, waiting for the next drain.
        self._overflow: list[SampleCount] = []
        self._overflow_lock = threading.Lock()
        self._new_python: list[NewPythonStack] = []

    def program(self) -> Program:
        cflags = (
            f"-DSTACK_MAP_ENTRIES={self.sizes.stack_entries}",
            f"-DCOUNT_MAP_ENTRIES={self.sizes.count_entries}",
            f"-DKERNEL_STACKS={int(self.kernel_stacks)}",
            *(self.unwind.cflags() if self.unwind else []),
        )
        return Program(BPF_SOURCE, cflags)

    def attach(self, programs: Programs) -> None:
        from bcc import PerfSWConfig, PerfType  # loaded only where BPF runs

        self._use(programs)
        self._table("overflow").open_ring_buffer(self._on_overflow)
        self._table("py_new_stacks").open_ring_buffer(self._on_new_python_stack)
        # A new image's unwind tables are loaded anew; its Python offsets go.
        programs.bpf.attach_tracepoint(tp=b"sched:sched_process_exec", fn_name=b"forget_image")
        # cpu-clock counts nanoseconds, so a fixed period makes every sample
        # worth exactly period_ns of CPU time.
        programs.bpf.attach_perf_event(
            ev_type=PerfType.SOFTWARE,
            ev_config=PerfSWConfig.CPU_CLOCK,
            fn_name=b"on_sample",
            sample_period=self.period_ns,
        )
        log.info(
            "sampling all CPUs at %d Hz (stack map %d entries, count map %d, kernel stacks %s)",
            self.frequency,
            self.sizes.stack_entries,
            self.sizes.count_entries,
            "on" if self.kernel_stacks else "off",
        )

    def _on_new_python_stack(self, _ctx: Any, data: Any, _size: int) -> None:
        if len(self._new_python) < MAX_NEW_PYTHON_STACKS:
            self._new_python.append(read_new_python_stack(data))

    def take_python_stacks(self) -> list[NewPythonStack]:
        """The Python stacks first seen in a slot since the last call (from `poll`'s
        thread): their code objects are named while their processes live."""
        taken, self._new_python = self._new_python, []
        return taken

    def _on_overflow(self, _ctx: Any, data: Any, _size: int) -> None:
        event = ctypes.cast(data, ctypes.POINTER(_OverflowSample)).contents
        sample = SampleCount(
            process=ProcessGeneration(event.pid, event.generation),
            comm=decode(event.comm),
            user_stack=_copied_stack(event.user, event.user_bytes),
            kernel_stack=_copied_stack(event.kernel, event.kernel_bytes),
            count=1,
        )
        with self._overflow_lock:
            self._overflow.append(sample)

    def drain(self) -> Drain:
        """Switch slots, then read and clear what the kernel counted in the old one."""
        old, start_ns, end_ns = self._switch()
        programs = self._programs()
        drain = Drain(start_ns=start_ns, end_ns=end_ns)
        keyed = list(self._read_slot(old))
        drain.python = read_python_slot(programs.bpf, old)
        drain.samples = list(with_python(keyed, drain.python))
        with self._overflow_lock:
            drain.samples += self._overflow
            drain.overflowed = len(self._overflow)
            self._overflow = []
        drain.drops = self._drops.read(self._table("drops")) | programs.announcement_drops()
        clear_stack_map(self._table(f"stacks_{old}"))
        return drain

    def watch_python(self, pid: int, offsets: PyOffsets) -> None:
        """Walk the Python stacks of `pid`'s samples with these offsets (bpf/cpython.h)."""
        self._table("py_procs")[ctypes.c_uint32(pid)] = offsets

    def python_walk_errors(self) -> dict[str, int]:
        """Python walks in BPF that failed since the start, by reason (bpf/cpython.h)."""
        if self.programs is None or self.programs.bpf is None:  # not started, or closed
            return {}
        table = self._table("py_errors")
        return {
            reason: int(table.sum(ctypes.c_int(index)).value)
            for index, reason in enumerate(PY_WALK_ERRORS)
        }

    def forget_python(self, pid: int) -> None:
        table = self._table("py_procs")
        key = ctypes.c_uint32(pid)
        if key in table:
            del table[key]

    def table(self, name: str) -> Any:
        """A map of the loaded program by name (the unwind table loader writes some)."""
        return self._table(name)

    def unwind_outcomes(self) -> dict[str, int]:
        """User stacks by how they were walked since the start (empty: unwinding is off)."""
        if self.programs is None or self.unwind is None:
            return {}
        table = self._table("unwind_outcomes")
        return {
            outcome: int(table.sum(ctypes.c_int(index)).value)
            for index, outcome in enumerate(UNWIND_OUTCOMES)
        }

    def _read_slot(self, slot: int) -> Iterator[tuple[NativeKey, SampleCount]]:
        counts = self._table(f"counts_{slot}")
        stacks = self._table(f"stacks_{slot}")
        cache: dict[int, tuple[int, ...]] = {}
        unwound = self._unwound_stacks(slot)
        for key, value in read_and_clear_counts(counts):
            user_stack = unwound.get(key.unwound_stack, ()) if key.unwound_stack else None
            yield (
                native_key(key),
                SampleCount(
                    process=ProcessGeneration(key.pid, key.generation),
                    comm=decode(key.comm),
                    user_stack=user_stack
                    if user_stack is not None
                    else stack_call_sites(stacks, key.user_stack_id, cache),
                    kernel_stack=stack_call_sites(stacks, key.kernel_stack_id, cache),
                    count=value,
                ),
            )

    def _unwound_stacks(self, slot: int) -> dict[int, tuple[int, ...]]:
        """The stacks unwound with tables into `slot` (then emptied), by hash, as call sites."""
        if self.unwind is None:
            return {}
        stacks = {}
        for key, value in read_and_clear(self._table(f"ustacks_{slot}")):
            depth = min(int(value.depth), MAX_STACK_DEPTH)
            stacks[int(getattr(key, "value", key))] = call_sites(tuple(value.frames[:depth]))
        return stacks


def _copied_stack(frames: Any, size: int) -> tuple[int, ...]:
    """Call sites of a stack bpf_get_stack copied (`size` bytes, or a negative errno)."""
    if size <= 0:
        return ()
    return call_sites(tuple(frames[: size // 8]))


def with_python(
    keyed: Iterable[tuple[NativeKey, SampleCount]], python: Iterable[PythonSample]
) -> Iterator[SampleCount]:
    """The native samples, each split by the Python stacks its count ran.

    The BPF program counts a sample's Python stack under the native sample's key, after
    the native count: a Python count is at most its native one (more only if the native
    count map was full, and then the native count is what stands). Whatever of a native
    count has no Python stack (a thread not running Python) stays native only.
    """
    runs: dict[NativeKey, list[PythonSample]] = defaultdict(list)
    for run in python:
        runs[run.native_key].append(run)
    for key, sample in keyed:
        left = sample.count
        for ran in runs.get(key, ()):
            count = min(ran.count, left)
            if count <= 0:
                break
            yield replace(sample, count=count, python=ran.stack)
            left -= count
        if left > 0:
            yield replace(sample, count=left) if left != sample.count else sample
