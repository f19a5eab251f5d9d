"""The agent-to-server batch format (JSON, optionally gzip-compressed).

A batch holds the stacks seen during one drain interval once each, and per
process (one `Series` per label set) the value of every stack it was seen in.

Version 2 (typed frames): `frames` lists the batch's distinct frames once each
(kind, name, module, offset, file, line, resolved) and a stack is a list of
indexes into it. A stack may still be a list of strings (version 1, and
sources that only have names, such as Pyroscope pushes): each string is read
as `Frame.from_label` reads it.
"""

from collections.abc import Callable, Sequence
from itertools import chain
from operator import attrgetter
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from podflame.model.frames import Frame
from podflame.model.network import Connection, LatencyHistogram

WIRE_VERSION = 2
# The request header by which an agent says how often it has sent a body: "1" on the
# first send, which no server can hold yet, so the server does not look for it
# (server/batch_writer.py). Absent (other clients) or more: the server looks.
ATTEMPT_HEADER = "Podflame-Attempt"
MAX_FRAME_CHARS = 4096
# An offset or index the storage's signed 64-bit columns hold.
_MAX_INT64 = 2**63 - 1

FrameText = Annotated[str, Field(max_length=MAX_FRAME_CHARS)]
FrameIndex = Annotated[int, Field(ge=0, le=_MAX_INT64)]

Label = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class StackValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stack: int = Field(ge=0, description="Index into Batch.stacks.")
    value: int = Field(gt=0, description="Value in the profile type's unit.")


class WireFrame(BaseModel):
    """One frame (podflame.model.frames.Frame) as the wire carries it."""

    model_config = ConfigDict(extra="forbid")

    # Any short lowercase name: a newer agent's kind reaches an older server as itself.
    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="kernel, native, jit, ...")
    name: FrameText
    module: FrameText = ""
    offset: int | None = Field(default=None, ge=0, le=_MAX_INT64)
    file: FrameText = ""
    line: int = Field(default=0, ge=0, le=2**32 - 1)
    resolved: bool = True

    @classmethod
    def of(cls, frame: Frame) -> "WireFrame":
        return cls.model_construct(
            kind=frame.kind,
            name=frame.name,
            module=frame.module,
            offset=frame.offset,
            file=frame.file,
            line=frame.line,
            resolved=frame.resolved,
        )

    def frame(self) -> Frame:
        # The fields as one dict (pydantic keeps exactly the fields there): reading them
        # one by one off the model costs as much again as making the frame.
        return Frame(**self.__dict__)


# A frame's fields in Frame's order (kind, name, module, offset, file, line, resolved):
# what a server that keeps frames across batches finds them by (Frame.fields).
FrameFields = tuple[str, str, str, int | None, str, int, bool]
# Frames a server made for earlier batches, by their fields (None: not kept).
KnownFrames = Callable[[list[FrameFields]], list[Frame | None]]
_DICT = attrgetter("__dict__")


