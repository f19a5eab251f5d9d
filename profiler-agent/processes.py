"""What the agent knows of each sampled process, captured while it lives.

A process is announced by the kernel side at its first event, a CPU sample or
a network call (bpf/processes.h: both BPF programs share one identity), and
its name, start time and memory image (mappings and opened binaries) are
captured then, so that a process which exits before the next drain still gets
its symbols and labels. Records are keyed by (pid, generation): after exec or
pid reuse the kernel side starts a new generation, so nothing carries over
from one program to another. The agent keeps one table, for both drains.
"""

from dataclasses import dataclass, field, replace

from podflame.agent.captures import Capture, CgroupSource, ProcessCaptures
from podflame.agent.cgroups import CgroupIdentity
from podflame.agent.procfs import read_start_ticks
from podflame.agent.programs import ProcessGeneration
from podflame.agent.stats import TableCounts
from podflame.symbolizer import PendingRead, ProcessImage
from podflame.symbolizer.elf import ElfSymbols

# A record not sampled for this many drains is dropped; if its process shows up
# again it is captured anew.
IDLE_DRAINS = 6
# A hard cap on records besides: under heavy process churn the table holds
# every process of the last two or three drains (500/s x 10 s intervals: about
# 15,000); past the cap the oldest record goes first.
MAX_RECORDS = 65536
# A memory map read again for nothing (the same mappings and perf map: the
# addresses that prompted it were not code, as a frame-pointer walk through
# code built without frame pointers reads) is not read again for 1, 2, 4...
# drains, at most this many: a library loaded meanwhile is named that much later.
MAX_REFRESH_BACKOFF = 8


@dataclass
class ProcessRecord:
    process: ProcessGeneration
    comm: str | None  # /proc/PID/stat's name when captured; None if the process was gone
    start_ticks: int | None  # /proc/PID/stat field 22
    image: ProcessImage | None
    cgroup: CgroupIdentity | None = None  # read with the rest, so exited processes keep it
    idle_drains: int = field(default=0, compare=False)
    refresh_backoff: int = field(default=0, compare=False)  # drains skipped after a refresh
    refresh_at: int = field(default=0, compare=False)  # the table's drain it may refresh in

    @property
    def pid(self) -> int:
        return self.process.pid


