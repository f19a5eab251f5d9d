"""One drain's steps after the kernel maps are read, as the agent's loop runs them
(Agent._tick_cpu), for tests that drive the steps without BPF."""

from podflame.agent.batch import BatchBuilder, Window
from podflame.agent.lifetimes import ProcessLifetimes, by_process
from podflame.agent.processes import ProcessTable
from podflame.agent.sampler import Drain
from podflame.model import Batch
from podflame.symbolizer import Symbolizer


def lifetimes_of(table: ProcessTable, builder: BatchBuilder) -> ProcessLifetimes:
    symbolizer = builder.symbolizer
    assert isinstance(symbolizer, Symbolizer)
    return ProcessLifetimes(table, symbolizer, builder.errors)


def drain_batch(lifetimes: ProcessLifetimes, builder: BatchBuilder, drain: Drain) -> Batch:
    """attribute -> symbolize -> label -> batch, then the drain ends for the table."""
    groups = by_process(drain.samples)
    processes = lifetimes.attribute(groups)
    batch = builder.build(Window(drain.start_ns, drain.end_ns), processes, {})
    lifetimes.end(groups.keys())
    return batch
