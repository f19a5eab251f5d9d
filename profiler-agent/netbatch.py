"""Turns one network drain into a `net_wait` Batch: stacks, latency histograms, connections.

Stacks go through the CPU path's steps (BatchBuilder: the same symbolizer
and process labels, a value of nanoseconds per stack); the histograms and
connections carry the same process labels as the series.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from podflame.agent.batch import BatchBuilder, Stack, Window
from podflame.agent.lifetimes import Attributed, by_process
from podflame.agent.network import CallLatency, ConnectOutcome, NetworkDrain, Wait
from podflame.agent.peers import PeerResolver
from podflame.agent.programs import ProcessGeneration
from podflame.model import Batch, Connection, LatencyHistogram


@dataclass
class NetworkBatchBuilder:
    stacks: BatchBuilder  # profile_type "net_wait", period 1 (values are nanoseconds)
    peers: PeerResolver

    def symbolize(self, processes: Sequence[Attributed]) -> dict[ProcessGeneration, Counter[Stack]]:
        """The waits' stacks; it reads files a container controls, so the agent calls
        it without its lock (as the CPU drain's symbolize step)."""
        return self.stacks.symbolize(processes)

    def build(
        self,
        drain: NetworkDrain,
        processes: Sequence[Attributed],
        stacks: dict[ProcessGeneration, Counter[Stack]],
        counters: dict[str, int],
    ) -> Batch:
        """`processes`: those of `network_processes(drain)`, attributed; `stacks`: their
        waits symbolized."""
        labels = self.stacks.label(processes)
        window = Window(drain.start_ns, drain.end_ns)
        batch = self.stacks.to_batch(window, stacks, labels, counters)
        # A process whose labels could not be read loses its entries (counted).
        batch.latency = [
            LatencyHistogram(labels=labels[entry.process], **_measured(entry))
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
        peer = self.peers.peer(entry.address)
        return Connection(labels=labels, peer=peer, **_measured(entry))


def network_processes(
    drain: NetworkDrain,
) -> tuple[dict[ProcessGeneration, list[Wait]], dict[ProcessGeneration, str]]:
    """Every process in the drain with its waits (none for a process with only latencies
    or connections), and the kernel's name of each that has waits."""
    groups = by_process(drain.waits)
    for process in [e.process for e in drain.latency] + [e.process for e in drain.connections]:
        groups.setdefault(process, [])
    return groups, {wait.process: wait.comm for wait in drain.waits}


def _measured(entry: CallLatency | ConnectOutcome) -> dict[str, Any]:
    """An entry's fields but its process: the wire record's own (its labels stand for
    the process)."""
    return {f.name: getattr(entry, f.name) for f in fields(entry) if f.name != "process"}
