"""The walk of a CPython process's thread stacks, as the BPF program does it.

Per thread: its current frame, then frame by frame to the oldest, recording the code
object's address and the instruction's byte offset in it. That pair is what a sample
keeps (in BPF, and here); names and lines come later, per code object (`CodeReader`).
Every step is bounded: threads, frames per thread, and a frame seen twice (a cycle in
corrupted memory) ends the thread's walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .detect import Interpreter
from .layouts import FRAME_OWNED_BY_CSTACK, Layout, Position
from .memory import ProcessMemory, UnreadableMemory

MAX_THREADS = 256
MAX_FRAMES = 128


@dataclass(frozen=True, slots=True)
class RawFrame:
    """One Python frame as sampled: its code object and the instruction's byte offset in
    it (-1 before the first instruction ran)."""

    code: int
    offset: int


@dataclass(frozen=True, slots=True)
class ThreadStack:
    thread_id: int  # pthread_self() of the thread (threading.get_ident())
    native_thread_id: int | None  # the kernel's tid, where the interpreter keeps it (3.11+)
    frames: tuple[RawFrame, ...]  # the running frame first
    complete: bool  # False: cut by a bound or by memory that did not read as a frame


@dataclass(slots=True)
class Counts:
    """Events by reason (metric labels): what went wrong in walks, processes refused."""

    counts: dict[str, int] = field(default_factory=dict)

    def count(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1


def walk_threads(
    memory: ProcessMemory, interpreter: Interpreter, errors: Counts
) -> list[ThreadStack]:
    """The Python stack of every thread of the (first) interpreter."""
    layout = interpreter.layout
    stacks: list[ThreadStack] = []
    try:
        state = memory.pointer(
            memory.pointer(interpreter.interpreters_head) + layout.interp_threads_head
        )
    except UnreadableMemory:
        errors.count("unreadable")
        return stacks
    seen: set[int] = set()
    while state and len(stacks) < MAX_THREADS and state not in seen:
        seen.add(state)
        try:
            stacks.append(_thread(memory, interpreter, state, errors))
            state = memory.pointer(state + layout.tstate_next)
        except UnreadableMemory:
            errors.count("unreadable")
            break
    return stacks


def _thread(
    memory: ProcessMemory, interpreter: Interpreter, state: int, errors: Counts
) -> ThreadStack:
    layout = interpreter.layout
    thread_id = memory.pointer(state + layout.tstate_thread_id)
    native = None
    if layout.tstate_native_thread_id is not None:
        native = memory.pointer(state + layout.tstate_native_thread_id)
    frame = memory.pointer(state + layout.tstate_frame)
    if frame and layout.cframe_current_frame is not None:
        frame = memory.pointer(frame + layout.cframe_current_frame)
    frames, complete = _frames(memory, interpreter, frame, errors)
    return ThreadStack(thread_id, native, tuple(frames), complete)


def _frames(
    memory: ProcessMemory, interpreter: Interpreter, frame: int, errors: Counts
) -> tuple[list[RawFrame], bool]:
    layout = interpreter.layout
    frames: list[RawFrame] = []
    seen: set[int] = set()
    try:
        while frame:
            if frame in seen or len(seen) >= MAX_FRAMES:
                errors.count("cycle" if frame in seen else "too_deep")
                return frames, False
            seen.add(frame)
            if (
                layout.frame_owner is None
                or memory.read(frame + layout.frame_owner, 1)[0] != FRAME_OWNED_BY_CSTACK
            ):
                code = memory.pointer(frame + layout.frame_code)
                if memory.pointer(code + layout.object_type) != interpreter.code_type:
                    errors.count("not_code")
                    return frames, False
                frames.append(RawFrame(code, _offset(memory, layout, frame, code)))
            frame = memory.pointer(frame + layout.frame_previous)
    except UnreadableMemory:
        errors.count("unreadable")
        return frames, False
    return frames, True


def _offset(memory: ProcessMemory, layout: Layout, frame: int, code: int) -> int:
    """The byte offset in the code of the instruction the frame is at (-1: none yet)."""
    at = frame + layout.frame_position
    if layout.position is Position.LASTI_BYTES:
        return max(memory.i32(at), -1)
    if layout.position is Position.LASTI_UNITS:
        return max(memory.i32(at) * 2, -1)
    offset = memory.pointer(at) - (code + layout.code_bytes)
    return offset if offset >= 0 else -1
