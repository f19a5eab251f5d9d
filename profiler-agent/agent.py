"""The agent's loops and its composition root: drain -> attribute -> symbolize -> label -> ship.

Threads: the drain loop (every --interval) and one announcement loop per BPF
program (the CPU sampler, and the network tracer when it runs), which
captures each new process as soon as the kernel side reports its first
event. They share the symbolizer and the process tables under one lock.

Nothing a process does stops a loop: an error in one process's capture,
symbolization or labels costs that process (counted per stage, see
failures.py), and a guard around each drain and each announcement iteration
counts what still gets through and goes on.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from podflame.agent.batch import BatchBuilder, Stack, Window
from podflame.agent.captures import ProcessCaptures
from podflame.agent.cgroups import CgroupResolver
from podflame.agent.cpython.watch import PythonWatch, PythonWatchCollector
from podflame.agent.heap import release_free_memory
from podflame.agent.labels import CgroupLabels, CombinedLabels, HostLabels, LabelProvider
from podflame.agent.lifetimes import ProcessLifetimes, by_process
from podflame.agent.metrics import CacheEntries, CacheSizes, StageCounters, registry_of
from podflame.agent.netbatch import NetworkBatchBuilder, network_processes
from podflame.agent.network import NetworkDrain, NetworkTracer
from podflame.agent.peers import NoPeers, PeerResolver, PodPeers
from podflame.agent.processes import ProcessTable
from podflame.agent.sampler import Announcement, CpuSampler, Drain
from podflame.agent.settings import AgentSettings
from podflame.agent.shipper import Shipper, ShipperCollector
from podflame.agent.spool import DiskSpool, MemoryQueue, PendingQueue
from podflame.agent.stats import AgentStats, AgentStatsCollector, ProcessTableCollector
from podflame.agent.unwinding import (
    UnwindCollector,
    UnwindLoader,
    build_unwinder,
    unwind_map_sizes,
)
from podflame.model.profile import NET_WAIT
from podflame.symbolizer import Symbolizer

if TYPE_CHECKING:
    from podflame.agent.kubernetes import KubernetesMetadata

log = logging.getLogger(__name__)

# The poll returns as soon as an event arrives; the timeout only bounds how
# long a stop request waits.
ANNOUNCE_POLL_MS = 500
# After an announcement iteration failed as a whole (the ring buffer's poll
# itself, say), the loop waits this long: a failure that repeats must not spin.
ANNOUNCE_ERROR_PAUSE = 1.0


Poll = Callable[[int], list[Announcement]]


@dataclass
class NetworkSide:
    """The network tracer's half: its own process table (the kernel side numbers
    process generations apart from the CPU sampler's, but the captures are
    shared with the CPU table) and net_wait batches."""

    tracer: NetworkTracer
    builder: NetworkBatchBuilder
    processes: ProcessTable
    lifetimes: ProcessLifetimes


@dataclass
class Agent:
    sampler: CpuSampler
    builder: BatchBuilder
    shipper: Shipper
    symbolizer: Symbolizer
    processes: ProcessTable
    interval: float
    shutdown_timeout: float = 3.0
    # This node's pods (None off Kubernetes); also what the network tracer
    # asks for a peer's pod: kubernetes.pod_by_ip(ip).
    kubernetes: "KubernetesMetadata | None" = None
    network: NetworkSide | None = None
    stats: AgentStats = field(default_factory=AgentStats)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Loads captured processes' unwind tables (None: --unwind-tables is off).
    unwinder: UnwindLoader | None = None
    # The CPython processes whose Python frames BPF walks (None: --no-python).
    python: PythonWatch | None = None
    # What /metrics serves; build_agent registers the parts' collectors in it.
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # The CPU table's lifetimes: attributed at each drain, ended after it.
    lifetimes: ProcessLifetimes = field(init=False)

    def __post_init__(self) -> None:
        self.lifetimes = ProcessLifetimes(
            self.processes, self.symbolizer, self.stats.process_errors
        )

    def run(self, stop: threading.Event) -> None:
        """Drain every interval until `stop` is set, then drain once more and give the
        server `shutdown_timeout` seconds (from the stop) to acknowledge what is queued."""
        self.shipper.start()
        if self.unwinder is not None:
            self.unwinder.start()
        announcers = [
            threading.Thread(target=self._announce_loop, args=(stop, poll, table), name=name)
            for name, poll, table in self._announcement_sources()
        ]
        for announcer in announcers:
            announcer.start()
        try:
            self._drain_every_interval(stop)
        finally:
            stop.set()
            stopped = time.monotonic()
            for announcer in announcers:
                announcer.join()
        try:
            for _, poll, table in self._announcement_sources():
                self._announce(poll(0), table)  # what is still in the ring buffers
            self.tick()
        finally:
            self._close_sources()  # while the sender thread sends the last batches
            self.shipper.close(stopped + self.shutdown_timeout)

    def _drain_every_interval(self, stop: threading.Event) -> None:
        """Drain on a fixed schedule: every `interval` from the start, not `interval`
        after the last drain ended. Under load a drain takes seconds, and records of
        ended processes are dropped only at drains: waiting a whole interval after
        each would space drains out and let the process tables grow. A drain that
        ends past the next one's time starts the next at once."""
        deadline = time.monotonic() + self.interval
        while not stop.wait(max(0.0, deadline - time.monotonic())):
            self.tick()
            with self._timed("release_memory"):
                release_free_memory()
            deadline = max(deadline + self.interval, time.monotonic())

    def _close_sources(self) -> None:
        if self.unwinder is not None:
            self.unwinder.close()
        self.sampler.close()
        for table in self.process_tables().values():
            table.close()
        if self.kubernetes is not None:
            self.kubernetes.close()
        if self.network:
            self.network.tracer.close()

    def _announcement_sources(self) -> list[tuple[str, Poll, ProcessTable]]:
        sources: list[tuple[str, Poll, ProcessTable]] = [
            ("announce", self.sampler.poll, self.processes)
        ]
        if self.network:
            sources.append(("announce-net", self.network.tracer.poll, self.network.processes))
        return sources

    def _announce_loop(self, stop: threading.Event, poll: Poll, table: ProcessTable) -> None:
        unread = False
        while not stop.is_set():
            # Captures open files; their symbols are read here one file at a
            # time, each after a look (without waiting) for new processes, so a
            # new process is captured before the next file is read: a process
            # that execs or exits within a second keeps its names even while
            # the agent parses big binaries seen for the first time.
            try:
                self._announce(poll(0 if unread else ANNOUNCE_POLL_MS), table)
                if table is self.processes:
                    self._name_python_codes()
                unread = self._read_opened(table)
            except Exception as error:  # the loop outlives anything: counted, logged
                self.stats.loop_errors.record("announce", error)
                stop.wait(ANNOUNCE_ERROR_PAUSE)

    def _name_python_codes(self) -> None:
        """Name the code objects of Python stacks sampled for the first time in this
        interval, while their processes live (polled with the announcements), and look
        again at processes that showed no CPython yet."""
        stacks = self.sampler.take_python_stacks()
        if self.python is not None:
            with self.lock:
                self.python.name_codes(stacks)
                self.python.look_again()

    def _read_opened(self, table: ProcessTable) -> bool:
        try:
            return read_one_opened(self.lock, table)
        except Exception as error:  # that file's symbols are lost (it was taken off)
            self.stats.process_errors.record("read_symbols", error)
            return False  # the next poll waits: an error that repeats must not spin

    def _announce(self, announcements: list[Announcement], table: ProcessTable) -> None:
        # The lock is taken per process: capturing one can take milliseconds,
        # and the other announcement loop must not wait for a whole burst.
        source = "cpu" if table is self.processes else "network"
        for done, announcement in enumerate(announcements):
            with self.lock:
                self._announce_one(announcement, table)
                self.stats.new_processes += 1
                self.stats.announce_backlog[source] = len(announcements) - done - 1
            if self.unwinder is not None and source == "cpu":
                self.unwinder.submit(announcement.process.pid)  # loaded on its own thread

    def _announce_one(self, announcement: Announcement, table: ProcessTable) -> None:
        """Capture the process; if that fails, the drain that samples it tries again."""
        process = announcement.process
        try:
            table.announce(process, announcement.parent)
            if self.python is not None and table is self.processes:
                self.python.announce(process.pid, process.generation)
        except Exception as error:  # anything the process's /proc files can provoke
            self.stats.process_errors.record("capture", error, f"pid {process.pid}")

    def tick(self) -> None:
        """Drain, build and queue a batch (and the network tracer's); an error that
        fails either as a whole is counted and logged, and the next tick goes on."""
        self._guarded("drain", self._tick_cpu)
        if self.network:
            self._guarded("network_drain", partial(self._tick_network, self.network))

    def _guarded(self, loop: str, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as error:  # the drain loop outlives anything: counted, logged
            self.stats.loop_errors.record(loop, error)

    def _tick_cpu(self) -> None:
        """The drain's steps in order: read the kernel maps, attribute the samples to
        processes, symbolize, label, batch; then the drain ends for the process table."""
        with self._timed("drain"):
            drain = self.sampler.drain()
        with self.lock, self._timed("build"):
            self.symbolizer.refresh()  # kernel modules may have come or gone
            groups = by_process(drain.samples)
            processes = self.lifetimes.attribute(groups)
            self._count_python(drain)
            stacks = self.builder.symbolize(processes)
            labels = self.builder.label(processes)
            self._account(drain, [s for p, counts in stacks.items() if p in labels for s in counts])
            window = Window(drain.start_ns, drain.end_ns)
            batch = self.builder.to_batch(window, stacks, labels, self.counters(drain))
            self.lifetimes.end(groups.keys())
            if self.python is not None:
                self.python.keep(self.processes.pids())
        with self._timed("ship"):
            self.shipper.submit(batch)  # queued (spooled); the sender thread sends it
        # Counted once its batch is queued: a scrape never sees a drain whose
        # batch is not yet pending (drains now follow each other at once when late).
        self.stats.drains += 1

    def _count_python(self, drain: Drain) -> None:
        """Count the samples of Python processes, with Python frames or without."""
        if self.python is not None:
            self.python.count_samples(
                (s.process.pid, s.count, bool(s.python and s.python.frames)) for s in drain.samples
            )

    def _tick_network(self, network: NetworkSide) -> None:
        with self._timed("network_drain"):
            drain = network.tracer.drain()
        with self.lock, self._timed("network_build"):
            groups, comms = network_processes(drain)
            processes = network.lifetimes.attribute(groups, comms)
            batch = network.builder.build(drain, processes, _network_counters(drain))
            network.lifetimes.end(groups.keys())
            self.stats.network_calls += drain.calls
            for reason, count in drain.drops.items():
                self.stats.network_dropped[reason] += count
        lost = {reason: n for reason, n in drain.drops.items() if n}
        if lost:
            log.warning("network tracer could not record everything in the last interval: %s", lost)
        with self._timed("ship"):
            self.shipper.submit(batch)  # queued (spooled); the sender thread sends it

    def _account(self, drain: Drain, shipped: list[Stack]) -> None:
        """Count the drain's samples and drops, and its distinct stacks (`shipped`: of
        the processes that get a series), those with a frame not named apart."""
        self.stats.samples += drain.total_samples
        self.stats.collided += drain.overflowed
        for reason, count in drain.drops.items():
            self.stats.dropped[reason] += count
        distinct = set(shipped)
        unsymbolized = sum(not all(frame.resolved for frame in stack) for stack in distinct)
        self.stats.stacks += len(distinct)
        self.stats.stacks_unsymbolized += unsymbolized
        self.stats.count_shallow_stacks(drain, self.processes.pids())
        _log_drops(drain)

    def counters(self, drain: Drain) -> dict[str, int]:
        """This interval's sampling counters plus the agent's running totals, for the batch."""
        counters = {"samples": drain.total_samples, "samples_collided": drain.overflowed}
        counters.update({f"dropped_{reason}": n for reason, n in drain.drops.items()})
        counters["stacks_unsymbolized_total"] = self.stats.stacks_unsymbolized
        for prefix, stats in self._stage_stats().items():
            for name, value in asdict(stats).items():
                counters[f"{prefix}_{name}_total"] = value
        return counters

    def process_tables(self) -> dict[str, ProcessTable]:
        tables = {"cpu": self.processes}
        if self.network:
            tables["network"] = self.network.processes
        return tables

    def _stage_stats(self) -> dict[str, Any]:
        stages: dict[str, Any] = {
            "symbolizer": self.symbolizer.stats,
            "captures": self.processes.captures.stats,
            "shipper": self.shipper.stats,
        }
        if isinstance(self.shipper.queue, DiskSpool):
            stages["spool"] = self.shipper.queue.stats
        if self.kubernetes is not None:
            stages["kubernetes"] = self.kubernetes.stats
        if self.unwinder is not None:
            stages["unwind_tables"] = self.unwinder.tables.stats
            stages["unwind_loader"] = self.unwinder.stats
        return stages

    def _timed(self, stage: str) -> "_StageTimer":
        return _StageTimer(self.stats.seconds, stage)


def read_one_opened(lock: threading.Lock, table: ProcessTable) -> bool:
    """Read the symbols of one file a capture opened; False when none waits.

    The file is taken and its table attached under `lock`, and parsed without
    it: a big binary takes most of a second, and the drain needs the lock.
    """
    with lock:
        pending = table.take_opened()
    if pending is None:
        return False
    symbols = table.read_pending(pending)
    with lock:
        pending.attach(symbols)
    return True


class _StageTimer:
    def __init__(self, seconds: dict[str, float], stage: str) -> None:
        self.seconds, self.stage = seconds, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self.seconds[self.stage] += time.perf_counter() - self.start


def _log_drops(drain: Drain) -> None:
    lost = {reason: n for reason, n in drain.drops.items() if n}
    if lost:
        log.warning(
            "kernel could not record everything in the last interval: %s (of %d samples); "
            "the maps are sized from --frequency and --interval",
            ", ".join(f"{n} {reason}" for reason, n in lost.items()),
            drain.total_samples,
        )


def _network_counters(drain: NetworkDrain) -> dict[str, int]:
    counters = {
        "calls": drain.calls,
        "calls_eagain": sum(entry.eagain for entry in drain.latency),
        "connects": sum(entry.count for entry in drain.connections),
    }
    counters.update({f"dropped_{reason}": n for reason, n in drain.drops.items()})
    return counters


def build_network(
    symbolizer: Symbolizer,
    labels: LabelProvider,
    captures: ProcessCaptures,
    peers: PeerResolver,
    stats: AgentStats,
) -> NetworkSide | None:
    """Start the network tracer; without it the agent still profiles CPU."""
    tracer = NetworkTracer()
    try:
        tracer.start()
    except Exception as error:  # BCC raises bare Exceptions for compile and load errors
        log.error("network tracing is off: %s", error)
        tracer.close()
        return None
    processes = ProcessTable(captures)
    stacks = BatchBuilder(
        symbolizer=symbolizer,
        labels=labels,
        period_ns=1,  # each stack's value is the nanoseconds its calls took
        profile_type=NET_WAIT.name,
        errors=stats.process_errors,
    )
    lifetimes = ProcessLifetimes(processes, symbolizer, stats.process_errors)
    return NetworkSide(tracer, NetworkBatchBuilder(stacks, peers=peers), processes, lifetimes)


def build_agent(settings: AgentSettings) -> Agent:
    """Composition root: wire the stages and start sampling (needs root and BPF)."""
    # First: batches an earlier run left in the spool wait for this one, and a
    # spool directory that cannot be created stops the start before anything runs.
    shipper = Shipper(
        str(settings.server),
        queue=_pending_queue(settings),
        token=settings.token,
        ca_file=settings.ca_file,
    )
    unwind_sizes = unwind_map_sizes(settings) if settings.unwind_tables else None
    sampler = CpuSampler(
        frequency=settings.frequency,
        interval=settings.interval,
        kernel_stacks=settings.kernel_stacks,
        unwind=unwind_sizes,
    )
    symbolizer = Symbolizer(
        max_bytes=settings.symbol_cache_bytes, cache_dir=settings.symbol_cache_dir
    )
    cgroups = CgroupResolver()
    # One capture per process for both tables (see captures.py).
    captures = ProcessCaptures(symbolizer, cgroups=cgroups)
    processes = ProcessTable(captures)
    kubernetes = _start_kubernetes(settings)
    providers: list[LabelProvider] = [HostLabels(node=settings.node_name), CgroupLabels(cgroups)]
    if kubernetes is not None:
        from podflame.agent.kubernetes import PodLabels

        providers.append(PodLabels(kubernetes.index, cgroups))
    labels = CombinedLabels(providers)
    stats = AgentStats()  # its process_errors are shared with the batch builders
    builder = BatchBuilder(
        symbolizer=symbolizer,
        labels=labels,
        period_ns=sampler.period_ns,
        errors=stats.process_errors,
    )
    peers: PeerResolver = PodPeers(kubernetes) if kubernetes is not None else NoPeers()
    # The network programs compile first: CPU samples of processes are announced
    # only once the agent runs, so sampling starts last, just before it does.
    network = (
        build_network(symbolizer, labels, captures, peers, stats) if settings.network else None
    )
    try:
        sampler.start()
    except BaseException:
        if kubernetes is not None:
            kubernetes.close()
        if network is not None:
            network.tracer.close()
        raise
    unwinder = None
    if unwind_sizes is not None:
        unwinder = build_unwinder(settings, sampler, symbolizer, unwind_sizes)
    python = PythonWatch(sampler) if settings.python else None
    builder.python = python
    agent = Agent(
        sampler,
        builder,
        shipper,
        symbolizer,
        processes,
        interval=settings.interval,
        shutdown_timeout=settings.shutdown_timeout,
        kubernetes=kubernetes,
        network=network,
        stats=stats,
        unwinder=unwinder,
        python=python,
    )
    agent.registry = registry_of(metric_collectors(agent))
    return agent


def metric_collectors(agent: Agent) -> list[Collector]:
    """Each part's collector, for the agent's /metrics (read without the agent's lock:
    a scrape must not wait for a drain; the sizes are len() of dicts, which the other
    threads change atomically)."""
    tables = agent.process_tables()
    collectors: list[Collector] = [
        AgentStatsCollector(agent.stats),
        ProcessTableCollector(
            lambda: {name: table.counts() for name, table in tables.items()},
            lambda: len(agent.processes),
        ),
        StageCounters("symbolizer", agent.symbolizer.stats),
        StageCounters("captures", agent.processes.captures.stats),
        ShipperCollector(agent.shipper),
        CacheEntries(_cache_sizes(agent, tables)),
    ]
    if agent.kubernetes is not None:
        collectors.append(StageCounters("kubernetes", agent.kubernetes.stats))
    if agent.python is not None:
        collectors.append(PythonWatchCollector(agent.python, agent.sampler))
    if agent.unwinder is not None:
        collectors += [
            UnwindCollector(agent.sampler, agent.unwinder),
            StageCounters("unwind_tables", agent.unwinder.tables.stats),
            StageCounters("unwind_loader", agent.unwinder.stats),
        ]
    return collectors


def _cache_sizes(agent: Agent, tables: dict[str, ProcessTable]) -> list[CacheSizes]:
    """Where each part's cache sizes come from (the gauge podflame_agent_cache_entries)."""
    captures, cgroups = agent.processes.captures, agent.processes.cgroups
    sources: list[CacheSizes] = [
        lambda: {f"processes_{name}": len(table) for name, table in tables.items()},
        lambda: {"process_captures": len(captures)},
        agent.symbolizer.cache_sizes,
        lambda: {"shallow_stack_pids": len(agent.stats.shallow)},
    ]
    if isinstance(cgroups, CgroupResolver):
        sources.append(lambda: {"cgroups": len(cgroups), "cgroup_texts": cgroups.texts})
    if agent.kubernetes is not None:
        sources.append(agent.kubernetes.cache_sizes)
    return sources


def _pending_queue(settings: AgentSettings) -> PendingQueue:
    if settings.spool_dir is None:
        return MemoryQueue(settings.max_pending_batches)
    return DiskSpool(settings.spool_dir, settings.spool_max_bytes)


def _start_kubernetes(settings: AgentSettings) -> "KubernetesMetadata | None":
    """Watch this node's pods, unless --no-kubernetes or there is no API server to ask."""
    if not settings.kubernetes:
        return None
    # Imported here: the client library is large, and only needed on Kubernetes.
    from podflame.agent.kubernetes import start_metadata

    # A deleted pod's last samples are drained after the deletion arrives.
    retention = max(60.0, 3 * settings.interval)
    return start_metadata(
        settings.kubeconfig, settings.node_name, settings.pod_label_map(), retention
    )
