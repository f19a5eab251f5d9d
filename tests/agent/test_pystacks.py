"""Mixed stacks (pystacks.merge) and native counts split by Python stacks (with_python)."""

from podflame.agent.cpython import PythonFrame, RawFrame
from podflame.agent.cpython.bpfmaps import PythonSample, PythonStack
from podflame.agent.pystacks import PythonFrames, merge, python_frame
from podflame.agent.sampler import ProcessGeneration, SampleCount, with_python
from podflame.model.frames import UNKNOWN_FRAME, Frame, FrameKind


def native(*names: str) -> tuple[Frame, ...]:
    return tuple(
        Frame(FrameKind.NATIVE, n, resolved=n != UNKNOWN_FRAME)
        if n != "libz+0x10"
        else Frame(FrameKind.NATIVE, n, module="libz", offset=0x10, resolved=False)
        for n in names
    )


def py(*names: str) -> tuple[Frame, ...]:
    return tuple(Frame(FrameKind.PYTHON, n, file="app.py", line=1) for n in names)


def names(stack: tuple[Frame, ...]) -> list[str]:
    return [frame.name for frame in stack]


def test_python_frames_replace_the_evaluation_loop_and_keep_what_it_called() -> None:
    stack = native(
        "_start",
        "Py_RunMain",
        "_PyEval_EvalFrameDefault",
        "_PyFunction_Vectorcall",
        "_PyEval_EvalFrameDefault.cold",
        "zlib_compress",
        "libz+0x10",
    )
    merged = merge(stack, py("<module>", "worker_step"))
    assert names(merged) == [
        "_start",
        "Py_RunMain",
        "<module>",
        "worker_step",
        "zlib_compress",
        "libz+0x10",
    ]
    assert merged[2].kind == FrameKind.PYTHON and merged[-1].kind == FrameKind.NATIVE


def test_frames_a_frame_pointer_walk_made_up_are_left_out() -> None:
    # An interpreter without frame pointers: the loop is the leaf, the rest is garbage.
    assert names(merge(native("[unknown]", "[unknown]", "_PyEval_EvalFrameDefault"), py("f"))) == [
        "f"
    ]
    # No loop frame at all: the leaf is a C function the loop called.
    stack = native("[unknown]", "_PyObject_Free")
    assert names(merge(stack, py("main", "f"))) == ["main", "f", "_PyObject_Free"]


def test_python_frames_are_named_once_and_unreadable_code_is_unknown() -> None:
    calls: list[RawFrame] = []

    def resolve(raw: RawFrame) -> PythonFrame | None:
        calls.append(raw)
        return PythonFrame("Omicron.pack", "/app/t.py", 98) if raw.code == 1 else None

    frames = PythonFrames(resolve)
    walked = (RawFrame(1, 10), RawFrame(2, 0))  # the running frame first
    first, again = frames.root_first(walked), frames.root_first(walked)
    assert first == again and len(calls) == 2
    assert first[1] == Frame(FrameKind.PYTHON, "Omicron.pack", file="/app/t.py", line=98)
    assert first[0] == python_frame(None) and not first[0].resolved


def test_a_native_count_is_split_by_the_python_stacks_it_ran() -> None:
    process = ProcessGeneration(7, 3)
    sample = SampleCount(process, "app", (0x10,), (), 10)
    key = (7, 3, b"app", 1, -1, 0)
    walked = (RawFrame(1, 0),)
    runs = [
        PythonSample(7, 3, b"app", 1, -1, 0, walked, True, 6),
        PythonSample(7, 3, b"app", 1, -1, 0, (), False, 3),
        PythonSample(7, 3, b"app", 2, -1, 0, walked, True, 5),  # another native sample
    ]
    split = list(with_python([(key, sample)], runs))
    assert [(s.count, s.python) for s in split] == [
        (6, PythonStack(walked, True)),
        (3, PythonStack((), False)),
        (1, None),
    ]
    # Never more than the native count (a Python count over it: the count map was full).
    over = [PythonSample(7, 3, b"app", 1, -1, 0, walked, True, 15)]
    assert [s.count for s in with_python([(key, sample)], over)] == [10]
