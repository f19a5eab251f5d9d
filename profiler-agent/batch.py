"""Turns one drain of the kernel maps into a wire `Batch`: symbolize, attribute, group.

Symbolization is per process (user frames, against the memory image captured
while the process lived) and shared (kernel frames); each distinct address is
resolved once per drain.
"""

import uuid
from collections import defaultdict
from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import Protocol

from podflame.agent.labels import LabelProvider, ProcessIdentity
from podflame.agent.processes import ProcessRecord, ProcessTable
from podflame.agent.sampler import Drain, ProcessGeneration, SampleCount
from podflame.model import Batch, Series, StackValue, kernel_frame
from podflame.symbolizer import ProcessImage

NO_STACK = "[no stack]"
# The wire format's limit on a frame name (model.wire); some C++ template
# instantiations demangle to longer names.
MAX_FRAME_CHARS = 4096
TRUNCATED = "..."


class StackSymbolizer(Protocol):
    def kernel(self, addresses: Sequence[int]) -> list[str]: ...

    def resolve(self, image: ProcessImage | None, addresses: Sequence[int]) -> list[str]: ...

    def is_stale(self, image: ProcessImage | None, addresses: Sequence[int]) -> bool: ...


@dataclass
class BatchBuilder:
    symbolizer: StackSymbolizer
    processes: ProcessTable
    labels: LabelProvider
    period_ns: int
    profile_type: str = "cpu"

    def build(
        self,
        drain: Drain,
        counters: dict[str, int],
        *,
        seen: Set[ProcessGeneration] = frozenset(),
    ) -> Batch:
        """`seen`: processes active in this interval besides those in the samples."""
        kernel_names = self._kernel_names(drain.samples)
        stacks: dict[tuple[str, ...], int] = {}
        grouped = _by_process(drain.samples)
        series = [
            self._series(self.processes.lookup(process), samples, kernel_names, stacks)
            for process, samples in grouped.items()
        ]
        self.processes.end_drain(set(grouped) | seen)
        return Batch(
            batch_id=uuid.uuid4().hex,
            profile_type=self.profile_type,
            period=self.period_ns,
            start_time_ns=drain.start_ns,
            end_time_ns=drain.end_ns,
            stacks=[list(frames) for frames in stacks],
            series=series,
            counters=counters,
        )

    def _kernel_names(self, samples: list[SampleCount]) -> dict[int, str]:
        addresses = sorted({a for s in samples for a in s.kernel_stack})
        names = self.symbolizer.kernel(addresses)
        return {a: _bounded(kernel_frame(n)) for a, n in zip(addresses, names, strict=True)}

    def _series(
        self,
        record: ProcessRecord,
        samples: list[SampleCount],
        kernel_names: dict[int, str],
        stacks: dict[tuple[str, ...], int],
    ) -> Series:
        addresses = sorted({a for s in samples for a in s.user_stack})
        if self.symbolizer.is_stale(record.image, addresses):
            # Reading the memory map again only when an address needs it keeps
            # the drain cheap for the many processes whose map never changes.
            self.processes.refresh(record)
        resolved = self.symbolizer.resolve(record.image, addresses)
        names = {a: _bounded(n) for a, n in zip(addresses, resolved, strict=True)}
        values: dict[int, int] = defaultdict(int)
        for sample in samples:
            # BPF walks leaf first; the wire format is root first, kernel frames
            # below (leafward of) the user frames that called into the kernel.
            frames = tuple(names[a] for a in reversed(sample.user_stack)) + tuple(
                kernel_names[a] for a in reversed(sample.kernel_stack)
            )
            index = stacks.setdefault(frames or (NO_STACK,), len(stacks))
            values[index] += sample.count * self.period_ns
        return Series(
            labels=self._labels(record, samples[0].comm),
            samples=[StackValue(stack=i, value=v) for i, v in values.items()],
        )

    def labels_of(self, process: ProcessGeneration, comm: str) -> dict[str, str]:
        """The labels a series of `process` carries (`comm`: the kernel's name for it)."""
        return self._labels(self.processes.lookup(process), comm)

    def _labels(self, record: ProcessRecord, comm: str) -> dict[str, str]:
        identity = ProcessIdentity(
            pid=record.pid,
            # The kernel reports the sampled thread's name; the process's own
            # name wins when it was captured.
            comm=record.comm or comm,
            start_ticks=record.start_ticks,
            cgroup=record.cgroup,
        )
        return self.labels.labels(identity)


def _by_process(samples: list[SampleCount]) -> dict[ProcessGeneration, list[SampleCount]]:
    grouped: dict[ProcessGeneration, list[SampleCount]] = defaultdict(list)
    for sample in samples:
        grouped[sample.process].append(sample)
    return grouped


def _bounded(frame: str) -> str:
    """A frame name the wire format accepts: a batch with a longer one would be rejected whole."""
    if len(frame) <= MAX_FRAME_CHARS:
        return frame
    return frame[: MAX_FRAME_CHARS - len(TRUNCATED)] + TRUNCATED