class ProcessTable:
    """Records of recently sampled processes, bounded by what the last drains saw."""

    def __init__(self, captures: ProcessCaptures, max_records: int = MAX_RECORDS) -> None:
        self.captures = captures
        self._max_records = max_records
        self.evicted = 0  # records dropped by the cap, not for being idle or ended
        self.gone_at_capture = 0  # announced processes that had exited before capture
        self.from_parent = 0  # of those, forked children given their parent's image
        self.refreshed = 0  # memory maps read again (see refresh)
        self.refreshes_skipped = 0  # not read again: the last read found nothing new
        self._drains = 0
        self._records: dict[ProcessGeneration, ProcessRecord] = {}
        self._newest: dict[int, ProcessGeneration] = {}  # pid -> its latest generation
        # Captures that opened files not read yet, oldest first (see read_opened);
        # a dict as an ordered set, so a re-announced process is queued once.
        self._unread: dict[ProcessGeneration, None] = {}

    def __len__(self) -> int:
        return len(self._records)

    @property
    def cgroups(self) -> CgroupSource | None:
        return self.captures.cgroups

    def pids(self) -> set[int]:
        return {process.pid for process in self._records}

    def counts(self) -> TableCounts:
        return TableCounts(
            self.gone_at_capture,
            self.from_parent,
            self.evicted,
            self.refreshed,
            self.refreshes_skipped,
        )

    def announce(self, process: ProcessGeneration, parent: ProcessGeneration | None = None) -> None:
        """A process was sampled for the first time: capture it now, while it lives.

        `parent`: what it was forked from, if it has not exec'd since. If it is gone
        already, it is given the parent's image, name and cgroup, as it was forked with.
        """
        capture = self.captures.capture(process.pid)
        if capture.start_ticks is None:
            self.gone_at_capture += 1
            inherited = self._parent_capture(parent) if parent is not None else None
            if inherited is not None:
                # Still gone: never running, so dropped once its samples are drained.
                capture = replace(inherited, start_ticks=None)
                self.from_parent += 1
        record = ProcessRecord(
            process,
            comm=capture.comm,
            start_ticks=capture.start_ticks,
            image=capture.image,
            cgroup=capture.cgroup,
        )
        self._records.pop(process, None)  # re-inserted last: the oldest stays first
        self._records[process] = record
        self._newest[process.pid] = process
        if record.image is not None and record.image.has_unread:
            self._unread.setdefault(process)
        while len(self._records) > self._max_records:
            self._forget(next(iter(self._records)))
            self.evicted += 1

    def _parent_capture(self, parent: ProcessGeneration) -> Capture | None:
        """The parent's capture as of the fork, unless the parent exec'd since."""
        if parent.generation:
            record = self._records.get(parent)
            if record is None and parent.pid in self._newest:
                return None  # it has another generation now: exec'd (or pid reused)
        else:  # not sampled before the fork: its latest record, if any
            newest = self._newest.get(parent.pid)
            record = self._records.get(newest) if newest is not None else None
        if record is None:  # not sampled lately: captured as it is now
            capture = self.captures.capture(parent.pid)
            return capture if capture.image is not None else None
        if record.image is None:
            return None
        return Capture(record.comm, record.start_ticks, record.image, record.cgroup)

    def lookup(self, process: ProcessGeneration) -> ProcessRecord:
        """The record for a drained sample."""
        record = self._records.get(process)
        if record is None:
            # Announced before a restart, lost in a full ring buffer, or dropped
            # as idle: capture it now, as it is.
            self.announce(process)
            return self._records[process]
        return record

    def read_opened(self) -> bool:
        """Read the symbols of one file a capture opened, oldest capture first.

        Captures only open a new process's files, so that the next process is
        captured promptly; the announcer reads them between announcements.
        False when no file waits. (The agent splits this in three, so as not to
        hold its lock while parsing: `take_opened`, `read_pending`, attach.)
        """
        pending = self.take_opened()
        if pending is None:
            return False
        pending.attach(self.read_pending(pending))
        return True

    def take_opened(self) -> PendingRead | None:
        """One file a capture opened and nothing has read, oldest capture first."""
        while self._unread:
            oldest = next(iter(self._unread))
            record = self._records.get(oldest)
            image = record.image if record is not None else None
            pending = self.captures.images.take_opened(image) if image is not None else None
            if pending is not None:
                return pending
            del self._unread[oldest]
        return None

    def read_pending(self, pending: PendingRead) -> ElfSymbols | None:
        """Parse a taken file (thread-safe: needs no lock of the caller's)."""
        return self.captures.images.read_pending(pending)

    def close(self) -> None:
        """Close the files captures opened and nothing has read (the agent is stopping)."""
        for record in self._records.values():
            if record.image is not None:
                record.image.close()
        self._unread.clear()

    def refresh(self, record: ProcessRecord) -> None:
        """Capture a running process's memory map again (libraries loaded since, JIT code).

        Backs off while reading again finds nothing new (MAX_REFRESH_BACKOFF).
        """
        if self._drains < record.refresh_at:
            self.refreshes_skipped += 1
            return
        if not self._is_running(record):
            return
        old = record.image
        new = self.captures.images.image(record.pid, old)
        self.refreshed += 1
        if new is not None:
            record.image = new
        # Identical mappings share one index (ProcessImages._layout). The perf map is
        # not read here: the resolver reads what a JIT appended at every drain.
        same = old is not None and new is not None and old.mappings is new.mappings
        backoff = min(max(1, 2 * record.refresh_backoff), MAX_REFRESH_BACKOFF) if same else 0
        record.refresh_backoff = backoff
        record.refresh_at = self._drains + 1 + backoff

    def end_drain(self, sampled: set[ProcessGeneration]) -> None:
        """Forget processes that were not sampled for a while, or have ended."""
        self._drains += 1
        for process, record in list(self._records.items()):
            if process in sampled:
                record.idle_drains = 0
                continue
            record.idle_drains += 1
            # An ended process may still have samples in the slot being filled
            # now, so it is kept for one more drain.
            ended = record.idle_drains >= 2 and not self._is_running(record)
            if ended or record.idle_drains >= IDLE_DRAINS:
                self._forget(process)

    def _forget(self, process: ProcessGeneration) -> None:
        # Its image is not closed here: a forked child's record may share it (its
        # parent's capture). Files still unread are closed when the last
        # reference goes, or by close().
        del self._records[process]
        if self._newest.get(process.pid) == process:
            del self._newest[process.pid]

    def _is_running(self, record: ProcessRecord) -> bool:
        if record.start_ticks is None:
            return False  # gone when it was announced
        if self._newest.get(record.pid) != record.process:
            return False  # exec'd into another image, or the pid was reused
        start = read_start_ticks(record.pid, self.captures.proc)
        return start == record.start_ticks
