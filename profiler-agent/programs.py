"""The agent's BPF programs as one module, and the process identity they share.

The CPU sampler (bpf/cpu_profile.bpf.c) and the network tracer
(bpf/network.bpf.c) are compiled together into one BCC module: both include
bpf/processes.h, whose maps give each process image one generation, whichever
program sees it first, and announce it once, through one ring buffer. So the
agent keeps one process table and one announcement loop.

Why one module rather than a map shared between two: BCC shares a map between
modules only through its process-wide table storage (BPF_TABLE_PUBLIC or
_SHARED, then "extern"), which keeps the first exported map of a name for the
life of the process, never freed and handed to every later module of that name
(a restarted tracer, the next test's agent); a map pinned in bpffs needs the
file system mounted in the agent's container and outlives a crashed agent. A
module lives and goes with its BPF object.
"""

import ctypes
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from podflame.agent.bpfmaps import (
    DropCounters,
    detach_tracepoints,
    release_compiler_memory,
    switch_slot,
)
from podflame.bpf import source_text

# Processes the kernel side remembers as announced; past this the least
# recently seen is forgotten and announced again when seen (processes.h).
KNOWN_PIDS = 32768


class _NewProcessEvent(ctypes.Structure):
    """struct new_process in bpf/processes.h."""

    _fields_ = [
        ("pid", ctypes.c_uint32),
        ("generation", ctypes.c_uint32),
        ("parent_pid", ctypes.c_uint32),  # 0: none known
        ("parent_generation", ctypes.c_uint32),  # 0: not announced before the fork
    ]


@dataclass(frozen=True)
class ProcessGeneration:
    """A process as the kernel side tells them apart: exec and pid reuse start a new one."""

    pid: int
    generation: int  # 0: unknown (the process could not be announced)


@dataclass(frozen=True)
class Announcement:
    """A process's first event: the agent captures the process now, while it lives."""

    process: ProcessGeneration
    # What it was forked from, if it has not exec'd since (generation 0: the parent
    # had not been announced before the fork). A child gone before its capture is
    # symbolized with the parent's image: the memory it was forked with.
    parent: ProcessGeneration | None = None


def read_announcement(data: Any) -> Announcement:
    """An announcement from a `new_processes` ring buffer event."""
    event = ctypes.cast(data, ctypes.POINTER(_NewProcessEvent)).contents
    process = ProcessGeneration(event.pid, event.generation)
    parent = ProcessGeneration(event.parent_pid, event.parent_generation)
    return Announcement(process, parent if parent.pid else None)


@dataclass(frozen=True)
class Program:
    """One BPF C file of bpf/ and its compile-time parameters."""

    source: str
    cflags: tuple[str, ...] = ()


class Programs:
    """One BCC module compiled from `programs`; each owner attaches its own programs.

    `poll` reads every ring buffer of the module (the announcements, and any a
    program's owner opened, such as the CPU sampler's collided samples): call it
    from one thread only.
    """

    def __init__(self, programs: Sequence[Program]) -> None:
        from bcc import BPF  # loaded only where BPF runs

        # Each file inlines its headers; processes.h's guard keeps the second copy out.
        text = "\n".join(source_text(program.source) for program in programs)
        cflags = [f"-DKNOWN_PIDS={KNOWN_PIDS}", *(f for p in programs for f in p.cflags)]
        self.bpf: Any = BPF(text=text.encode(), cflags=cflags)
        self._announced: list[Announcement] = []
        self._drops = DropCounters(("new_process",))
        self.table("new_processes").open_ring_buffer(self._on_new_process)
        release_compiler_memory()

    def table(self, name: str) -> Any:
        if self.bpf is None:
            raise RuntimeError("BPF programs closed")
        return self.bpf[name.encode()]

    def poll(self, timeout_ms: int) -> list[Announcement]:
        """Read the ring buffers, waiting up to `timeout_ms` for an event; returns the
        processes announced since the last call."""
        if self.bpf is None:
            raise RuntimeError("BPF programs closed")
        self.bpf.ring_buffer_poll(timeout_ms)
        announced, self._announced = self._announced, []
        return announced

    def _on_new_process(self, _ctx: Any, data: Any, _size: int) -> None:
        self._announced.append(read_announcement(data))

    def announcement_drops(self) -> dict[str, int]:
        """Announcements lost to a full ring buffer since the last call, as `new_process`
        (each such process is announced again at its next event)."""
        return self._drops.read(self.table("announce_drops"))

    def close(self) -> None:
        if self.bpf is not None:
            detach_tracepoints(self.bpf)
            self.bpf.cleanup()
            self.bpf = None


class DoubleBuffered(ABC):
    """What the CPU sampler and the network tracer share: their program, compiled alone
    (`start`) or with the other's into the agent's module (`program`, then `attach`),
    and its double buffering: every map a drain reads exists twice, and the program
    counts into the slot user space wrote into its config map."""

    config_map: ClassVar[str]  # the one-entry array holding the active slot
    not_started: ClassVar[str]  # the error of a drain before the start

    def __init__(self) -> None:
        self.programs: Programs | None = None
        self._owns_programs = False  # started alone: it compiled them and closes them
        self._slot = 0
        self._last_drain_ns = time.time_ns()

    @abstractmethod
    def program(self) -> Program:
        """The program and its parameters, to compile (with others) into one module."""

    @abstractmethod
    def attach(self, programs: Programs) -> None:
        """Start with the program of `programs` (compiled from `program()`); implementations
        call `_use` first."""

    def start(self) -> None:
        """Compile the program alone and attach it (the agent compiles the two together)."""
        programs = Programs([self.program()])
        self._owns_programs = True
        self.attach(programs)

    def poll(self, timeout_ms: int) -> list[Announcement]:
        """Programs.poll: the processes announced since the last call."""
        return self._programs().poll(timeout_ms)

    def close(self) -> None:
        """Detach, by closing the programs it compiled (the agent closes the module)."""
        if self.programs is not None and self._owns_programs:
            self.programs.close()
        self.programs = None

    def _use(self, programs: Programs) -> None:
        self.programs = programs
        self._set_slot(0)
        self._last_drain_ns = time.time_ns()

    def _switch(self) -> tuple[int, int, int]:
        """Make the other slot active; returns the old one and the interval it holds
        (start and end, Unix nanoseconds), for the drain to read and clear."""
        self._programs()  # raises if not started
        old, start_ns = self._slot, self._last_drain_ns
        self._last_drain_ns = switch_slot(self._set_slot, old)
        return old, start_ns, self._last_drain_ns

    def _programs(self) -> Programs:
        if self.programs is None:
            raise RuntimeError(self.not_started)
        return self.programs

    def _table(self, name: str) -> Any:
        return self._programs().table(name)

    def _set_slot(self, slot: int) -> None:
        self._table(self.config_map)[ctypes.c_int(0)] = ctypes.c_uint32(slot)
        self._slot = slot
