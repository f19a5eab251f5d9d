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


@dataclass(frozen=True, slots=True, weakref_slot=True, eq=False)
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
    # Computed once: ingest hashes and compares the frames of thousands of stacks.
    _hash: int = field(init=False, repr=False, default=0)
    _plain: bool = field(init=False, repr=False, default=False)
    # Equal for equal frames, and hashed and compared by C code (the label of a plain
    # frame, else the fields as a tuple): what a dict of many stacks is keyed by.
    key: object = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        # A plain str: an enum member hashes by its member name, not its value.
        if type(self.kind) is not str:
            object.__setattr__(self, "kind", str(self.kind))
        fields = self._fields()
        plain = self._says_no_more_than_its_label()
        object.__setattr__(self, "_hash", hash(fields))
        object.__setattr__(self, "_plain", plain)
        object.__setattr__(self, "key", self.label if plain else fields)

    def _fields(self) -> tuple[str, str, str, int | None, str, int, bool]:
        return (self.kind, self.name, self.module, self.offset, self.file, self.line, self.resolved)

    @property
    def fields(self) -> tuple[str, str, str, int | None, str, int, bool]:
        """(kind, name, module, offset, file, line, resolved): equal for equal frames."""
        return self._fields()

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Frame) or self._hash != other._hash:
            return False
        return self._fields() == other._fields()

    def _says_no_more_than_its_label(self) -> bool:
        """Whether `from_label(label)` is this frame (worked out without making one)."""
        if self.file or self.line:
            return False
        found = _UNRESOLVED.fullmatch(self.name) if "+0x" in self.name else None
        if self.kind == FrameKind.NATIVE and found is not None:
            offset = int(found["offset"], 16)
            return not self.resolved and (self.module, self.offset) == (found["module"], offset)
        if self.module or self.offset is not None:
            return False
        named = self.name != UNKNOWN_FRAME
        return self.kind in (FrameKind.KERNEL, FrameKind.NATIVE) and self.resolved == named

    @property
    def label(self) -> str:
        """The frame as one string (flame graph node, folded text, UI)."""
        if self.kind == FrameKind.KERNEL:
            return self.name + KERNEL_FRAME_SUFFIX
        return self.name

    @property
    def is_plain(self) -> bool:
        """True when `label` says all there is: `from_label(label)` gives this frame back."""
        return self._plain

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
