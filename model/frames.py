"""The frame record: one function (or address) of a stack, typed.

A frame says what kind of code it is (kernel, native, Python, JIT ...), its
name, and where it came from (module and file offset, source file and line)
when that is known. `resolved` is False for a frame the symbolizer could not
name: its name is then ``module+0xOFFSET`` or ``[unknown]``.

Frames become strings only at the edges: `label` is the name the flame graph,
the folded export and the UI show (kernel frames end in ``_[k]``, Brendan
Gregg's convention). `Frame.from_label` reads such a string back: stacks
stored as strings before frames were typed, and batches of wire version 1.
"""

import re
from dataclasses import dataclass, field
from enum import StrEnum

# Brendan Gregg's FlameGraph convention: kernel frames carry a "_[k]" suffix,
# so they stay recognisable in folded text and any tool that reads it.
KERNEL_FRAME_SUFFIX = "_[k]"
UNKNOWN_FRAME = "[unknown]"
# How the symbolizer names a frame it cannot name: its module and file offset.
_UNRESOLVED = re.compile(r"(?P<module>.+)\+0x(?P<offset>[0-9a-f]+)")


class FrameKind(StrEnum):
    """The kinds of frame podflame makes; the wire accepts any short lowercase name,
    so a newer agent's kind reaches an older server as itself."""

    KERNEL = "kernel"
    NATIVE = "native"  # machine code in a file (ELF)
    JIT = "jit"  # machine code in anonymous memory, named by a perf map
    PYTHON = "python"  # an interpreter's frame: qualified name, file and line


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Frame:
    """One frame. Immutable and hashable: stacks are tuples of frames, deduplicated.

    `offset` is the file offset of a frame that could not be named (its identity);
    a named frame leaves it None, so that every sample in one function is one frame.
    """

    kind: str
    name: str
    module: str = ""
    offset: int | None = None
    file: str = ""
    line: int = 0
    resolved: bool = True
    # Computed once: a stack's frames are hashed each time a stack is looked up.
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        # A plain str: an enum member hashes by its member name, not its value.
        object.__setattr__(self, "kind", str(self.kind))
        key = (self.kind, self.name, self.module, self.offset, self.file, self.line, self.resolved)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    @property
    def label(self) -> str:
        """The frame as one string (flame graph node, folded text, UI)."""
        if self.kind == FrameKind.KERNEL:
            return self.name + KERNEL_FRAME_SUFFIX
        return self.name

    @property
    def is_plain(self) -> bool:
        """True when `label` says all there is: `from_label(label)` gives this frame back."""
        return self == Frame.from_label(self.label)

    @classmethod
    def from_label(cls, label: str) -> "Frame":
        """The frame a string names (how stacks were written before frames were typed)."""
        if label.endswith(KERNEL_FRAME_SUFFIX):
            name = label[: -len(KERNEL_FRAME_SUFFIX)]
            return cls(FrameKind.KERNEL, name, resolved=name != UNKNOWN_FRAME)
        if label == UNKNOWN_FRAME:
            return cls(FrameKind.NATIVE, label, resolved=False)
        if "+0x" in label and (found := _UNRESOLVED.fullmatch(label)):
            module, offset = found["module"], int(found["offset"], 16)
            return cls(FrameKind.NATIVE, label, module=module, offset=offset, resolved=False)
        return cls(FrameKind.NATIVE, label)


def kernel_frame(name: str) -> str:
    return name + KERNEL_FRAME_SUFFIX


def is_kernel_frame(name: str) -> bool:
    return name.endswith(KERNEL_FRAME_SUFFIX)


def labels(frames: "tuple[Frame, ...] | list[Frame]") -> tuple[str, ...]:
    return tuple(frame.label for frame in frames)
