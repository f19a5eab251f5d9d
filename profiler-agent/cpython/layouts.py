"""Where CPython keeps what a stack walk reads, per version.

3.6 to 3.12 publish nothing at run time, so their struct layouts are a table here:
offsets read from each release's own headers (as compiled: the DWARF of pyenv builds of
3.6.15, 3.7.16, 3.8.18, 3.9.18, 3.10.13, 3.11.7 and 3.12.1 on x86_64; other 64-bit
Linux targets lay C structs out alike, untested). The fields a walk reads did not move
within a minor release.
3.13 and later describe themselves: `_PyRuntime` starts with `_Py_DebugOffsets`, read by
`layout_from_debug_offsets`.

The walk: runtime (or 3.6's `interp_head`) -> first interpreter -> its thread-state
list -> per thread its current frame -> frame by frame to the oldest, each giving a code
object and an instruction position. A code object gives qualname (name before 3.11),
filename, first line and the line table that turns the position into a line.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, replace
from types import MappingProxyType


class Position(enum.Enum):
    """What a frame's instruction field holds, and how it becomes a code byte offset."""

    LASTI_BYTES = "lasti_bytes"  # 3.6-3.9: int f_lasti, a byte offset (-1 before the first)
    LASTI_UNITS = "lasti_units"  # 3.10: int f_lasti, in 2-byte code units
    PREV_INSTR = "prev_instr"  # 3.11, 3.12: pointer to the last instruction started
    INSTR_PTR = "instr_ptr"  # 3.13+: pointer to the instruction running (or next)


class LineTable(enum.Enum):
    LNOTAB = "lnotab"  # 3.6-3.9: co_lnotab
    LINETABLE_310 = "linetable_310"  # 3.10: co_linetable, (length, line delta) pairs
    LOCATIONS = "locations"  # 3.11+: the location table


@dataclass(frozen=True, slots=True)
class Layout:
    """Byte offsets of the fields the walk reads, for one CPython minor version."""

    version: tuple[int, int]
    runtime_interpreters_head: int | None  # in _PyRuntime; None: 3.6's interp_head symbol
    interp_threads_head: int
    tstate_next: int
    tstate_frame: int  # the frame, or (3.11/3.12) the cframe pointer
    cframe_current_frame: int | None  # 3.11/3.12: the frame within the cframe
    tstate_thread_id: int  # pthread_self() of the thread
    tstate_native_thread_id: int | None  # the kernel's tid (3.11+)
    frame_previous: int
    frame_code: int
    frame_position: int
    frame_owner: int | None  # 3.11+: who owns the frame (a C-stack shim is skipped)
    position: Position
    code_name: int
    code_qualname: int | None
    code_filename: int
    code_firstlineno: int
    code_linetable: int
    code_bytes: int  # 3.11+: where the instructions start; before: the co_code bytes object
    line_table: LineTable
    ascii_data: int  # where a compact ASCII string's characters start
    compact_data: int  # where a compact non-ASCII string's characters start
    object_type: int = 8  # ob_type in a PyObject (not in free-threaded builds)

    @property
    def code_inline(self) -> bool:
        """The instructions are inside the code object (3.11+), not a bytes object."""
        return self.position in (Position.PREV_INSTR, Position.INSTR_PTR)


# Owner of a _PyInterpreterFrame that is the C stack's entry shim (3.12+), not Python code.
FRAME_OWNED_BY_CSTACK = 3
# Before 3.12 strings carry a wstr pointer: PyASCIIObject is 48 bytes and
# PyCompactUnicodeObject 72; from 3.12, 40 and 56.

_V36 = Layout(
    version=(3, 6),
    runtime_interpreters_head=None,
    interp_threads_head=8,
    tstate_next=8,
    tstate_frame=24,
    cframe_current_frame=None,
    tstate_thread_id=152,
    tstate_native_thread_id=None,
    frame_previous=24,
    frame_code=32,
    frame_position=120,
    frame_owner=None,
    position=Position.LASTI_BYTES,
    code_name=104,
    code_qualname=None,
    code_filename=96,
    code_firstlineno=36,
    code_linetable=112,
    code_bytes=40,
    line_table=LineTable.LNOTAB,
    ascii_data=48,
    compact_data=72,
)
_V37 = replace(
    _V36, version=(3, 7), runtime_interpreters_head=24, tstate_thread_id=176, frame_position=104
)
_V38 = replace(
    _V37,
    version=(3, 8),
    runtime_interpreters_head=32,
    code_name=112,
    code_filename=104,
    code_firstlineno=40,
    code_linetable=120,
    code_bytes=48,
)
_V39 = replace(_V38, version=(3, 9))
_V310 = replace(
    _V39,
    version=(3, 10),
    frame_position=96,
    position=Position.LASTI_UNITS,
    line_table=LineTable.LINETABLE_310,
)
_V311 = Layout(
    version=(3, 11),
    runtime_interpreters_head=40,
    interp_threads_head=16,
    tstate_next=8,
    tstate_frame=56,
    cframe_current_frame=8,
    tstate_thread_id=152,
    tstate_native_thread_id=160,
    frame_previous=48,
    frame_code=32,
    frame_position=56,
    frame_owner=69,
    position=Position.PREV_INSTR,
    code_name=120,
    code_qualname=128,
    code_filename=112,
    code_firstlineno=72,
    code_linetable=136,
    code_bytes=184,
    line_table=LineTable.LOCATIONS,
    ascii_data=48,
    compact_data=72,
)
_V312 = replace(
    _V311,
    version=(3, 12),
    interp_threads_head=72,
    cframe_current_frame=0,
    tstate_thread_id=136,
    tstate_native_thread_id=144,
    frame_previous=8,
    frame_code=0,
    frame_owner=70,
    code_firstlineno=68,
    code_bytes=192,
    ascii_data=40,
    compact_data=56,
)

