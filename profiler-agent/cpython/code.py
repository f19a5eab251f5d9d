"""Code objects to qualname, file and line, read from the process's memory.

A code object's names and line table do not change while it lives, so each is read once
and kept (in an LRU bounded by entries and bytes, keyed by its address: a freed code
object's address reused by another is a known, rare mislabel until the entry ages out).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .detect import Interpreter
from .layouts import Layout
from .linetable import line_for
from .memory import ProcessMemory, UnreadableMemory
from .walker import RawFrame

MAX_CODE_OBJECTS = 4096
MAX_CACHE_BYTES = 8 << 20  # per process: names and line tables, as read
MAX_NAME_CHARS = 1024
MAX_LINE_TABLE = 256 << 10
# PyASCIIObject: length at 16, the state bit field at 32 (kind: bits 2-4, compact: 5,
# ascii: 6). PyBytesObject: ob_size at 16, the bytes at 32. The same 3.6-3.13.
_STR_LENGTH, _STR_STATE = 16, 32
_BYTES_SIZE, _BYTES_DATA = 16, 32
_ENCODINGS = {1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}


class NotACode(Exception):
    """The address does not hold a code object we can read."""


@dataclass(frozen=True, slots=True)
class CodeInfo:
    qualname: str  # co_qualname (3.11+), co_name before
    filename: str
    firstlineno: int
    line_table: bytes


@dataclass(frozen=True, slots=True)
class PythonFrame:
    qualname: str
    filename: str
    line: int | None  # None: the interpreter records no line for the instruction


class CodeReader:
    """Resolves sampled frames of one process, a bounded cache of its code objects."""

    def __init__(
        self,
        memory: ProcessMemory,
        interpreter: Interpreter,
        capacity: int = MAX_CODE_OBJECTS,
        max_bytes: int = MAX_CACHE_BYTES,
    ) -> None:
        self.memory = memory
        self.interpreter = interpreter
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._codes: OrderedDict[int, CodeInfo] = OrderedDict()

    def resolve(self, frame: RawFrame) -> PythonFrame:
        """Raises `NotACode` if the code object cannot be read (gone, or not one)."""
        info = self.code(frame.code)
        layout = self.interpreter.layout
        offset = max(frame.offset, 0)
        line = line_for(layout.line_table, info.line_table, info.firstlineno, offset)
        return PythonFrame(info.qualname, info.filename, line)

    def code(self, address: int) -> CodeInfo:
        info = self._codes.get(address)
        if info is not None:
            self._codes.move_to_end(address)
            return info
        try:
            info = _read_code(self.memory, self.interpreter, address)
        except UnreadableMemory as exc:
            raise NotACode(str(exc)) from exc
        self._codes[address] = info
        self.nbytes += _size(info)
        while len(self._codes) > self.capacity or (self.nbytes > self.max_bytes and self._codes):
            self.nbytes -= _size(self._codes.popitem(last=False)[1])
        return info

    def __len__(self) -> int:
        return len(self._codes)


def _size(info: CodeInfo) -> int:
    return len(info.line_table) + 4 * (len(info.qualname) + len(info.filename)) + 128


def _read_code(memory: ProcessMemory, interpreter: Interpreter, address: int) -> CodeInfo:
    layout = interpreter.layout
    if memory.pointer(address + layout.object_type) != interpreter.code_type:
        raise NotACode(f"{address:#x} is not a code object")
    name_field = layout.code_qualname if layout.code_qualname is not None else layout.code_name
    return CodeInfo(
        qualname=read_str(memory, layout, memory.pointer(address + name_field)),
        filename=read_str(memory, layout, memory.pointer(address + layout.code_filename)),
        firstlineno=memory.i32(address + layout.code_firstlineno),
        line_table=_read_bytes(memory, memory.pointer(address + layout.code_linetable)),
    )


def read_str(memory: ProcessMemory, layout: Layout, address: int) -> str:
    """A compact str object's text (all code objects' names are compact), cut at
    MAX_NAME_CHARS characters."""
    header = memory.read(address, _STR_STATE + 4)
    length = int.from_bytes(header[_STR_LENGTH : _STR_LENGTH + 8], "little", signed=True)
    state = int.from_bytes(header[_STR_STATE:], "little")
    kind, compact, ascii_only = (state >> 2) & 7, state >> 5 & 1, state >> 6 & 1
    if not compact or kind not in _ENCODINGS or length < 0:
        raise NotACode(f"{address:#x}: not a compact string")
    length = min(length, MAX_NAME_CHARS)
    if ascii_only:
        return memory.read(address + layout.ascii_data, length).decode("ascii", "replace")
    data = memory.read(address + layout.compact_data, length * kind)
    return data.decode(_ENCODINGS[kind], "replace")


def _read_bytes(memory: ProcessMemory, address: int) -> bytes:
    size = int.from_bytes(memory.read(address + _BYTES_SIZE, 8), "little", signed=True)
    if not 0 <= size <= MAX_LINE_TABLE:
        raise NotACode(f"{address:#x}: a line table of {size} bytes")
    return memory.read(address + _BYTES_DATA, size)
