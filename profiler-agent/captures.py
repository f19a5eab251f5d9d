"""One capture of each live process, shared by the process tables that announce it.

The CPU sampler and the network tracer announce processes separately (each
BPF program numbers its own generations), so a process that runs and talks
is announced twice, usually within moments. A capture (its name, start time,
executable mappings and cgroup, read from /proc) is what an announcement
costs; the second announcement of the same process image reuses the first
capture instead of reading /proc again.

"The same process image" is decided from /proc/PID/stat alone: the start time
tells a reused pid apart, and the name and the code, stack and heap addresses,
which exec sets anew (randomized by ASLR), tell an exec'd image apart. A
process that is gone has no stat to compare, so it is never matched.
"""

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from podflame.agent.cgroups import CgroupIdentity
from podflame.agent.procfs import ProcessStat, read_stat
from podflame.symbolizer import PendingRead, ProcessImage
from podflame.symbolizer.elf import ElfSymbols

# The second announcement of a process comes from the other announcement loop,
# which may lag behind by its backlog: thousands of announcements under heavy
# churn, most of them of processes gone by then (those are never kept). Past
# the cap the least recently used capture goes first.
MAX_CAPTURES = 4096
# The stat is read again after a capture: if the pid was reused or the process
# exec'd meanwhile, what was read may belong to two processes or images, and
# it is read again (once more at most).
READ_ATTEMPTS = 2


class CgroupSource(Protocol):
    """Reads which cgroup (so which container) a live process is in."""

    def read(
        self, pid: int, start_ticks: int | None, *, verify: bool = True
    ) -> CgroupIdentity | None: ...


class ImageSource(Protocol):
    """Captures a live process's memory image (the symbolizer's side of the seam)."""

    def image(
        self, pid: int, previous: ProcessImage | None = None, *, eager: bool = False
    ) -> ProcessImage | None: ...

    def read_opened(self, image: ProcessImage) -> bool: ...

    def take_opened(self, image: ProcessImage) -> PendingRead | None: ...

    def read_pending(self, pending: PendingRead) -> ElfSymbols | None: ...


@dataclass(frozen=True)
class Capture:
    """What was read of a process while it lived; all None when it was already gone."""

    comm: str | None
    start_ticks: int | None
    image: ProcessImage | None
    cgroup: CgroupIdentity | None


GONE = Capture(comm=None, start_ticks=None, image=None, cgroup=None)


@dataclass
class CaptureStats:
    """How announcements were served (exported as podflame_agent_captures_*_total)."""

    read: int = 0  # captured from /proc
    shared: int = 0  # served by an earlier capture of the same process image
    gone: int = 0  # the process had exited: nothing to capture


_Key = tuple[int, ProcessStat]


@dataclass
class ProcessCaptures:
    """Captures of live processes, one per process image, the most recent `max_entries` kept.

    Not thread-safe: the agent calls it under its lock.
    """

    images: ImageSource
    proc: Path = Path("/proc")
    cgroups: CgroupSource | None = None
    max_entries: int = MAX_CAPTURES
    stats: CaptureStats = field(default_factory=CaptureStats)
    _entries: OrderedDict[_Key, Capture] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._entries)

    def capture(self, pid: int) -> Capture:
        """Process `pid` as it is now, read from /proc unless an earlier capture matches."""
        capture = GONE
        for _ in range(READ_ATTEMPTS):
            stat = read_stat(pid, self.proc)
            if stat is None:
                self.stats.gone += 1
                return GONE
            key = (pid, stat)
            known = self._entries.get(key)
            if known is not None:
                self._entries.move_to_end(key)
                self.stats.shared += 1
                return known
            self.stats.read += 1
            capture = self._read(pid, stat)
            if read_stat(pid, self.proc) in (stat, None):
                if stat.identifies_image:
                    self._remember(key, capture)
                return capture
        # Changed at every attempt (a chain of execs): what was read may mix
        # two images, as any capture of a process that changes while read.
        return capture

    def _read(self, pid: int, stat: ProcessStat) -> Capture:
        # Everything it maps is opened now: it may exit or exec before the drain. Not
        # for the agent itself, which lives as long as its records and maps
        # large libraries (LLVM, for BCC) that it rarely runs.
        eager = pid != os.getpid()
        image = self.images.image(pid, eager=eager)
        # Read per process image, not taken from a cache of cgroups: a process
        # is moved into its container's cgroup before it execs the container's
        # program. Checked by the caller's second read of the stat.
        cgroups = self.cgroups
        cgroup = None if cgroups is None else cgroups.read(pid, stat.start_ticks, verify=False)
        return Capture(comm=stat.comm, start_ticks=stat.start_ticks, image=image, cgroup=cgroup)

    def _remember(self, key: _Key, capture: Capture) -> None:
        self._entries[key] = capture
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