TABLE: MappingProxyType[tuple[int, int], Layout] = MappingProxyType(
    {layout.version: layout for layout in (_V36, _V37, _V38, _V39, _V310, _V311, _V312)}
)

# _Py_DebugOffsets (3.13): the fields read, as offsets into it. Each sub-struct starts
# with its own size; every field is a uint64.
DEBUG_COOKIE = b"xdebugpy"
DEBUG_OFFSETS_SIZE = 584
_DEBUG_FIELDS = {
    "version": 8,
    "free_threaded": 16,
    "runtime_interpreters_head": 40,
    "interp_threads_head": 72,
    "tstate_next": 168,
    "tstate_current_frame": 184,
    "tstate_thread_id": 192,
    "tstate_native_thread_id": 200,
    "frame_previous": 232,
    "frame_executable": 240,
    "frame_instr_ptr": 248,
    "frame_owner": 264,
    "code_filename": 280,
    "code_name": 288,
    "code_qualname": 296,
    "code_linetable": 304,
    "code_firstlineno": 312,
    "code_adaptive": 344,
    "object_type": 360,
    "unicode_ascii_size": 560,
}
# Layouts the debug offsets are known to have: 3.14 inserted fields before these.
DEBUG_OFFSETS_MINORS = frozenset({13})
# An offset past this is not one of CPython's structs (the interpreter state is the
# largest read: its thread list sits at 7,344 bytes in 3.13.0).
_MAX_FIELD_OFFSET = 1 << 16


class UnsupportedLayout(ValueError):
    """The interpreter describes a layout this walker does not read. `reason` is a
    metric label: "unknown_version", "free_threaded" or "corrupt"."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def layout_from_debug_offsets(raw: bytes) -> Layout:
    """The layout `_Py_DebugOffsets` (the first bytes of `_PyRuntime`, 3.13+) describes.

    Everything in it is the process's memory, so nothing is trusted: the cookie, a
    known version, not free-threaded, offsets of a plausible size.
    """
    if len(raw) < DEBUG_OFFSETS_SIZE or raw[:8] != DEBUG_COOKIE:
        raise UnsupportedLayout("corrupt", "no _Py_DebugOffsets cookie")
    fields = {name: struct.unpack_from("<Q", raw, at)[0] for name, at in _DEBUG_FIELDS.items()}
    hexversion = fields.pop("version")
    major, minor = hexversion >> 24, (hexversion >> 16) & 0xFF
    if major != 3 or minor not in DEBUG_OFFSETS_MINORS:
        raise UnsupportedLayout("unknown_version", f"hex version {hexversion:#x}")
    if fields.pop("free_threaded") or fields["object_type"] != 8:
        raise UnsupportedLayout("free_threaded", "a free-threaded build")
    if any(value > _MAX_FIELD_OFFSET for value in fields.values()):
        raise UnsupportedLayout("corrupt", "an offset out of range")
    ascii_size = fields["unicode_ascii_size"]
    return Layout(
        version=(major, minor),
        runtime_interpreters_head=fields["runtime_interpreters_head"],
        interp_threads_head=fields["interp_threads_head"],
        tstate_next=fields["tstate_next"],
        tstate_frame=fields["tstate_current_frame"],
        cframe_current_frame=None,
        tstate_thread_id=fields["tstate_thread_id"],
        tstate_native_thread_id=fields["tstate_native_thread_id"],
        frame_previous=fields["frame_previous"],
        frame_code=fields["frame_executable"],
        frame_position=fields["frame_instr_ptr"],
        frame_owner=fields["frame_owner"],
        position=Position.INSTR_PTR,
        code_name=fields["code_name"],
        code_qualname=fields["code_qualname"],
        code_filename=fields["code_filename"],
        code_firstlineno=fields["code_firstlineno"],
        code_linetable=fields["code_linetable"],
        code_bytes=fields["code_adaptive"],
        line_table=LineTable.LOCATIONS,
        ascii_data=ascii_size,
        compact_data=ascii_size + 16,  # utf8_length and utf8 follow PyASCIIObject
    )
