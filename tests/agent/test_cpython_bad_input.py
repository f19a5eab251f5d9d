"""What looks like CPython but is not, or memory that lies: refused or cut, counted, bounded;
never an exception out of the walker."""

import ctypes
import mmap
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from podflame.agent.cpython import ProcessMemory, PythonProcess, PythonProcesses, UnreadableMemory
from podflame.agent.cpython.code import MAX_NAME_CHARS
from podflame.agent.cpython.layouts import DEBUG_COOKIE
from podflame.agent.cpython.memory import MAX_READ, REFRESH_SECONDS, readable_ranges
from tests.agent.pythons import interpreters, target, wait_sleeping

PYTHONS = interpreters()
if not PYTHONS:
    pytest.skip("no CPython 3.6+ on this machine", allow_module_level=True)
IDS = [label for label, _ in PYTHONS]


def poke(pid: int, address: int, data: bytes) -> bytes:
    """Write into the process's memory (read-only pages too, as root); the old bytes."""
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
        mem.seek(address)
        old = mem.read(len(data))
        mem.seek(address)
        mem.write(data)
    return old


@contextmanager
def poked(pid: int, address: int, data: bytes) -> Iterator[None]:
    old = poke(pid, address, data)
    try:
        yield
    finally:
        poke(pid, address, old)


def leaf_frame(process: PythonProcess) -> int:
    """The running frame of the first thread, found as the walker finds it."""
    memory, interpreter = process.memory, process.interpreter
    layout = interpreter.layout
    head = memory.pointer(interpreter.interpreters_head)
    state = memory.pointer(head + layout.interp_threads_head)
    frame = memory.pointer(state + layout.tstate_frame)
    if layout.cframe_current_frame is not None:
        frame = memory.pointer(frame + layout.cframe_current_frame)
    return frame


def attach(pid: int) -> tuple[PythonProcesses, PythonProcess]:
    processes = PythonProcesses()
    process = processes.attach(pid)
    assert process is not None
    return processes, process


@pytest.mark.parametrize(("label", "python"), PYTHONS, ids=IDS)
def test_corrupted_frames_cut_the_walk(label: str, python: Path) -> None:
    """A frame whose previous is itself, a code pointer to something else, a line table
    pointer to nowhere, a name claiming a terabyte: each cut, counted, quick."""
    with target(python, "block") as (child, _):
        wait_sleeping(child.pid)
        _, process = attach(child.pid)
        layout = process.interpreter.layout
        frame = leaf_frame(process)
        started = time.monotonic()

        with poked(child.pid, frame + layout.frame_previous, struct.pack("<Q", frame)):
            stack = process.stacks()[0]
        assert len(stack.frames) == 1 and not stack.complete
        assert process.errors.counts == {"cycle": 1}

        with poked(child.pid, frame + layout.frame_code, struct.pack("<Q", frame)):
            stack = process.stacks()[0]
        assert stack.frames == () and not stack.complete
        assert process.errors.counts == {"cycle": 1, "not_code": 1}

        code = process.stacks()[0].frames[0].code
        with poked(child.pid, code + layout.code_linetable, struct.pack("<Q", 16)):
            assert attach(child.pid)[1].resolve(process.stacks()[0].frames[0]) is None
        name = layout.code_qualname or layout.code_name
        qualname = process.memory.pointer(code + name)
        with poked(child.pid, qualname + 16, struct.pack("<q", 1 << 40)):
            fresh = attach(child.pid)[1]
            resolved = fresh.resolve(fresh.stacks()[0].frames[0])
        # What follows the name in memory, up to the bound: wrong text, never more of it.
        assert resolved is not None and resolved.qualname.startswith("stop_here")
        assert len(resolved.qualname) == MAX_NAME_CHARS
        assert time.monotonic() - started < 2.0, label


def test_deep_recursion_is_cut_at_the_bound() -> None:
    _, python = PYTHONS[-1]
    code = "import sys\ndef r(n):\n    return r(n - 1) if n else sys.stdin.readline()\nr(300)\n"
    child = subprocess.Popen([str(python), "-c", code], stdin=subprocess.PIPE)
    try:
        time.sleep(0.05)
        wait_sleeping(child.pid)
        _, process = attach(child.pid)
        stack = process.stacks()[0]
        assert len(stack.frames) == 128 and not stack.complete
        assert process.errors.counts == {"too_deep": 1}
    finally:
        child.kill()
        child.wait()


def by_version(minor: int) -> list[tuple[str, Path]]:
    return [(label, path) for label, path in PYTHONS if f"3.{minor}" in label]


@pytest.mark.skipif(not by_version(12), reason="no CPython 3.12 here")
def test_an_unknown_version_is_refused_and_counted() -> None:
    _, python = by_version(12)[0]
    with target(python, "block") as (child, _):
        wait_sleeping(child.pid)
        _, process = attach(child.pid)
        version_at = _symbol_address(child.pid, "Py_Version")
        with poked(child.pid, version_at, struct.pack("<I", 0x036300F0)):
            processes = PythonProcesses()
            assert processes.attach(child.pid) is None
        assert processes.refused.counts == {"unknown_version": 1}
        assert process.stacks()[0].frames  # the old attachment is unaffected


