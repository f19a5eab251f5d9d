"""Turns one network drain into a `net_wait` Batch: stacks, latency histograms, connections.

Stacks go through the CPU path's steps (BatchBuilder: the same symbolizer
and process labels, a value of nanoseconds per stack); the histograms and
connections carry the same process labels as the series.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from podflame.agent.batch import BatchBuilder, Window
from podflame.agent.lifetimes import Attributed, by_process
from podflame.agent.network import CallLatency, ConnectOutcome, NetworkDrain
from podflame.agent.peers import PeerResolver
from podflame.agent.sampler import ProcessGeneration, SampleCount
from podflame.model import Batch, Connection, LatencyHistogram


@dataclass
class NetworkBatchBuilder:
    stacks: BatchBuilder  # profile_type "net_wait", period 1 (values are nanoseconds)
    peers: PeerResolver

    def build(
        self, drain: NetworkDrain, processes: Sequence[Attributed], counters: dict[str, int]
    ) -> Batch:
        """`processes`: those of `network_processes(drain)`, attributed."""
        labels = self.stacks.label(processes)
        window = Window(drain.start_ns, drain.end_ns)
        batch = self.stacks.to_batch(window, self.stacks.symbolize(processes), labels, counters)
        # A process whose labels could not be read loses its entries (counted).
        batch.latency = [
            _histogram(entry, labels[entry.process])
            for entry in drain.latency
            if entry.process in labels
        ]
        batch.connections = [
            self._connection(entry, labels[entry.process])
            for entry in drain.connections
            if entry.process in labels
        ]
        return batch

    def _connection(self, entry: ConnectOutcome, labels: dict[str, str]) -> Connection:
        return Connection(
            labels=labels,
            address=entry.address,
            port=entry.port,
            result=entry.result,
            count=entry.count,
            max_ns=entry.max_ns,
            buckets=entry.buckets,
            peer=self.peers.peer(entry.address),
        )


def network_processes(
    drain: NetworkDrain,
) -> tuple[dict[ProcessGeneration, list[SampleCount]], dict[ProcessGeneration, str]]:
    """Every process in the drain with its waits (none for a process with only latencies
    or connections), and the kernel's name of each that has waits."""
    groups = by_process(drain.waits)
    for process in [e.process for e in drain.latency] + [e.process for e in drain.connections]:
        groups.setdefault(process, [])
    return groups, {wait.process: wait.comm for wait in drain.waits}


def _histogram(entry: CallLatency, labels: dict[str, str]) -> LatencyHistogram:
    return LatencyHistogram(
        labels=labels,
        syscall=entry.syscall,
        count=entry.count,
        errors=entry.errors,
        eagain=entry.eagain,
        sum_ns=entry.sum_ns,
        max_ns=entry.max_ns,
        buckets=entry.buckets,
    )
