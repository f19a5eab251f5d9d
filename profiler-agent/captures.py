"""Capturing a live process: its name, start time, executable mappings and cgroup.

The process table captures a process when the kernel side announces it (and,
if that was missed, at the drain that finds its samples). What is read of a
process that changes while it is read (a pid reused, an exec) is read again.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from podflame.agent.cgroups import CgroupIdentity
from podflame.agent.procfs import ProcessStat, read_stat
from podflame.symbolizer import PendingRead, ProcessImage
from podflame.symbolizer.elf import ElfSymbols

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
    gone: int = 0  # the process had exited: nothing to capture


@dataclass
class ProcessCaptures:
    """Reads live processes from /proc. Not thread-safe: the agent calls it under its lock."""

    images: ImageSource
    proc: Path = Path("/proc")
    cgroups: CgroupSource | None = None
    stats: CaptureStats = field(default_factory=CaptureStats)

    def capture(self, pid: int) -> Capture:
        """Process `pid` as it is now, read from /proc."""
        capture = GONE
        for _ in range(READ_ATTEMPTS):
            stat = read_stat(pid, self.proc)
            if stat is None:
                self.stats.gone += 1
                return GONE
            self.stats.read += 1
            capture = self._read(pid, stat)
            if read_stat(pid, self.proc) in (stat, None):
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
