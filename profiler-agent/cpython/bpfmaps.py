"""The agent's side of bpf/cpython.h: per-process offsets in, sampled Python stacks out.

`offsets_for` turns an `Interpreter` into the `struct py_offsets` the BPF program reads;
`read_python_slot` reads and clears one slot's Python stacks and counts after a flip. A
`PythonSample` is keyed like a native sample (pid, generation, comm, stack ids) and says
how many of that native sample's count ran which Python stack: the sampler splits the
native sample's count by them (`CpuSampler.drain`), and the batch puts their frames in
place of the interpreter's evaluation-loop frames (`podflame.agent.pystacks`).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podflame.agent.bpfmaps import read_and_clear, read_and_clear_counts

from .detect import Interpreter
from .layouts import Position
from .memory import ProcessMemory, UnreadableMemory
from .walker import RawFrame

PY_NONE = 0xFFFF
PY_MAX_FRAMES = 48  # as bpf/cpython.h
_POSITIONS = {
    Position.LASTI_BYTES: 0,
    Position.LASTI_UNITS: 1,
    Position.PREV_INSTR: 2,
    Position.INSTR_PTR: 2,
}
# glibc keeps the kernel's tid in struct pthread, whose address pthread_self() is; where
# depends on the glibc (x86_64: 720 for years). Looked for within this many bytes.
_PTHREAD_SEARCH = 2048


class PyOffsets(ctypes.Structure):
    _fields_ = [
        ("interpreters_head", ctypes.c_uint64),
        ("code_type", ctypes.c_uint64),
        ("interp_threads_head", ctypes.c_uint16),
        ("tstate_next", ctypes.c_uint16),
        ("tstate_frame", ctypes.c_uint16),
        ("cframe_current_frame", ctypes.c_uint16),
        ("tstate_thread_id", ctypes.c_uint16),
        ("tstate_native_thread_id", ctypes.c_uint16),
        ("pthread_tid", ctypes.c_uint16),
        ("frame_previous", ctypes.c_uint16),
        ("frame_code", ctypes.c_uint16),
        ("frame_position", ctypes.c_uint16),
        ("frame_owner", ctypes.c_uint16),
        ("code_bytes", ctypes.c_uint16),
        ("position", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 7),
    ]


class PyStack(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint64 * PY_MAX_FRAMES),
        ("offset", ctypes.c_int32 * PY_MAX_FRAMES),
        ("depth", ctypes.c_uint32),
        ("complete", ctypes.c_uint32),
    ]


class _NewStackEvent(ctypes.Structure):
    """struct py_new_stack in cpu_profile.bpf.c."""

    _fields_ = [
        ("pid", ctypes.c_uint32),
        ("depth", ctypes.c_uint32),
        ("code", ctypes.c_uint64 * PY_MAX_FRAMES),
    ]


@dataclass(frozen=True, slots=True)
class NewPythonStack:
    """A Python stack the BPF program saw for the first time in its slot: the code objects
    to name while the process lives."""

    pid: int
    codes: tuple[int, ...]  # without the C-stack shim frames (0)


def read_new_python_stack(data: Any) -> NewPythonStack:
    event = ctypes.cast(data, ctypes.POINTER(_NewStackEvent)).contents
    depth = min(int(event.depth), PY_MAX_FRAMES)
    return NewPythonStack(int(event.pid), tuple(c for c in event.code[:depth] if c))


@dataclass(frozen=True, slots=True)
class PythonStack:
    """The Python frames one sample ran, as walked in BPF."""

    frames: tuple[RawFrame, ...]  # the running frame first; () if the stack was lost
    complete: bool  # False: cut by the bound, or by memory that did not read as a frame


# The native sample's key, as the sampler reads it from the counts map: pid, generation,
# comm, user stack id, kernel stack id, unwound stack hash.
NativeKey = tuple[int, int, bytes, int, int, int]


@dataclass(frozen=True, slots=True)
class PythonSample:
    pid: int
    generation: int
    comm: bytes
    user_stack_id: int
    kernel_stack_id: int
    unwound_stack: int
    frames: tuple[RawFrame, ...]  # the running frame first; () if the stack was lost
    complete: bool
    count: int

    @property
    def native_key(self) -> NativeKey:
        return (
            self.pid,
            self.generation,
            self.comm,
            self.user_stack_id,
            self.kernel_stack_id,
            self.unwound_stack,
        )

    @property
    def stack(self) -> PythonStack:
        return PythonStack(self.frames, self.complete)


def native_key(key: Any) -> NativeKey:
    """The `NativeKey` of a BPF `struct sample_key`."""
    return (
        int(key.pid),
        int(key.generation),
        bytes(key.comm),
        int(key.user_stack_id),
        int(key.kernel_stack_id),
        int(key.unwound_stack),
    )


def _or_none(value: int | None) -> int:
    return PY_NONE if value is None else value


def offsets_for(interpreter: Interpreter, pthread_tid: int | None) -> PyOffsets:
    """The BPF program's view of `interpreter` (`pthread_tid` matters before 3.11)."""
    layout = interpreter.layout
    return PyOffsets(
        interpreters_head=interpreter.interpreters_head,
        code_type=interpreter.code_type,
        interp_threads_head=layout.interp_threads_head,
        tstate_next=layout.tstate_next,
        tstate_frame=layout.tstate_frame,
        cframe_current_frame=_or_none(layout.cframe_current_frame),
        tstate_thread_id=layout.tstate_thread_id,
        tstate_native_thread_id=_or_none(layout.tstate_native_thread_id),
        pthread_tid=_or_none(pthread_tid),
        frame_previous=layout.frame_previous,
        frame_code=layout.frame_code,
        frame_position=layout.frame_position,
        frame_owner=_or_none(layout.frame_owner),
        code_bytes=layout.code_bytes if layout.code_inline else 0,
        position=_POSITIONS[layout.position],
    )


