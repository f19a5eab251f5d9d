"""The drain's steps after the kernel maps are read and processes attributed
(lifetimes.py): symbolize -> label -> batch.

Each step reads what the one before produced and changes no shared state:
`symbolize` turns a process's samples into stacks of typed frames (user frames
against the memory image captured while the process lived, kernel frames
shared, each distinct address resolved once per drain), `label` names the
processes, `to_batch` groups the two into a wire `Batch`. An error in one
process's symbolization or labels costs that process's stacks for this drain
(counted), not the batch.
"""

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from podflame.agent.cpython import PythonFrame, RawFrame
from podflame.agent.failures import PROCESS_STAGES, CaughtErrors
from podflame.agent.labels import LabelProvider, ProcessIdentity
from podflame.agent.lifetimes import Attributed, StackSample, user_addresses
from podflame.agent.programs import ProcessGeneration
from podflame.agent.pystacks import PythonFrames, merge
from podflame.model import Batch, Series, StackValue
from podflame.model.frames import KERNEL_FRAME_SUFFIX, Frame, FrameKind
from podflame.model.wire import MAX_FRAME_CHARS, stacks_of
from podflame.symbolizer import ProcessImage, Symbol
from podflame.symbolizer.text import display

NO_STACK = Frame(FrameKind.NATIVE, "[no stack]")
# Names longer than the wire format's limit (some C++ template instantiations
# demangle to longer ones) end in this.
TRUNCATED = "..."

Stack = tuple[Frame, ...]


class StackSymbolizer(Protocol):
    def kernel_symbols(self, addresses: Sequence[int]) -> list[Symbol]: ...

    def resolve_symbols(
        self, image: ProcessImage | None, addresses: Sequence[int]
    ) -> list[Symbol]: ...


class PythonResolver(Protocol):
    def resolve(self, frame: RawFrame) -> PythonFrame | None: ...


class PythonSource(Protocol):
    """The processes whose Python frames are walked (cpython.watch.PythonWatch)."""

    def process(self, pid: int, generation: int) -> PythonResolver | None: ...


@dataclass(frozen=True)
class Window:
    """The interval a batch covers."""

    start_ns: int
    end_ns: int


