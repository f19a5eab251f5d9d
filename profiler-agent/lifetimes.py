"""Process lifetimes at a drain, in one place: the agent's loop calls `attribute` when
a drain's samples are read and `end` once its batch is built.

`attribute` gives each drained process its record (captured now if the kernel
side's announcement was missed) and reads a running process's memory map again
when a sampled address lies outside it; `end` lets the table forget processes
that ended or went idle. Nothing else in the drain changes the process table:
symbolizing and labelling read the records they are given.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Protocol, TypeVar

from podflame.agent.cpython.bpfmaps import PythonStack
from podflame.agent.failures import CaughtErrors
from podflame.agent.processes import ProcessRecord, ProcessTable
from podflame.agent.programs import ProcessGeneration
from podflame.symbolizer import ProcessImage


class StackSample(Protocol):
    """What the drain's steps read of a sample: the CPU sampler's `SampleCount`, or the
    network tracer's `Wait` (whose count is nanoseconds)."""

    @property
    def process(self) -> ProcessGeneration: ...
    @property
    def comm(self) -> str: ...
    @property
    def user_stack(self) -> tuple[int, ...]: ...
    @property
    def kernel_stack(self) -> tuple[int, ...]: ...
    @property
    def count(self) -> int: ...
    @property
    def python(self) -> PythonStack | None: ...


Sample = TypeVar("Sample", bound=StackSample)


class StaleCheck(Protocol):
    def is_stale(self, image: ProcessImage | None, addresses: Sequence[int]) -> bool: ...


@dataclass(frozen=True)
class Attributed:
    """A drained process: its record, the kernel's name for it and its samples (none for
    a process that only has other entries, such as the network tracer's latencies)."""

    record: ProcessRecord
    comm: str
    samples: Sequence[StackSample]

    @property
    def process(self) -> ProcessGeneration:
        return self.record.process


def by_process(samples: Iterable[Sample]) -> dict[ProcessGeneration, list[Sample]]:
    grouped: dict[ProcessGeneration, list[Sample]] = defaultdict(list)
    for sample in samples:
        grouped[sample.process].append(sample)
    return dict(grouped)


def user_addresses(samples: Iterable[StackSample]) -> list[int]:
    """The distinct user addresses of `samples`, sorted."""
    return sorted({address for sample in samples for address in sample.user_stack})


@dataclass
class ProcessLifetimes:
    """The drain's view of the process table (the CPU and the network drains share it)."""

    table: ProcessTable
    images: StaleCheck
    errors: CaughtErrors

    def attribute(
        self,
        groups: Mapping[ProcessGeneration, Sequence[StackSample]],
        comms: Mapping[ProcessGeneration, str] | None = None,
    ) -> list[Attributed]:
        """Each process's record; a process whose capture fails is left out (counted).

        `comms`: the kernel's name of processes without samples in `groups`."""
        names = comms or {}
        found = (self._attribute_one(p, s, names.get(p, "")) for p, s in groups.items())
        return [attributed for attributed in found if attributed is not None]

    def _attribute_one(
        self, process: ProcessGeneration, samples: Sequence[StackSample], comm: str
    ) -> Attributed | None:
        try:
            record = self.table.lookup(process)
            if samples and self.images.is_stale(record.image, user_addresses(samples)):
                # Reading the memory map again only when an address needs it keeps
                # the drain cheap for the many processes whose map never changes.
                self.table.refresh(record)
        except Exception as error:  # anything the process's /proc files can provoke
            self.errors.record("capture", error, f"pid {process.pid}")
            return None
        return Attributed(record, samples[0].comm if samples else comm, samples)

    def end(self, drained: Set[ProcessGeneration]) -> None:
        """The drain is over: forget processes not drained for a while, or ended."""
        self.table.end_drain(set(drained))
