"""Which processes the BPF program walks as CPython, kept in step with the process table.

A process is looked at when it is announced (its first sample): if it maps a CPython we
can walk, its offsets go into the BPF program's `py_procs` (`PythonMaps.watch_python`)
and its `PythonProcess` stays here, to name the frames its samples ran. A process that
showed nothing yet (sampled while the dynamic loader was still mapping libpython, or a
CPython before 3.11 whose main thread state does not exist yet) is looked at again by the
announcement loop, after 0.1 s, then 0.2, 0.4... (`LOOK_AGAIN_SECONDS`), `MAX_LOOKS`
times in all. A refused one (a version we do not know, a free-threaded build; not
CPython after the last look) is not looked at again: its stacks stay native, and the
refusal is counted by reason. A process that maps no file named like CPython at its
first sample is not looked at again (an application that loads libpython later, as an
embedding one may, is not walked). What the process table forgets, this forgets, and
takes out of the BPF map.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from podflame.agent.metrics import PREFIX, labelled

from .bpfmaps import NewPythonStack, PyOffsets, offsets_for, pthread_tid_offset
from .code import NotACode
from .detect import NotSupported
from .memory import UnreadableMemory
from .process import PythonProcess, PythonProcesses

MAX_LOOKS = 8  # the last some 13 s after the first
LOOK_AGAIN_SECONDS = 0.1


class PythonMaps(Protocol):
    """The BPF program's table of processes to walk (CpuSampler)."""

    def watch_python(self, pid: int, offsets: PyOffsets) -> None: ...

    def forget_python(self, pid: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Watched:
    generation: int
    process: PythonProcess


@dataclass(slots=True)
class WatchStats:
    """Counters for /metrics (the watch's gauges are its sizes)."""

    attached: int = 0  # processes whose CPython was found and walked
    samples_named: int = 0  # samples of watched processes with Python frames
    samples_native_only: int = 0  # samples of watched processes without (not running Python)


@dataclass
class PythonWatch:
    maps: PythonMaps
    finder: PythonProcesses = field(default_factory=PythonProcesses)
    stats: WatchStats = field(default_factory=WatchStats)
    _watched: dict[int, Watched] = field(default_factory=dict)  # by pid
    # pid -> (generation, looks so far, when to look again: time.monotonic())
    _pending: dict[int, tuple[int, int, float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._watched)

    def announce(self, pid: int, generation: int) -> None:
        """A process's first sample: walk its Python stacks from now on, if it has any.
        A pid seen with another generation before (exec, or pid reuse) starts afresh."""
        self._drop(pid)
        self._look(pid, generation, 1)

    def look_again(self, now: float | None = None) -> None:
        """Look again at the processes that showed no CPython yet, those due by now."""
        now = time.monotonic() if now is None else now
        due = [(pid, p) for pid, p in self._pending.items() if p[2] <= now]
        for pid, (generation, looks, _) in due:
            self._look(pid, generation, looks + 1)

    def watches(self, pid: int) -> bool:
        return pid in self._watched

    def process(self, pid: int, generation: int) -> PythonProcess | None:
        """The CPython of that process, if it is walked."""
        watched = self._watched.get(pid)
        return watched.process if watched is not None and watched.generation == generation else None

    def name_codes(self, stacks: Iterable[NewPythonStack]) -> None:
        """Read the names of these stacks' code objects now, while their processes live
        (cached per process: the drain names the samples from the cache, also once the
        process has exited)."""
        for stack in stacks:
            watched = self._watched.get(stack.pid)
            if watched is None:
                continue
            for code in stack.codes:
                # Not counted if it fails: the drain tries again, and counts.
                with contextlib.suppress(NotACode):
                    watched.process.codes.code(code)

    def count_samples(self, samples: Iterable[tuple[int, int, bool]]) -> None:
        """(pid, count, named) of a drain's samples: those of watched processes counted."""
        for pid, count, named in samples:
            if pid in self._watched:
                if named:
                    self.stats.samples_named += count
                else:
                    self.stats.samples_native_only += count

    def keep(self, pids: set[int]) -> None:
        """Forget (and stop walking) the processes not among `pids` (the table's)."""
        for pid in [p for p in self._watched if p not in pids]:
            self._drop(pid)
        for pid in [p for p in self._pending if p not in pids]:
            del self._pending[pid]

    def close(self) -> None:
        for pid in list(self._watched):
            self._drop(pid)

    def _look(self, pid: int, generation: int, looks: int) -> None:
        try:
            process = self.finder.find(pid)
        except NotSupported as refusal:
            # A python3.x executable whose libpython the dynamic loader has not mapped
            # yet reads as no CPython: that refusal becomes final at the last look.
            if refusal.reason != "not_cpython" or looks >= MAX_LOOKS:
                self.finder.refused.count(refusal.reason)
                self._pending.pop(pid, None)
            else:
                self._again(pid, generation, looks)
            return
        if process is None:  # no file named like CPython, or gone
            self._pending.pop(pid, None)
            return
        offsets = _offsets(process)
        if offsets is None:
            self._again(pid, generation, looks)
            return
        self._pending.pop(pid, None)
        self.maps.watch_python(pid, offsets)
        self._watched[pid] = Watched(generation, process)
        self.stats.attached += 1

    def _again(self, pid: int, generation: int, looks: int) -> None:
        if looks >= MAX_LOOKS:
            self._pending.pop(pid, None)
            return
        wait = LOOK_AGAIN_SECONDS * 2 ** (looks - 1)
        self._pending[pid] = (generation, looks, time.monotonic() + wait)

    def _drop(self, pid: int) -> None:
        self._pending.pop(pid, None)
        if self._watched.pop(pid, None) is not None:
            self.maps.forget_python(pid)


def _offsets(process: PythonProcess) -> PyOffsets | None:
    """The BPF program's offsets; None while a CPython before 3.11 has no thread state to
    find where glibc keeps the tid (the sample's thread is found by it)."""
    interpreter = process.interpreter
    if interpreter.layout.tstate_native_thread_id is not None:
        return offsets_for(interpreter, None)
    try:
        tid = pthread_tid_offset(process.memory, interpreter, process.pid)
    except (OSError, UnreadableMemory):
        return None
    return offsets_for(interpreter, tid) if tid is not None else None


class WalkErrors(Protocol):
    def python_walk_errors(self) -> dict[str, int]: ...


class PythonWatchCollector(Collector):
    """The Python side of /metrics: processes walked and refused, samples named, errors."""

    def __init__(self, watch: PythonWatch, bpf: WalkErrors) -> None:
        self._watch, self._bpf = watch, bpf

    def collect(self) -> Iterator[Metric]:
        watch, stats = self._watch, self._watch.stats
        yield GaugeMetricFamily(
            PREFIX + "python_processes", "CPython processes walked now.", value=len(watch)
        )
        yield CounterMetricFamily(
            PREFIX + "python_processes_attached_total",
            "Processes whose CPython was found and walked.",
            value=stats.attached,
        )
        refused = CounterMetricFamily(
            PREFIX + "python_processes_refused_total",
            "Processes that map a file named like CPython but cannot be walked (their "
            "stacks stay native), by reason.",
            labels=["reason"],
        )
        yield labelled(refused, dict(watch.finder.refused.counts))
        samples = CounterMetricFamily(
            PREFIX + "python_samples_total",
            "Samples of walked CPython processes: with Python frames, or native only (a "
            "thread not running Python, or a walk that failed).",
            labels=["frames"],
        )
        named = {"python": stats.samples_named, "native_only": stats.samples_native_only}
        yield labelled(samples, named)
        errors = CounterMetricFamily(
            PREFIX + "python_walk_errors_total",
            "Python stack walks that failed, by reason: in BPF (no_thread_state, stack_cut, "
            "count_map_full) and in the agent (bad_code_object, unreadable, ...).",
            labels=["reason"],
        )
        yield labelled(errors, {**self._bpf.python_walk_errors(), **watch.finder.errors.counts})
