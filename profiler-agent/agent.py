"""The agent's loops and its composition root: drain -> attribute -> symbolize -> label -> ship.

Threads: the drain loop (every --interval) and the announcement loop, which
captures each new process as soon as the kernel side reports its first event
(a CPU sample or a network call: the BPF programs share one process identity,
see programs.py). They share the symbolizer and the process table under one lock.

Nothing a process does stops a loop: an error in one process's capture,
symbolization or labels costs that process (counted per stage, see
failures.py), and a guard around each drain and each announcement iteration
counts what still gets through and goes on.
"""

import contextlib
import logging
import threading
import time
from collections import Counter
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
from podflame.agent.lifetimes import Attributed, ProcessLifetimes, by_process
from podflame.agent.metrics import PREFIX, CacheEntries, CacheSizes, StageCounters, registry_of
from podflame.agent.netbatch import NetworkBatchBuilder, network_processes
from podflame.agent.network import NetworkDrain, NetworkTracer
from podflame.agent.peers import NoPeers, PeerResolver, PodPeers
from podflame.agent.processes import ProcessTable
from podflame.agent.programs import Announcement, ProcessGeneration, Programs
from podflame.agent.sampler import CpuSampler, Drain
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
from podflame.model import Batch
from podflame.model.profile import NET_WAIT
from podflame.symbolizer import Symbolizer

if TYPE_CHECKING:
    from podflame.agent.kubernetes import KubernetesMetadata

log = logging.getLogger(__name__)

# The poll returns as soon as an event arrives; the timeout only bounds how
# long a stop request waits.
ANNOUNCE_POLL_MS = 500
# The name of the agent's one process table in metrics (the label `table`, the cache).
PROCESS_TABLE = "processes"
# After an announcement iteration failed as a whole (the ring buffer's poll
# itself, say), the loop waits this long: a failure that repeats must not spin.
ANNOUNCE_ERROR_PAUSE = 1.0


Poll = Callable[[int], list[Announcement]]


@dataclass
class NetworkSide:
    """The network tracer and its net_wait batches (its processes are in the agent's
    one process table)."""

    tracer: NetworkTracer
    builder: NetworkBatchBuilder


