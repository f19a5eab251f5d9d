"""Turns one network drain into a `net_wait` Batch: stacks, latency histograms, connections.

Stacks go through the CPU path's BatchBuilder (the same symbolizer and
process labels, a value of nanoseconds per stack); the histograms and
connections carry the same process labels as the series.
"""

from dataclasses import dataclass

from podflame.agent.batch import BatchBuilder
from podflame.agent.network import CallLatency, ConnectOutcome, NetworkDrain
from podflame.agent.peers import PeerResolver
from podflame.agent.sampler import Drain, ProcessGeneration
from podflame.model import Batch, Connection, LatencyHistogram


@dataclass
class NetworkBatchBuilder:
    stacks: BatchBuilder  # profile_type "net_wait", period 1 (values are nanoseconds)
    peers: PeerResolver

    def build(self, drain: NetworkDrain, counters: dict[str, int]) -> Batch:
        labels = self._labels(drain)
        batch = self.stacks.build(
            Drain(start_ns=drain.start_ns, end_ns=drain.end_ns, samples=drain.waits),
            counters,
            seen=set(labels),
        )
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

    def _labels(self, drain: NetworkDrain) -> dict[ProcessGeneration, dict[str, str]]:
        """Labels of every process in the drain that has them, looked up once each."""
        comms = {wait.process: wait.comm for wait in drain.waits}
        processes = {e.process for e in drain.latency} | {e.process for e in drain.connections}
        labels = {p: self.stacks.labels_of(p, comms.get(p, "")) for p in processes}
        return {p: found for p, found in labels.items() if found is not None}

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