class Series(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: dict[Label, Annotated[str, Field(max_length=4096)]] = Field(
        description="Labels of the process, such as node, comm and pid."
    )
    samples: list[StackValue]


class Batch(BaseModel):
    """One drain interval of one agent."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(default=WIRE_VERSION, ge=1, le=WIRE_VERSION)
    batch_id: str = Field(
        min_length=8, max_length=64, description="Idempotency key: a retried batch is stored once."
    )
    profile_type: str = Field(default="cpu", description="A name from /api/v1/profile-types.")
    period: int = Field(gt=0, description="Value of one sample, in the profile type's unit.")
    start_time_ns: int = Field(ge=0, description="Start of the interval, Unix nanoseconds.")
    end_time_ns: int = Field(ge=0, description="End of the interval, Unix nanoseconds.")
    frames: list[WireFrame] = Field(
        default_factory=list, description="Version 2: the distinct frames the stacks refer to."
    )
    stacks: list[list[FrameIndex | FrameText]] = Field(
        description="Distinct stacks, frames root first: indexes into `frames` (version 2),"
        " or frame names (kernel frames end in '_[k]')."
    )
    series: list[Series]
    counters: dict[str, int] = Field(
        default_factory=dict, description="Agent counters for this interval, such as drops."
    )
    latency: list[LatencyHistogram] = Field(
        default_factory=list,
        description="Network system-call latency per process and call (net_wait batches).",
    )
    connections: list[Connection] = Field(
        default_factory=list,
        description="connect() outcomes per process and destination (net_wait batches).",
    )

    @model_validator(mode="after")
    def _check_references(self) -> "Batch":
        if self.end_time_ns < self.start_time_ns:
            raise ValueError("end_time_ns is before start_time_ns")
        if self.frames and self.version < 2:
            raise ValueError("frames need version 2")
        for s_index, stack in enumerate(self.stacks):
            if _may_refer_past(stack, len(self.frames)):
                for frame in stack:
                    if isinstance(frame, int) and frame >= len(self.frames):
                        raise ValueError(
                            f"stacks[{s_index}] refers to frame {frame},"
                            f" but the batch has {len(self.frames)} frames"
                        )
        for s_index, series in enumerate(self.series):
            for sample in series.samples:
                if sample.stack >= len(self.stacks):
                    raise ValueError(
                        f"series[{s_index}] refers to stack {sample.stack}, "
                        f"but the batch has {len(self.stacks)} stacks"
                    )
        return self

    def frame_records(self, known: KnownFrames | None = None) -> list[Frame]:
        """The frame table (version 2) as records, in order: what an index refers to.
        `known`: frames kept from earlier batches, so that only new ones are made (an
        agent sends its frames again in every batch)."""
        if known is None:
            return [frame.frame() for frame in self.frames]
        # Each model's field dict as a tuple, by C code (pydantic keeps them in order).
        fields: list[FrameFields] = list(map(tuple, map(dict.values, map(_DICT, self.frames))))
        found = known(fields)
        return [
            frame if frame is not None else wire.frame()
            for frame, wire in zip(found, self.frames, strict=True)
        ]

    def typed_stacks(
        self, records: list[Frame] | None = None, which: Sequence[int] | None = None
    ) -> list[tuple[Frame, ...]]:
        """The stacks (those at `which`, else all) as frame records, whichever form they
        came in. A frame read from a name or an index is one object for all the stacks
        that name it. `records`: frame_records(), if made already."""
        records = self.frame_records() if records is None else records
        stacks = self.stacks if which is None else [self.stacks[i] for i in which]
        # One lookup for both forms (an index is an int key, a name a str key), filled
        # once per distinct frame: each stack is then picked by C code, not frame by frame.
        lookup: dict[int | str, Frame] = dict(enumerate(records))
        for name in set(chain.from_iterable(stacks)).difference(lookup):
            if isinstance(name, str):  # indexes were checked against the frames
                lookup[name] = Frame.from_label(name)
        pick = lookup.__getitem__
        return [tuple(map(pick, stack)) for stack in stacks]

    def stack_keys(self, records: list[Frame]) -> list[tuple[object, ...]]:
        """Per stack, its frames' keys (Frame.key, the stack cache's key) without making
        a frame per name: a name's frame (Frame.from_label) says no more than the name,
        so its key is the name. (Were it not, a cached stack would only be missed.)"""
        lookup: dict[int | str, object] = dict(enumerate(record.key for record in records))
        names = set(chain.from_iterable(self.stacks)).difference(lookup)
        lookup.update(zip(names, names, strict=True))  # indexes were checked against the frames
        pick = lookup.__getitem__
        return [tuple(map(pick, stack)) for stack in self.stacks]


def _may_refer_past(stack: list[int | str], count: int) -> bool:
    """False when no index of `stack` reaches `count`: found by C code (max) for a
    stack of indexes only or of names only, the usual cases; a mixed one is checked."""
    try:
        top = max(stack, default=None)
    except TypeError:  # indexes and names: compared one by one
        return True
    return isinstance(top, int) and top >= count


def stacks_of(stacks: "list[tuple[Frame, ...]]") -> tuple[list[WireFrame], list[list[int]]]:
    """(the distinct frames, each stack as indexes into them): version 2's form."""
    index: dict[Frame, int] = {}
    indexed = [[index.setdefault(frame, len(index)) for frame in stack] for stack in stacks]
    return [WireFrame.of(frame) for frame in index], indexed
