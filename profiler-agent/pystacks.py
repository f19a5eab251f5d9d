"""Mixed stacks: a sample's Python frames in place of the interpreter's evaluation loop.

The native stack of a CPython thread runs through the interpreter's evaluation loop
(`_PyEval_EvalFrameDefault`) once per Python call before 3.11, once per call from C
after. Its Python frames (walked in BPF, bpf/cpython.h) replace the part from the
outermost to the innermost evaluation-loop frame: the interpreter's call machinery in
between says nothing the Python frames do not. What ran before the first (startup,
a thread's start) stays below them, what the innermost Python frame called (a C
function such as `zlib.compress`, and what it called) stays above them, and kernel
frames stay on top: one stack, as `py-spy --native` shows.

Native frames root-side of the loop that could not be named are left out, and so are
frames above it at addresses in no mapping (`[unknown]`): in an interpreter built
without frame pointers they are what a frame-pointer walk read off the stack, not
calls. A native stack with no evaluation-loop frame at all (the walk never reached it:
the leaf is a C function the loop called) gets the Python frames below all of its
frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from podflame.agent.cpython import PythonFrame, RawFrame
from podflame.model.frames import UNKNOWN_FRAME, Frame, FrameKind
from podflame.model.wire import MAX_FRAME_CHARS
from podflame.symbolizer.text import display

# The evaluation loop's C functions, by the names the symbolizer gives them (GCC may
# split off a `.cold` part).
EVAL_LOOP = ("_PyEval_EvalFrameDefault", "PyEval_EvalFrameEx", "_PyEval_EvalFrame")
UNNAMED_PYTHON = Frame(FrameKind.PYTHON, UNKNOWN_FRAME, resolved=False)
TRUNCATED = "..."

Resolve = Callable[[RawFrame], PythonFrame | None]


def is_eval_loop(frame: Frame) -> bool:
    return frame.kind == FrameKind.NATIVE and frame.name.split(".", 1)[0] in EVAL_LOOP


def merge(native: Sequence[Frame], python: Sequence[Frame]) -> tuple[Frame, ...]:
    """One root-first stack of a sample's user `native` frames and its `python` frames
    (root first); kernel frames are added above by the caller."""
    loops = [i for i, frame in enumerate(native) if is_eval_loop(frame)]
    above = native[loops[-1] + 1 :] if loops else native
    below = native[: loops[0]] if loops else ()
    return (
        *(frame for frame in below if frame.resolved),
        *python,
        *(frame for frame in above if frame.name != UNKNOWN_FRAME),
    )


class PythonFrames:
    """One process's Python frames as frame records, each raw frame named once a drain."""

    def __init__(self, resolve: Resolve) -> None:
        self._resolve = resolve
        self._named: dict[RawFrame, Frame] = {}

    def root_first(self, frames: Sequence[RawFrame]) -> tuple[Frame, ...]:
        """The frames (walked running frame first) as records, the oldest first."""
        return tuple(self._frame(raw) for raw in reversed(frames))

    def _frame(self, raw: RawFrame) -> Frame:
        frame = self._named.get(raw)
        if frame is None:
            frame = self._named[raw] = python_frame(self._resolve(raw))
        return frame


def python_frame(named: PythonFrame | None) -> Frame:
    """The record of a Python frame (`[unknown]` if its code object did not read)."""
    if named is None:
        return UNNAMED_PYTHON
    return Frame(
        FrameKind.PYTHON,
        _bounded(named.qualname),
        file=_bounded(named.filename),
        line=named.line or 0,
    )


def _bounded(text: str) -> str:
    """Names and file names come from the process's memory: escaped and cut to the wire's
    limit (the reader already bounds them; this is the wire's own guard)."""
    text = display(text)
    if len(text) <= MAX_FRAME_CHARS:
        return text
    return text[: MAX_FRAME_CHARS - len(TRUNCATED)] + TRUNCATED