@dataclass
class Agent:
    sampler: CpuSampler
    builder: BatchBuilder
    shipper: Shipper
    symbolizer: Symbolizer
    processes: ProcessTable
    # The BPF programs (the sampler's, the network tracer's): one module, one
    # announcement stream for the one process table.
    programs: Programs
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
    # The table's lifetimes: attributed at each drain, ended once both drains are done.
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
        announcer = threading.Thread(
            target=self._announce_loop, args=(stop, self.programs.poll), name="announce"
        )
        announcer.start()
        try:
            self._drain_every_interval(stop)
        finally:
            stop.set()
            stopped = time.monotonic()
            announcer.join()
        try:
            self._announce(self.programs.poll(0))  # what is still in the ring buffers
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
        self.programs.close()
        self.processes.close()
        if self.kubernetes is not None:
            self.kubernetes.close()

    def _announce_loop(self, stop: threading.Event, poll: Poll) -> None:
        unread = False
        while not stop.is_set():
            # Captures open files; their symbols are read here one file at a
            # time, each after a look (without waiting) for new processes, so a
            # new process is captured before the next file is read: a process
            # that execs or exits within a second keeps its names even while
            # the agent parses big binaries seen for the first time.
            try:
                self._announce(poll(0 if unread else ANNOUNCE_POLL_MS))
                self._name_python_codes()
                unread = self._read_opened()
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

    def _read_opened(self) -> bool:
        try:
            return read_one_opened(self.lock, self.processes)
        except Exception as error:  # that file's symbols are lost (it was taken off)
            self.stats.process_errors.record("read_symbols", error)
            return False  # the next poll waits: an error that repeats must not spin

    def _announce(self, announcements: list[Announcement]) -> None:
        # The lock is taken per process: capturing one can take milliseconds,
        # and a drain must not wait for a whole burst.
        for done, announcement in enumerate(announcements):
            with self.lock:
                self._announce_one(announcement)
                self.stats.new_processes += 1
                self.stats.announce_backlog[PROCESS_TABLE] = len(announcements) - done - 1
            if self.unwinder is not None:
                self.unwinder.submit(announcement.process.pid)  # loaded on its own thread

    def _announce_one(self, announcement: Announcement) -> None:
        """Capture the process; if that fails, the drain that samples it tries again."""
        process = announcement.process
        try:
            self.processes.announce(process, announcement.parent)
            if self.python is not None:
                self.python.announce(process.pid, process.generation)
        except Exception as error:  # anything the process's /proc files can provoke
            self.stats.process_errors.record("capture", error, f"pid {process.pid}")

    def tick(self) -> None:
        """Drain, build and queue a batch (and the network tracer's), then end the drain
        for the process table, once, with the processes of both; an error that fails
        a drain as a whole is counted and logged, and the next tick goes on."""
        drained: set[ProcessGeneration] = set()
        self._guarded("drain", partial(self._tick_cpu, drained))
        if self.network:
            self._guarded("network_drain", partial(self._tick_network, self.network, drained))
        with self.lock:
            self._guarded("drain", partial(self._end_drain, drained))

    def _end_drain(self, drained: set[ProcessGeneration]) -> None:
        """The table forgets the gone and the idle; the Python watch follows it."""
        self.lifetimes.end(drained)
        if self.python is not None:
            self.python.keep(self.processes.pids())

    def _guarded(self, loop: str, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as error:  # the drain loop outlives anything: counted, logged
            self.stats.loop_errors.record(loop, error)

    def _tick_cpu(self, drained: set[ProcessGeneration]) -> None:
        """The drain's steps in order: read the kernel maps, attribute the samples to
        processes, symbolize, label, batch; adds the drained processes to `drained`."""
        with self._timed("drain"):
            drain = self.sampler.drain()
        with self._timed("build"):
            with self.lock:
                groups = by_process(drain.samples)
                processes = self.lifetimes.attribute(groups)
            # Off the lock: symbolizing reads and parses files a container controls
            # (binaries the announcer has not read yet, perf maps), and capturing
            # new processes must not wait for that. It changes no record; the
            # images' reads are published as the announcer's are (symbolizer.images).
            self.symbolizer.refresh()  # kernel modules may have come or gone
            self._count_python(drain)
            stacks = self.builder.symbolize(processes)
            batch = self._publish(drain, processes, stacks)
            drained.update(groups)
        with self._timed("ship"):
            self.shipper.submit(batch)  # queued (spooled); the sender thread sends it
        # Counted once its batch is queued: a scrape never sees a drain whose
        # batch is not yet pending (drains now follow each other at once when late).
        self.stats.drains += 1

    def _publish(
        self,
        drain: Drain,
        processes: list[Attributed],
        stacks: dict[ProcessGeneration, Counter[Stack]],
    ) -> Batch:
        """Label, count and batch under the lock (the drain ends for the table once per
        tick, with the network drain's processes: see tick)."""
        with self.lock:
            labels = self.builder.label(processes)
            self._account(drain, [s for p, counts in stacks.items() if p in labels for s in counts])
            window = Window(drain.start_ns, drain.end_ns)
            return self.builder.to_batch(window, stacks, labels, self.counters(drain))

    def _count_python(self, drain: Drain) -> None:
        """Count the samples of Python processes, with Python frames or without."""
        if self.python is not None:
            self.python.count_samples(
                (s.process.pid, s.count, bool(s.python and s.python.frames)) for s in drain.samples
            )

    def _tick_network(self, network: NetworkSide, drained: set[ProcessGeneration]) -> None:
        with self._timed("network_drain"):
            drain = network.tracer.drain()
        with self._timed("network_build"):
            with self.lock:
                groups, comms = network_processes(drain)
                processes = self.lifetimes.attribute(groups, comms)
            stacks = network.builder.symbolize(processes)  # off the lock, as _tick_cpu's
            with self.lock:
                batch = network.builder.build(drain, processes, stacks, _network_counters(drain))
                drained.update(groups)
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
        return {PROCESS_TABLE: self.processes}

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
    tracer: NetworkTracer,
    programs: Programs,
    symbolizer: Symbolizer,
    labels: LabelProvider,
    peers: PeerResolver,
    stats: AgentStats,
) -> NetworkSide | None:
    """Start the network tracer (compiled into `programs`); without it the agent still
    profiles CPU."""
    try:
        tracer.attach(programs)
    except Exception as error:  # BCC raises bare Exceptions for load errors
        log.error("network tracing is off: %s", error)
        with contextlib.suppress(Exception):
            tracer.suspend()
        return None
    stacks = BatchBuilder(
        symbolizer=symbolizer,
        labels=labels,
        period_ns=1,  # each stack's value is the nanoseconds its calls took
        profile_type=NET_WAIT.name,
        errors=stats.process_errors,
    )
    return NetworkSide(tracer, NetworkBatchBuilder(stacks, peers=peers))


def load_programs(
    sampler: CpuSampler, tracer: NetworkTracer | None
) -> tuple[Programs, NetworkTracer | None]:
    """Compile the BPF programs as one module; if the network tracer's does not compile
    (or its tracepoints cannot be read), the CPU sampler's alone."""
    if tracer is not None:
        try:
            return Programs([sampler.program(), tracer.program()]), tracer
        except Exception as error:  # BCC raises bare Exceptions for compile errors
            log.error("network tracing is off: %s", error)
    return Programs([sampler.program()]), None


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
    processes = ProcessTable(ProcessCaptures(symbolizer, cgroups=cgroups))
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
    try:
        programs, tracer = load_programs(sampler, NetworkTracer() if settings.network else None)
    except BaseException:
        if kubernetes is not None:
            kubernetes.close()
        raise
    # The network tracer attaches first: processes are announced only once the
    # agent runs, so sampling starts last, just before it does.
    try:
        network = None
        if tracer is not None:
            network = build_network(tracer, programs, symbolizer, labels, peers, stats)
        sampler.attach(programs)
    except BaseException:
        programs.close()
        if kubernetes is not None:
            kubernetes.close()
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
        programs,
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
        *agent.symbolizer.collectors(PREFIX),
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
    cgroups = agent.processes.cgroups
    sources: list[CacheSizes] = [
        lambda: {name: len(table) for name, table in tables.items()},
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
