"""Python stacks of live CPython processes, walked from outside as the BPF program will.

One target process per interpreter found on the machine (3.6+: pyenv's and Debian's),
compared with what the process says of itself through sys._getframe.
"""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podflame.agent.cpython import CodeReader, PythonProcess, PythonProcesses, RawFrame
from tests.agent.pythons import interpreters, target, wait_sleeping

PYTHONS = interpreters()
if not PYTHONS:
    pytest.skip("no CPython 3.6+ on this machine", allow_module_level=True)


@pytest.fixture(scope="module", params=PYTHONS, ids=[label for label, _ in PYTHONS])
def blocked(request: pytest.FixtureRequest) -> Iterator[tuple[PythonProcess, dict[str, Any]]]:
    """The target stopped in Worker.method -> helper x3 -> stop_here, under one interpreter."""
    _, python = request.param
    with target(python, "block") as (process, report):
        wait_sleeping(process.pid)
        attached = PythonProcesses().attach(process.pid)
        assert attached is not None
        yield attached, report


def named(process: PythonProcess, frames: tuple[RawFrame, ...]) -> list[list[object]]:
    out: list[list[object]] = []
    for frame in frames:
        resolved = process.resolve(frame)
        assert resolved is not None
        out.append([resolved.qualname, resolved.filename, resolved.line])
    return out


def test_version_is_the_running_interpreters(blocked: tuple[PythonProcess, dict[str, Any]]) -> None:
    process, report = blocked
    assert list(process.interpreter.version) == report["version"]


def test_walked_stack_is_the_one_the_process_reports(
    blocked: tuple[PythonProcess, dict[str, Any]],
) -> None:
    process, report = blocked
    stacks = process.stacks()
    assert len(stacks) == 1 and stacks[0].complete
    assert named(process, stacks[0].frames) == report["frames"]
    assert process.errors.counts == {}


def test_qualnames_name_the_class_from_311(blocked: tuple[PythonProcess, dict[str, Any]]) -> None:
    process, _ = blocked
    names = [row[0] for row in named(process, process.stacks()[0].frames)]
    method = "Worker.method" if process.interpreter.version >= (3, 11) else "method"
    assert names[-3:] == [method, "main", "<module>"]
    assert names[:4] == ["stop_here", "helper", "helper", "helper"]


def test_code_objects_are_read_once(blocked: tuple[PythonProcess, dict[str, Any]]) -> None:
    process, _ = blocked
    frames = process.stacks()[0].frames
    named(process, frames)
    before = process.memory.bytes_read
    named(process, frames)
    assert process.memory.bytes_read == before  # all from the cache
    small = CodeReader(process.memory, process.interpreter, capacity=2)
    for frame in frames:
        small.resolve(frame)
    assert len(small) == 2
    one_code = CodeReader(process.memory, process.interpreter, max_bytes=1)
    for frame in frames:
        one_code.resolve(frame)
    assert len(one_code) == 0 and one_code.nbytes == 0  # each too big to keep


@pytest.mark.parametrize(("label", "python"), PYTHONS, ids=[label for label, _ in PYTHONS])
def test_each_busy_thread_has_its_own_stack(label: str, python: Path) -> None:
    """Four threads spinning in spin_a..spin_d: a thread's stack never shows another's
    function, and a walk finds all four (the thread holding the GIL changes under the
    walk, so a walk may cut one short: counted, not wrong)."""
    with target(python, "threads") as (process, report):
        attached = PythonProcesses().attach(process.pid)
        assert attached is not None
        wanted = {ident: name for name, ident in report["threads"].items()}
        complete_walks = 0
        for walk in range(40):
            if walk >= 5 and complete_walks:
                break
            seen: dict[int, str] = {}
            for stack in attached.stacks():
                names = {f.qualname for f in map(attached.resolve, stack.frames) if f}
                spins = names & set(wanted.values())
                if stack.thread_id in wanted:
                    assert spins <= {wanted[stack.thread_id]}, (label, stack.thread_id, names)
                    seen.update(dict.fromkeys([stack.thread_id], next(iter(spins), "")))
            complete_walks += all(seen.get(t) == name for t, name in wanted.items())
            time.sleep(0.002)
        assert complete_walks >= 1, label
        if attached.interpreter.version >= (3, 11):
            tids = {s.native_thread_id for s in attached.stacks()}
            tasks = {int(t.name) for t in Path(f"/proc/{process.pid}/task").iterdir()}
            assert tids == tasks


def test_a_process_gone_walks_as_nothing() -> None:
    """Attached while it lived, walked after it exited: no stacks, counted, no exception."""
    _, python = PYTHONS[-1]
    with target(python, "block") as (process, _):
        wait_sleeping(process.pid)
        attached = PythonProcesses().attach(process.pid)
        assert attached is not None
        frame = attached.stacks()[0].frames[0]
    assert process.poll() is not None
    assert attached.stacks() == []
    assert attached.errors.counts == {"unreadable": 1}
    fresh = CodeReader(attached.memory, attached.interpreter)
    process_gone = PythonProcess(
        attached.pid, attached.interpreter, attached.memory, fresh, attached.errors
    )
    assert process_gone.resolve(frame) is None
    assert attached.errors.counts == {"unreadable": 1, "bad_code_object": 1}
