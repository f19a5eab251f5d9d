"""The agent's loops and its composition root: drain -> symbolize -> attribute -> ship.

Two threads: the drain loop (every --interval) and the announcement loop,
which captures each new process as soon as the kernel side reports its first
sample. They share the symbolizer and the process table under one lock.
"""

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from podflame.agent.batch import BatchBuilder
from podflame.agent.cgroups import CgroupResolver
from podflame.agent.labels import CgroupLabels, CombinedLabels, HostLabels, LabelProvider
from podflame.agent.metrics import Sample
from podflame.agent.processes import ProcessTable
from podflame.agent.sampler import CpuSampler, Drain, ProcessGeneration
from podflame.agent.settings import AgentSettings
from podflame.agent.shipper import Shipper
from podflame.agent.stats import AgentStats, collect
from podflame.model import KERNEL_FRAME_SUFFIX, Batch
from podflame.symbolizer import Symbolizer, is_symbolized

if TYPE_CHECKING:
    from podflame.agent.kubernetes import KubernetesMetadata

log = logging.getLogger(__name__)

# The poll returns as soon as an event arrives; the timeout only bounds how
# long a stop request waits.
ANNOUNCE_POLL_MS = 500


@dataclass
class Agent:
    sampler: CpuSampler
    builder: BatchBuilder
    shipper: Shipper
    symbolizer: Symbolizer
    processes: ProcessTable
    interval: float
    # This node's pods (None off Kubernetes); also what the network tracer
    # asks for a peer's pod: kubernetes.pod_by_ip(ip).
    kubernetes: "KubernetesMetadata | None" = None
    stats: AgentStats = field(default_factory=AgentStats)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, stop: threading.Event) -> None:
        """Drain every interval until `stop` is set, then drain and ship once more."""
        announcer = threading.Thread(target=self._announce_loop, args=(stop,), name="announce")
        announcer.start()
        try:
            while not stop.wait(self.interval):
                self.tick()
        finally:
            stop.set()
            announcer.join()
        try:
            self._announce(self.sampler.poll(0))  # what is still in the ring buffers
            self.tick()
        finally:
            self.sampler.close()
            if self.kubernetes is not None:
                self.kubernetes.close()

    def _announce_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._announce(self.sampler.poll(ANNOUNCE_POLL_MS))

    def _announce(self, processes: list[ProcessGeneration]) -> None:
        if not processes:
            return
        with self.lock:
            for process in processes:
                self.processes.announce(process)
            self.stats.new_processes += len(processes)

    def tick(self) -> None:
        with self._timed("drain"):
            drain = self.sampler.drain()
        with self.lock, self._timed("build"):
            self.symbolizer.refresh()  # kernel modules may have come or gone
            batch = self.builder.build(drain, {})
            self._account(drain, batch)
            batch.counters = self.counters(drain)
        with self._timed("ship"):
            self.shipper.ship(batch)

    def _account(self, drain: Drain, batch: Batch) -> None:
        self.stats.drains += 1
        self.stats.samples += drain.total_samples
        self.stats.collided += drain.overflowed
        for reason, count in drain.drops.items():
            self.stats.dropped[reason] += count
        unsymbolized = sum(
            not all(is_symbolized(f.removesuffix(KERNEL_FRAME_SUFFIX)) for f in stack)
            for stack in batch.stacks
        )
        self.stats.stacks += len(batch.stacks)
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

    def metrics(self) -> list[Sample]:
        return collect(self.stats, self._stage_stats(), len(self.processes))

    def _stage_stats(self) -> dict[str, Any]:
        stages: dict[str, Any] = {
            "symbolizer": self.symbolizer.stats,
            "shipper": self.shipper.stats,
        }
        if self.kubernetes is not None:
            stages["kubernetes"] = self.kubernetes.stats
        return stages

    def _timed(self, stage: str) -> "_StageTimer":
        return _StageTimer(self.stats.seconds, stage)


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


def build_agent(settings: AgentSettings) -> Agent:
    """Composition root: wire the stages and start sampling (needs root and BPF)."""
    sampler = CpuSampler(
        frequency=settings.frequency,
        interval=settings.interval,
        kernel_stacks=settings.kernel_stacks,
    )
    symbolizer = Symbolizer(
        max_bytes=settings.symbol_cache_bytes, cache_dir=settings.symbol_cache_dir
    )
    cgroups = CgroupResolver()
    processes: ProcessTable = ProcessTable(symbolizer, cgroups=cgroups)
    kubernetes = _start_kubernetes(settings)
    providers: list[LabelProvider] = [HostLabels(node=settings.node_name), CgroupLabels(cgroups)]
    if kubernetes is not None:
        from podflame.agent.kubernetes import PodLabels

        providers.append(PodLabels(kubernetes.index, cgroups))
    builder = BatchBuilder(
        symbolizer=symbolizer,
        processes=processes,
        labels=CombinedLabels(providers),
        period_ns=sampler.period_ns,
    )
    shipper = Shipper(
        str(settings.server),
        max_pending=settings.max_pending_batches,
        token=settings.token,
        ca_file=settings.ca_file,
    )
    try:
        sampler.start()
    except BaseException:
        if kubernetes is not None:
            kubernetes.close()
        raise
    return Agent(
        sampler,
        builder,
        shipper,
        symbolizer,
        processes,
        interval=settings.interval,
        kubernetes=kubernetes,
    )


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