@pytest.mark.skipif(not by_version(13), reason="no CPython 3.13 here")
@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (0, b"notdebug", "corrupt"),
        (8, struct.pack("<Q", 0x036300F0), "unknown_version"),
        (16, struct.pack("<Q", 1), "free_threaded"),
        (40, struct.pack("<Q", 1 << 40), "corrupt"),
    ],
    ids=["cookie", "version", "free_threaded", "offset"],
)
def test_debug_offsets_are_checked(offset: int, value: bytes, reason: str) -> None:
    _, python = by_version(13)[0]
    with target(python, "block") as (child, _):
        wait_sleeping(child.pid)
        runtime = _symbol_address(child.pid, "_PyRuntime")
        assert ProcessMemory.attach(child.pid).read(runtime, 8) == DEBUG_COOKIE
        with poked(child.pid, runtime + offset, value):
            processes = PythonProcesses()
            assert processes.attach(child.pid) is None
        assert processes.refused.counts == {reason: 1}


def _symbol_address(pid: int, name: str) -> int:
    from podflame.agent.cpython.detect import _candidates, _load_bias
    from podflame.agent.cpython.memory import all_mappings
    from podflame.symbolizer.elf import read_named_symbols

    for path, mappings in _candidates(all_mappings(pid)).items():
        with open(f"/proc/{pid}/root{path}", "rb") as stream:
            symbols = read_named_symbols(stream, frozenset({name}))
        if name in symbols.values:
            return _load_bias(symbols, mappings) + symbols.values[name]
    raise AssertionError(f"{name} not found")


def test_an_elf_named_python_that_is_not_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "python3.11"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", fake)
    child = subprocess.Popen([str(fake), "30"])
    try:
        time.sleep(0.05)
        processes = PythonProcesses()
        assert processes.attach(child.pid) is None
        assert processes.refused.counts == {"not_cpython": 1}
    finally:
        child.kill()
        child.wait()


MAP_GARBAGE = """
import mmap, sys
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ | mmap.PROT_EXEC, flags=mmap.MAP_PRIVATE)
print("mapped", flush=True)
sys.stdin.readline()
"""


@contextmanager
def mapping_garbage(python: Path, garbage: Path) -> Iterator[int]:
    garbage.write_bytes(b"\x7fELF" + os.urandom(64 << 10))
    child = subprocess.Popen(
        [str(python), "-c", MAP_GARBAGE, str(garbage)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "mapped\n"
        yield child.pid
    finally:
        child.kill()
        child.wait()


def test_a_garbage_libpython_beside_the_real_one_is_passed_over(tmp_path: Path) -> None:
    _, python = PYTHONS[-1]
    with mapping_garbage(python, tmp_path / "libpython3.11.so.1.0") as pid:
        processes = PythonProcesses()
        process = processes.attach(pid)
        assert process is not None
        assert not process.interpreter.path.startswith(str(tmp_path))
        assert process.stacks()[0].frames


@pytest.mark.skipif(not Path("/usr/bin/python3.11").exists(), reason="no static python3.11")
def test_a_garbage_libpython_alone_is_refused(tmp_path: Path) -> None:
    """A static interpreter under a name no interpreter has (so not a candidate), mapping
    a garbage file named libpython: refused as not CPython, counted."""
    app = tmp_path / "app"
    shutil.copy("/usr/bin/python3.11", app)
    with mapping_garbage(app, tmp_path / "libpython3.11.so.1.0") as pid:
        processes = PythonProcesses()
        assert processes.attach(pid) is None
        assert processes.refused.counts == {"not_cpython": 1}


def test_reads_outside_the_mappings_or_over_the_bound_are_refused() -> None:
    buffer = mmap.mmap(-1, 2 * MAX_READ)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    memory = ProcessMemory.attach(os.getpid())
    with pytest.raises(UnreadableMemory):
        memory.read(16, 8)
    assert memory.read(address, 8) == b"\0" * 8
    with pytest.raises(UnreadableMemory):
        memory.read(address, MAX_READ + 1)
    ranges = readable_ranges(os.getpid())
    starts = {start for start, _ in ranges}
    end = next(end for _, end in ranges if end not in starts)  # nothing readable after it
    with pytest.raises(UnreadableMemory):
        memory.read(end - 4, 8)
    buffer.close()


def test_memory_mapped_after_attaching_is_read_after_a_refresh(tmp_path: Path) -> None:
    memory = ProcessMemory.attach(os.getpid())
    backing = tmp_path / "late"
    backing.write_bytes(b"late" + bytes(4092))
    with open(backing, "r+b") as file:
        buffer = mmap.mmap(file.fileno(), 4096)  # a file mapping: merged with no other
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    assert not memory.contains(address, 4)
    memory._refreshed -= REFRESH_SECONDS  # as if attached a while ago
    assert memory.read(address, 4) == b"late"
