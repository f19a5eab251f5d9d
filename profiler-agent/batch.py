"""Turns one drain of the kernel maps into a wire `Batch`: symbolize, attribute, group.

Symbolization is per process (user frames, against the memory image captured
while the process lived) and shared (kernel frames); each distinct address is
resolved once per drain. An error in one process's capture, symbolization or
labels costs that process's stacks for this drain (counted), not the batch.
"""

import uuid
from collections import defaultdict
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from typing import Protocol

from podflame.agent.failures import PROCESS_STAGES, CaughtErrors
from podflame.agent.labels import LabelProvider, ProcessIdentity
from podflame.agent.processes import ProcessRecord, ProcessTable
from podflame.agent.sampler import Drain, ProcessGeneration, SampleCount
from podflame.model import Batch, Series, StackValue, kernel_frame
from podflame.symbolizer import ProcessImage
from podflame.symbolizer.text import display

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
    errors: CaughtErrors = field(default_factory=lambda: CaughtErrors.of("process", PROCESS_STAGES))

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
            found
            for process, samples in grouped.items()
            if (found := self._series(process, samples, kernel_names, stacks)) is not None
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
        process: ProcessGeneration,
        samples: list[SampleCount],
        kernel_names: dict[int, str],
        stacks: dict[tuple[str, ...], int],
    ) -> Series | None:
        """The process's series; None if reading it failed (counted and logged)."""
        stage = "capture"
        try:
            record = self.processes.lookup(process)
            stage = "labels"
            labels = self._labels(record, samples[0].comm)
            stage = "symbolize"
            names = self._user_names(record, samples)
        except Exception as error:  # anything the process's data can provoke
            self.errors.record(stage, error, f"pid {process.pid}")
            return None
        values = _stack_values(samples, names, kernel_names, stacks, self.period_ns)
        return Series(labels=labels, samples=values)

    def _user_names(self, record: ProcessRecord, samples: list[SampleCount]) -> dict[int, str]:
        addresses = sorted({a for s in samples for a in s.user_stack})
        if self.symbolizer.is_stale(record.image, addresses):
            # Reading the memory map again only when an address needs it keeps
            # the drain cheap for the many processes whose map never changes.
            self.processes.refresh(record)
        resolved = self.symbolizer.resolve(record.image, addresses)
        return {a: _bounded(n) for a, n in zip(addresses, resolved, strict=True)}

    def labels_of(self, process: ProcessGeneration, comm: str) -> dict[str, str] | None:
        """The labels a series of `process` carries (`comm`: the kernel's name for it);
        None if reading them failed (counted and logged)."""
        try:
            return self._labels(self.processes.lookup(process), comm)
        except Exception as error:  # anything the process's data can provoke
            self.errors.record("labels", error, f"pid {process.pid}")
            return None

    def _labels(self, record: ProcessRecord, comm: str) -> dict[str, str]:
        identity = ProcessIdentity(
            pid=record.pid,
            # The kernel reports the sampled thread's name; the process's own
            # name wins when it was captured.
            comm=record.comm or comm,
            start_ticks=record.start_ticks,
            cgroup=record.cgroup,
        )
        labels = self.labels.labels(identity)
        return {name: _bounded(value) for name, value in labels.items()}


def _stack_values(
    samples: list[SampleCount],
    names: dict[int, str],
    kernel_names: dict[int, str],
    stacks: dict[tuple[str, ...], int],
    period_ns: int,
) -> list[StackValue]:
    """The process's value per stack; each distinct stack is added to `stacks` once."""
    values: dict[int, int] = defaultdict(int)
    for sample in samples:
        # BPF walks leaf first; the wire format is root first, kernel frames
        # below (leafward of) the user frames that called into the kernel.
        frames = tuple(names[a] for a in reversed(sample.user_stack)) + tuple(
            kernel_names[a] for a in reversed(sample.kernel_stack)
        )
        index = stacks.setdefault(frames or (NO_STACK,), len(stacks))
        values[index] += sample.count * period_ns
    return [StackValue(stack=i, value=v) for i, v in values.items()]


def _by_process(samples: list[SampleCount]) -> dict[ProcessGeneration, list[SampleCount]]:
    grouped: dict[ProcessGeneration, list[SampleCount]] = defaultdict(list)
    for sample in samples:
        grouped[sample.process].append(sample)
    return grouped


def _bounded(text: str) -> str:
    """A frame name or label value the wire format accepts: a batch with a longer
    one, or one that is not valid Unicode, would be rejected whole. The edges that
    read text decode it so already (symbolizer.text); this is the last guard."""
    text = display(text)
    if len(text) <= MAX_FRAME_CHARS:
        return text
    return text[: MAX_FRAME_CHARS - len(TRUNCATED)] + TRUNCATED
