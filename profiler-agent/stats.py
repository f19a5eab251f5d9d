"""The agent loop's own counters and the process tables', and their collectors for /metrics."""

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from podflame.agent.failures import LOOPS, PROCESS_STAGES, CaughtErrors
from podflame.agent.metrics import PREFIX, labelled
from podflame.agent.sampler import Drain

# Processes with fewer samples in a drain say little about their stacks.
SHALLOW_MIN_SAMPLES = 10


class TableCounts(NamedTuple):
    """A process table's counters (see ProcessTable)."""

    gone_at_capture: int  # announced processes that had exited before capture
    from_parent: int  # of those, forked children given their parent's image
    evicted: int  # records dropped by the table's cap
    refreshed: int = 0  # memory maps read again for addresses they did not cover
    refreshes_skipped: int = 0  # not read again: the last read found nothing new


@dataclass
class AgentStats:
    """Running totals of the agent's stages."""

    drains: int = 0
    samples: int = 0
    collided: int = 0  # samples whose stack collided in the stack map (not lost)
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    stacks: int = 0
    stacks_unsymbolized: int = 0
    new_processes: int = 0
    network_calls: int = 0  # network system calls measured (EAGAIN excluded)
    network_dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # Announced processes still waiting for capture in the batch being worked
    # through, per table (the one: "processes"): it grows when capture falls behind.
    announce_backlog: dict[str, int] = field(default_factory=dict)
    # Per pid the agent holds: (comm, samples, samples with at most one user frame).
    shallow: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    # Errors that cost one process its stacks or names for an interval, per stage,
    # and errors that cost one iteration of a loop (see failures.py).
    process_errors: CaughtErrors = field(
        default_factory=lambda: CaughtErrors.of("process", PROCESS_STAGES)
    )
    loop_errors: CaughtErrors = field(default_factory=lambda: CaughtErrors.of("loop", LOOPS))

    def count_shallow_stacks(self, drain: Drain, held: set[int]) -> None:
        """Add up, per process, samples and those whose user stack has at most one frame.

        A process built without frame pointers shows up here: the kernel's walk
        stops after the sampled function. Kernel threads (no user stack) are
        left out; processes the agent no longer holds are forgotten.
        """
        totals = {pid: value for pid, value in self.shallow.items() if pid in held}
        for sample in drain.samples:
            if not sample.user_stack:
                continue
            pid = sample.process.pid
            comm, total, shallow = totals.get(pid, (sample.comm, 0, 0))
            shallow += sample.count if len(sample.user_stack) <= 1 else 0
            totals[pid] = (comm, total + sample.count, shallow)
        self.shallow = totals


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, help_text, value=value)


def _by(
    label: str, name: str, help_text: str, values: Mapping[str, float], *, gauge: bool = False
) -> CounterMetricFamily | GaugeMetricFamily:
    kind = GaugeMetricFamily if gauge else CounterMetricFamily
    return labelled(kind(PREFIX + name, help_text, labels=[label]), values)


class AgentStatsCollector(Collector):
    """The agent loop's counters (AgentStats) at /metrics."""

    def __init__(self, stats: AgentStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield _counter("drains_total", "Drains of the kernel maps.", stats.drains)
        yield _counter("samples_total", "CPU samples drained.", stats.samples)
        yield _counter(
            "samples_collided_total",
            "Samples whose stack collided in the stack map and came through the overflow "
            "ring buffer instead (not lost).",
            stats.collided,
        )
        yield _counter("stacks_total", "Distinct stacks shipped per batch.", stats.stacks)
        yield _counter(
            "stacks_unsymbolized_total",
            "Shipped stacks with at least one frame that could not be named.",
            stats.stacks_unsymbolized,
        )
        yield _counter("new_processes_total", "Processes announced.", stats.new_processes)
        yield _by(
            "reason",
            "samples_dropped_total",
            "Samples the kernel side could not record fully, by reason.",
            stats.dropped,
        )
        yield from self._network()
        yield from self._errors()
        yield _by("stage", "stage_seconds_total", "Time spent per stage.", stats.seconds)
        yield self._shallow()
        yield _by(
            "table",
            "announce_backlog",
            "Announced processes waiting for capture, per process table.",
            stats.announce_backlog,
            gauge=True,
        )

    def _network(self) -> Iterator[Metric]:
        yield _counter(
            "network_calls_total",
            "Network system calls measured (EAGAIN excluded).",
            self._stats.network_calls,
        )
        yield _by(
            "reason",
            "network_dropped_total",
            "Network events the kernel side could not record, by reason.",
            self._stats.network_dropped,
        )

    def _errors(self) -> Iterator[Metric]:
        yield _by(
            "stage",
            "process_errors_total",
            "Errors that cost one process its stacks (or names) for one interval, by stage.",
            self._stats.process_errors.counts,
        )
        yield _by(
            "loop",
            "loop_errors_total",
            "Errors that cost one iteration of a loop (a whole drain, an announcement batch).",
            self._stats.loop_errors.counts,
        )

    def _shallow(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            PREFIX + "shallow_stack_ratio",
            "Share of a process's samples whose user stack has at most one frame: "
            "near 1 means it was built without frame pointers.",
            labels=["pid", "comm"],
        )
        for pid, (comm, total, shallow) in sorted(self._stats.shallow.items()):
            if total >= SHALLOW_MIN_SAMPLES:
                family.add_metric([str(pid), comm], shallow / total)
        return family


# (help, the TableCounts field) of each process table counter, by metric name.
_TABLE_COUNTERS = {
    "processes_gone_at_capture_total": (
        "Announced processes that had exited before the agent captured them "
        "(their frames are [unknown] unless another process mapped the same files "
        "or they were forked children given their parent's image).",
        "gone_at_capture",
    ),
    "processes_named_from_parent_total": (
        "Forked children (not exec'd) gone before capture, symbolized and "
        "labelled with their parent's capture instead.",
        "from_parent",
    ),
    "maps_refreshed_total": (
        "Memory maps of running processes read again: a sampled address lay "
        "outside every mapping, or in JIT code.",
        "refreshed",
    ),
    "maps_refreshes_skipped_total": (
        "Memory maps not read again because the last reads found nothing new "
        "(backing off up to MAX_REFRESH_BACKOFF drains).",
        "refreshes_skipped",
    ),
    "processes_evicted_total": (
        "Process records dropped by the table's cap (MAX_RECORDS).",
        "evicted",
    ),
}


class ProcessTableCollector(Collector):
    """The process tables' counters, labelled by table, and the records the first holds."""

    def __init__(self, tables: Callable[[], Mapping[str, TableCounts]], held: Callable[[], int]):
        self._tables, self._held = tables, held

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            PREFIX + "processes", "Processes the agent holds records of.", value=self._held()
        )
        counts = self._tables()
        for name, (help_text, field_name) in _TABLE_COUNTERS.items():
            values = {table: getattr(c, field_name) for table, c in counts.items()}
            yield _by("table", name, help_text, values)