@dataclass
class BatchBuilder:
    symbolizer: StackSymbolizer
    labels: LabelProvider
    period_ns: int
    profile_type: str = "cpu"
    errors: CaughtErrors = field(default_factory=lambda: CaughtErrors.of("process", PROCESS_STAGES))
    # Names the Python frames of samples that ran some (None: stacks stay native).
    python: PythonSource | None = None

    def build(
        self, window: Window, processes: Sequence[Attributed], counters: dict[str, int]
    ) -> Batch:
        """The three steps in one call."""
        return self.to_batch(window, self.symbolize(processes), self.label(processes), counters)

    def symbolize(self, processes: Sequence[Attributed]) -> dict[ProcessGeneration, Counter[Stack]]:
        """Per process, the sample count of each of its stacks (root first); a process
        whose frames could not be named is left out (counted)."""
        kernel = self._kernel_frames([s for p in processes for s in p.samples])
        stacks: dict[ProcessGeneration, Counter[Stack]] = {}
        for attributed in processes:
            try:
                user = self._user_frames(attributed)
                python = self._python_frames(attributed)
                stacks[attributed.process] = _stacks(attributed.samples, user, kernel, python)
            except Exception as error:  # anything the process's data can provoke
                self.errors.record("symbolize", error, f"pid {attributed.process.pid}")
        return stacks

    def label(self, processes: Sequence[Attributed]) -> dict[ProcessGeneration, dict[str, str]]:
        """Per process, its labels; a process whose labels failed is left out (counted)."""
        labels: dict[ProcessGeneration, dict[str, str]] = {}
        for attributed in processes:
            try:
                labels[attributed.process] = self._labels(attributed)
            except Exception as error:  # anything the process's data can provoke
                self.errors.record("labels", error, f"pid {attributed.process.pid}")
        return labels

    def to_batch(
        self,
        window: Window,
        stacks: Mapping[ProcessGeneration, Counter[Stack]],
        labels: Mapping[ProcessGeneration, dict[str, str]],
        counters: dict[str, int],
    ) -> Batch:
        """The processes with stacks and labels as series; each distinct stack once."""
        index: dict[Stack, int] = {}
        series = [
            Series(labels=labels[process], samples=_values(counts, index, self.period_ns))
            for process, counts in stacks.items()
            if process in labels and counts
        ]
        frames, indexed = stacks_of(list(index))
        return Batch(
            batch_id=uuid.uuid4().hex,
            profile_type=self.profile_type,
            period=self.period_ns,
            start_time_ns=window.start_ns,
            end_time_ns=window.end_ns,
            frames=frames,
            stacks=indexed,
            series=series,
            counters=counters,
        )

    def _kernel_frames(self, samples: Sequence[StackSample]) -> dict[int, Frame]:
        addresses = sorted({a for s in samples for a in s.kernel_stack})
        symbols = self.symbolizer.kernel_symbols(addresses)
        return {a: _frame(FrameKind.KERNEL, s) for a, s in zip(addresses, symbols, strict=True)}

    def _user_frames(self, attributed: Attributed) -> dict[int, Frame]:
        addresses = user_addresses(attributed.samples)
        symbols = self.symbolizer.resolve_symbols(attributed.record.image, addresses)
        return {
            a: _frame(FrameKind.JIT if s.jit else FrameKind.NATIVE, s)
            for a, s in zip(addresses, symbols, strict=True)
        }

    def _python_frames(self, attributed: Attributed) -> PythonFrames | None:
        if self.python is None or not any(s.python for s in attributed.samples):
            return None
        process = attributed.process
        resolver = self.python.process(process.pid, process.generation)
        return PythonFrames(resolver.resolve) if resolver is not None else None

    def _labels(self, attributed: Attributed) -> dict[str, str]:
        record = attributed.record
        identity = ProcessIdentity(
            pid=record.pid,
            # The kernel reports the sampled thread's name; the process's own
            # name wins when it was captured.
            comm=record.comm or attributed.comm,
            start_ticks=record.start_ticks,
            cgroup=record.cgroup,
        )
        labels = self.labels.labels(identity)
        return {name: _bounded(value) for name, value in labels.items()}


def _stacks(
    samples: Sequence[StackSample],
    user: dict[int, Frame],
    kernel: dict[int, Frame],
    python: PythonFrames | None = None,
) -> Counter[Stack]:
    """The sample count of each stack of one process (with its Python frames merged in,
    given `python`)."""
    counts: Counter[Stack] = Counter()
    for sample in samples:
        # BPF walks leaf first; stacks are root first, kernel frames below
        # (leafward of) the user frames that called into the kernel.
        native = tuple(user[a] for a in reversed(sample.user_stack))
        if python is not None and sample.python is not None and sample.python.frames:
            native = merge(native, python.root_first(sample.python.frames))
        frames = native + tuple(kernel[a] for a in reversed(sample.kernel_stack))
        counts[frames or (NO_STACK,)] += sample.count
    return counts


def _values(counts: Counter[Stack], index: dict[Stack, int], period_ns: int) -> list[StackValue]:
    """A series' values; each distinct stack is added to `index` once."""
    return [
        StackValue(stack=index.setdefault(stack, len(index)), value=count * period_ns)
        for stack, count in counts.items()
    ]


def _frame(kind: FrameKind, symbol: Symbol) -> Frame:
    # A kernel frame's label adds its suffix: the name leaves room for it.
    room = MAX_FRAME_CHARS - (len(KERNEL_FRAME_SUFFIX) if kind == FrameKind.KERNEL else 0)
    return Frame(
        kind,
        _bounded(symbol.name, room),
        module=_bounded(symbol.module),
        offset=symbol.offset,
        resolved=symbol.resolved,
    )


def _bounded(text: str, most: int = MAX_FRAME_CHARS) -> str:
    """A frame name or label value the wire format accepts: a batch with a longer
    one, or one that is not valid Unicode, would be rejected whole. The edges that
    read text decode it so already (symbolizer.text); this is the last guard."""
    text = display(text)
    if len(text) <= most:
        return text
    return text[: most - len(TRUNCATED)] + TRUNCATED