def pthread_tid_offset(
    memory: ProcessMemory, interpreter: Interpreter, pid: int, proc: Path = Path("/proc")
) -> int | None:
    """Where the tid sits in the threads' struct pthread: the offsets at which every thread
    state's pthread holds a tid of the process, the smallest; None if there is none."""
    from .walker import Counts, walk_threads

    tids = {int(task.name) for task in (proc / str(pid) / "task").iterdir()}
    common: set[int] | None = None
    for stack in walk_threads(memory, interpreter, Counts()):
        try:
            raw = memory.read(stack.thread_id, _PTHREAD_SEARCH)
        except UnreadableMemory:
            return None
        found = {at for at in range(0, _PTHREAD_SEARCH, 4) if _u32(raw, at) in tids}
        common = found if common is None else common & found
    return min(common) if common else None


def _u32(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at : at + 4], "little")


def read_python_slot(bpf: Any, slot: int) -> list[PythonSample]:
    """Read and clear one slot's Python counts and stacks (after the flip)."""
    stacks = {
        int(getattr(key, "value", key)): _frames(value)
        for key, value in read_and_clear(bpf[f"py_stacks_{slot}".encode()])
    }
    counts = read_and_clear_counts(bpf[f"py_counts_{slot}".encode()])
    return list(_samples(counts, stacks))


def _frames(stack: Any) -> tuple[tuple[RawFrame, ...], bool]:
    depth = min(int(stack.depth), PY_MAX_FRAMES)
    codes, offsets = stack.code[:depth], stack.offset[:depth]
    # Code 0: a C-stack shim frame (3.12+), not Python code.
    frames = tuple(RawFrame(c, o) for c, o in zip(codes, offsets, strict=True) if c)
    return frames, bool(stack.complete)


def _samples(
    counts: Iterable[tuple[Any, int]], stacks: dict[int, tuple[tuple[RawFrame, ...], bool]]
) -> Iterable[PythonSample]:
    for key, count in counts:
        frames, complete = stacks.get(int(key.stack), ((), False))
        pid, generation, comm, user, kernel, unwound = native_key(key.native)
        yield PythonSample(
            pid=pid,
            generation=generation,
            comm=comm,
            user_stack_id=user,
            kernel_stack_id=kernel,
            unwound_stack=unwound,
            frames=frames,
            complete=complete,
            count=count,
        )
