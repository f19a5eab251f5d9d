"""The agent's own counters, per stage, and how they look at /metrics."""

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from podflame.agent.failures import LOOPS, PROCESS_STAGES, CaughtErrors
from podflame.agent.metrics import Sample
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
    # through, per table ("cpu", "network"): it grows when capture falls behind.
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


def collect(
    stats: AgentStats,
    stage_stats: dict[str, Any],
    processes: int,
    cache_sizes: dict[str, int] | None = None,
    tables: dict[str, TableCounts] | None = None,
) -> list[Sample]:
    """Every metric; `stage_stats` maps a prefix to a dataclass of int counters,
    `cache_sizes` a cache to its entries, `tables` a process table to its counters."""
    return _counters(stats, stage_stats, processes) + _caches(
        stats, cache_sizes or {}, tables or {}
    )


def _caches(
    stats: AgentStats, sizes: dict[str, int], tables: dict[str, TableCounts]
) -> list[Sample]:
    p = "podflame_agent_"
    samples = [
        Sample(p + "cache_entries", "gauge", "Entries per agent cache.", n, (("cache", c),))
        for c, n in sorted(sizes.items())
    ]
    samples += [
        Sample(
            p + "announce_backlog",
            "gauge",
            "Announced processes waiting for capture, per process table.",
            n,
            (("table", t),),
        )
        for t, n in sorted(stats.announce_backlog.items())
    ]
    for table, (gone, from_parent, evicted, refreshed, skipped) in sorted(tables.items()):
        samples.append(
            Sample(
                p + "processes_gone_at_capture_total",
                "counter",
                "Announced processes that had exited before the agent captured them "
                "(their frames are [unknown] unless another process mapped the same files "
                "or they were forked children given their parent's image).",
                gone,
                (("table", table),),
            )
        )
        samples.append(
            Sample(
                p + "processes_named_from_parent_total",
                "counter",
                "Forked children (not exec'd) gone before capture, symbolized and "
                "labelled with their parent's capture instead.",
                from_parent,
                (("table", table),),
            )
        )
        samples.append(
            Sample(
                p + "maps_refreshed_total",
                "counter",
                "Memory maps of running processes read again: a sampled address lay "
                "outside every mapping, or in JIT code.",
                refreshed,
                (("table", table),),
            )
        )
        samples.append(
            Sample(
                p + "maps_refreshes_skipped_total",
                "counter",
                "Memory maps not read again because the last reads found nothing new "
                "(backing off up to MAX_REFRESH_BACKOFF drains).",
                skipped,
                (("table", table),),
            )
        )
        samples.append(
            Sample(
                p + "processes_evicted_total",
                "counter",
                "Process records dropped by the table's cap (MAX_RECORDS).",
                evicted,
                (("table", table),),
            )
        )
    return samples


def _caught(stats: AgentStats) -> list[Sample]:
    p = "podflame_agent_"
    process = [
        Sample(
            p + "process_errors_total",
            "counter",
            "Errors that cost one process its stacks (or names) for one interval, by stage.",
            n,
            (("stage", stage),),
        )
        for stage, n in sorted(stats.process_errors.counts.items())
    ]
    loops = [
        Sample(
            p + "loop_errors_total",
            "counter",
            "Errors that cost one iteration of a loop (a whole drain, an announcement batch).",
            n,
            (("loop", loop),),
        )
        for loop, n in sorted(stats.loop_errors.counts.items())
    ]
    return process + loops


def _counters(stats: AgentStats, stage_stats: dict[str, Any], processes: int) -> list[Sample]:
    p = "podflame_agent_"
    samples = [
        Sample(p + "drains_total", "counter", "Drains of the kernel maps.", stats.drains),
        Sample(p + "samples_total", "counter", "CPU samples drained.", stats.samples),
        Sample(
            p + "samples_collided_total",
            "counter",
            "Samples whose stack collided in the stack map and came through the overflow "
            "ring buffer instead (not lost).",
            stats.collided,
        ),
        Sample(p + "stacks_total", "counter", "Distinct stacks shipped per batch.", stats.stacks),
        Sample(
            p + "stacks_unsymbolized_total",
            "counter",
            "Shipped stacks with at least one frame that could not be named.",
            stats.stacks_unsymbolized,
        ),
        Sample(p + "new_processes_total", "counter", "Processes announced.", stats.new_processes),
        Sample(p + "processes", "gauge", "Processes the agent holds records of.", processes),
    ]
    samples += [
        Sample(
            p + "samples_dropped_total",
            "counter",
            "Samples the kernel side could not record fully, by reason.",
            n,
            (("reason", reason),),
        )
        for reason, n in sorted(stats.dropped.items())
    ]
    samples.append(
        Sample(
            p + "network_calls_total",
            "counter",
            "Network system calls measured (EAGAIN excluded).",
            stats.network_calls,
        )
    )
    samples += [
        Sample(
            p + "network_dropped_total",
            "counter",
            "Network events the kernel side could not record, by reason.",
            n,
            (("reason", reason),),
        )
        for reason, n in sorted(stats.network_dropped.items())
    ]
    samples += _caught(stats)
    samples += [
        Sample(p + "stage_seconds_total", "counter", "Time spent per stage.", s, (("stage", st),))
        for st, s in sorted(stats.seconds.items())
    ]
    for prefix, counters in stage_stats.items():
        for name, value in asdict(counters).items():
            samples.append(
                Sample(f"{p}{prefix}_{name}_total", "counter", f"{prefix}: {name}.", value)
            )
    samples += [
        Sample(
            p + "shallow_stack_ratio",
            "gauge",
            "Share of a process's samples whose user stack has at most one frame: "
            "near 1 means it was built without frame pointers.",
            shallow / total,
            (("pid", str(pid)), ("comm", comm)),
        )
        for pid, (comm, total, shallow) in sorted(stats.shallow.items())
        if total >= SHALLOW_MIN_SAMPLES
    ]
    return samples
