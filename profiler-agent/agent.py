"""The agent's loop and its composition root: drain -> symbolize -> attribute -> ship."""

import dataclasses
import logging
import threading
from dataclasses import dataclass

from podflame.agent.batch import BatchBuilder
from podflame.agent.processes import ProcfsLabels
from podflame.agent.sampler import CpuSampler, Drain
from podflame.agent.settings import AgentSettings
from podflame.agent.shipper import Shipper
from podflame.symbolizer import Symbolizer

log = logging.getLogger(__name__)


@dataclass
class Agent:
    sampler: CpuSampler
    builder: BatchBuilder
    shipper: Shipper
    symbolizer: Symbolizer
    interval: float

    def run(self, stop: threading.Event) -> None:
        """Drain every interval until `stop` is set, then drain and ship once more."""
        try:
            while not stop.wait(self.interval):
                self.tick()
            self.tick()
        finally:
            self.sampler.close()

    def tick(self) -> None:
        drain = self.sampler.drain()
        self._log_drops(drain)
        self.symbolizer.refresh()  # kernel modules may have come or gone
        batch = self.builder.build(drain, self._counters(drain))
        self.shipper.ship(batch)
        log.debug(
            "drained %d samples in %d stacks from %d processes",
            drain.total_samples,
            len(batch.stacks),
            len(batch.series),
        )

    def _counters(self, drain: Drain) -> dict[str, int]:
        """This interval's sampling counters plus the agent's running totals."""
        counters = {"samples": drain.total_samples}
        counters.update({f"dropped_{reason}": n for reason, n in drain.drops.items()})
        for prefix, stats in (
            ("symbolizer", self.symbolizer.stats),
            ("shipper", self.shipper.stats),
        ):
            for name, value in dataclasses.asdict(stats).items():
                counters[f"{prefix}_{name}_total"] = value
        return counters

    @staticmethod
    def _log_drops(drain: Drain) -> None:
        lost = {reason: n for reason, n in drain.drops.items() if n}
        if lost:
            log.warning(
                "kernel could not record everything in the last interval: %s "
                "(of %d samples); the maps are sized from --frequency and --interval",
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
    symbolizer = Symbolizer()
    builder = BatchBuilder(
        symbolizer=symbolizer,
        labels=ProcfsLabels(node=settings.node_name),
        period_ns=sampler.period_ns,
    )
    shipper = Shipper(str(settings.server), max_pending=settings.max_pending_batches)
    sampler.start()
    return Agent(
        sampler=sampler,
        builder=builder,
        shipper=shipper,
        symbolizer=symbolizer,
        interval=settings.interval,
    )
