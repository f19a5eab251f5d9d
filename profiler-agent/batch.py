"""Turns one drain of the kernel maps into a wire `Batch`: symbolize, attribute, group.

Symbolization is per process (user frames) and shared (kernel frames); each
distinct address is resolved once per drain.
"""

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from podflame.agent.processes import LabelProvider
from podflame.agent.sampler import Drain, SampleCount
from podflame.model import Batch, Series, StackValue, kernel_frame

NO_STACK = "[no stack]"


class StackSymbolizer(Protocol):
    def kernel(self, addresses: Sequence[int]) -> list[str]: ...

    def user(self, pid: int, addresses: Sequence[int]) -> list[str]: ...


@dataclass
class BatchBuilder:
    symbolizer: StackSymbolizer
    labels: LabelProvider
    period_ns: int
    profile_type: str = "cpu"

    def build(self, drain: Drain, counters: dict[str, int]) -> Batch:
        kernel_names = self._kernel_names(drain.samples)
        stacks: dict[tuple[str, ...], int] = {}
        series = [
            self._series(pid, samples, kernel_names, stacks)
            for pid, samples in _by_process(drain.samples).items()
        ]
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
        return {a: kernel_frame(n) for a, n in zip(addresses, names, strict=True)}

    def _series(
        self,
        pid: int,
        samples: list[SampleCount],
        kernel_names: dict[int, str],
        stacks: dict[tuple[str, ...], int],
    ) -> Series:
        addresses = sorted({a for s in samples for a in s.user_stack})
        names = dict(zip(addresses, self.symbolizer.user(pid, addresses), strict=True))
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
            labels=self.labels.labels(pid, samples[0].comm),
            samples=[StackValue(stack=i, value=v) for i, v in values.items()],
        )


def _by_process(samples: list[SampleCount]) -> dict[int, list[SampleCount]]:
    grouped: dict[int, list[SampleCount]] = defaultdict(list)
    for sample in samples:
        grouped[sample.pid].append(sample)
    return grouped
