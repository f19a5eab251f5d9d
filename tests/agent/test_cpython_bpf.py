"""Python frames walked by the BPF program (bpf/cpython.h), against py-spy.

One sampler (one BPF compile) for the module. Each CPython 3.10+ on the machine runs the
target's busy loop (Omicron.pack, crunch and its generator, zlib.compress under
worker_step) while the agent samples it at 99 Hz and py-spy records it, non-blocking, in
the same window. In `make test` (3 s, some 100-300 samples on a shared machine): 90 % of
samples name Python frames and each function's inclusive share is within 10 points of
py-spy's; under `make soak` (15 s): within 3 points. CPython 3.6-3.9 are walked too.
"""

import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podflame.agent.cpython import PythonProcess, PythonProcesses
from podflame.agent.cpython.bpfmaps import PythonSample, offsets_for, pthread_tid_offset
from podflame.agent.sampler import CpuSampler
from tests.agent.pythons import TARGET, interpreters

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]
PYTHONS = interpreters()
RECENT = [
    (label, path) for label, path in PYTHONS if not any(f"3.{m}." in label for m in range(6, 10))
]
OLD = [(label, path) for label, path in PYTHONS if (label, path) not in RECENT]
FUNCTIONS = ("worker_step", "pack", "crunch", "<genexpr>")
SECONDS = 3
# Both profilers sample at this rate: at 99 Hz a 3 s run holds ~200 samples, and the
# difference of two such shares has a spread of ~5 points, so a 10-point bound failed
# about once in twenty runs per interpreter on sampling noise alone (3.12.1 at 11.2
# in one CI run). At 499 Hz the spread is ~2 points.
RATE = 499
SOAK_SECONDS = 15


def py_spy() -> str | None:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return shutil.which("py-spy", path=path)


@pytest.fixture(scope="module")
def sampler() -> Iterator[CpuSampler]:
    sampler = CpuSampler(frequency=RATE, interval=10, kernel_stacks=False)
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.close()


def run_busy(
    sampler: CpuSampler, python: Path, spy: str | None, seconds: int = SECONDS
) -> tuple[dict[str, float], list[PythonSample], str]:
    """The target's busy loop sampled for SECONDS by the agent (and by py-spy if given):
    our inclusive shares (named while the process lives), our samples, py-spy's output."""
    output = Path(tempfile.mkdtemp()) / "py-spy.txt"
    child = subprocess.Popen([str(python), str(TARGET), "busy"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.2)
        process = PythonProcesses().attach(child.pid)
        assert process is not None
        tid = pthread_tid_offset(process.memory, process.interpreter, child.pid)
        sampler.watch_python(child.pid, offsets_for(process.interpreter, tid))
        sampler.drain()
        recorder = None
        if spy is not None:
            rate, duration = str(RATE), str(seconds)
            command = [spy, "record", "--nonblocking", "-r", rate, "-d", duration, "-f", "raw"]
            recorder = subprocess.Popen(
                [*command, "-o", str(output), "-p", str(child.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        time.sleep(seconds)
        drain = sampler.drain()
        if recorder is not None:
            recorder.wait(timeout=30)
        folded = output.read_text() if recorder else ""
        sampler.forget_python(child.pid)
        samples = [s for s in drain.python if s.pid == child.pid]
        shares = our_shares(process, samples)
        assert not process.errors.counts, process.errors.counts
        return shares, samples, folded
    finally:
        child.kill()
        child.wait()


def our_shares(process: PythonProcess, samples: list[PythonSample]) -> dict[str, float]:
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for sample in samples:
        total += sample.count
        names = {f.qualname.rsplit(".", 1)[-1] for f in map(process.resolve, sample.frames) if f}
        inclusive.update(dict.fromkeys(names, sample.count))
    return {name: 100 * inclusive[name] / total for name in FUNCTIONS}


def spy_shares(folded: str) -> dict[str, float]:
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        total += int(count)
        names = {frame.split(" (")[0].rsplit(".", 1)[-1] for frame in stack.split(";")}
        inclusive.update(dict.fromkeys(names, int(count)))
    assert total > 0, folded[:200]
    return {name: 100 * inclusive[name] / total for name in FUNCTIONS}


def compare_with_py_spy(sampler: CpuSampler, label: str, python: Path, seconds: int) -> float:
    """The largest gap in points between our inclusive shares and py-spy's."""
    spy = py_spy()
    if spy is None:
        pytest.skip("py-spy is not installed (pip install podflame[dev])")
    ours, samples, folded = run_busy(sampler, python, spy, seconds)
    total = sum(s.count for s in samples)
    named = sum(s.count for s in samples if s.frames)
    assert total >= 50 * seconds // SECONDS and named >= 0.9 * total, (label, named, total)
    theirs = spy_shares(folded)
    gap = max(abs(ours[name] - theirs[name]) for name in FUNCTIONS)
    print(f"{label}: {total} samples, ours {ours}, py-spy {theirs}, largest gap {gap:.1f}")
    return gap


@pytest.mark.skipif(not RECENT, reason="no CPython 3.10+ here")
@pytest.mark.parametrize(("label", "python"), RECENT, ids=[label for label, _ in RECENT])
def test_shares_near_py_spy(sampler: CpuSampler, label: str, python: Path) -> None:
    assert compare_with_py_spy(sampler, label, python, SECONDS) <= 10.0


@pytest.mark.soak
@pytest.mark.skipif(not RECENT, reason="no CPython 3.10+ here")
@pytest.mark.parametrize(("label", "python"), RECENT, ids=[label for label, _ in RECENT])
def test_shares_within_3_points_of_py_spy(sampler: CpuSampler, label: str, python: Path) -> None:
    assert compare_with_py_spy(sampler, label, python, SOAK_SECONDS) <= 3.0


@pytest.mark.skipif(not OLD, reason="no CPython 3.6-3.9 here")
@pytest.mark.parametrize(("label", "python"), OLD, ids=[label for label, _ in OLD])
def test_older_interpreters_are_walked(sampler: CpuSampler, label: str, python: Path) -> None:
    ours, samples, _ = run_busy(sampler, python, None)
    total = sum(s.count for s in samples)
    named = sum(s.count for s in samples if s.frames and s.complete)
    assert total >= 50 and named >= 0.9 * total, (label, named, total)
    assert ours["pack"] > 20
