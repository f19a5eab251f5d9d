"""Capturing processes from /proc, on real processes (sleep, and a shell that execs),
with the real symbolizer and cgroups."""

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from podflame.agent.captures import GONE, ProcessCaptures
from podflame.agent.cgroups import CgroupResolver
from podflame.agent.procfs import read_comm
from podflame.symbolizer import Symbolizer


def captures() -> ProcessCaptures:
    return ProcessCaptures(Symbolizer(), cgroups=CgroupResolver())


@contextmanager
def running(*command: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(command, stdin=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def wait_for_comm(pid: int, comm: str) -> None:
    """Until `pid` runs `comm` and sleeps (in `read` or `sleep`): exec sets the name
    before the new image's addresses, so a capture in between would see its stat
    change under it and read again."""
    deadline = time.monotonic() + 10
    while read_comm(pid) != comm or _state(pid) != "S":
        assert time.monotonic() < deadline, (read_comm(pid), _state(pid))
        time.sleep(0.01)


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def exec_next(process: subprocess.Popen[str], comm: str) -> None:
    """Let a shell waiting on `read` exec its next program, and wait until it has."""
    assert process.stdin is not None
    process.stdin.write("\n")
    process.stdin.flush()
    wait_for_comm(process.pid, comm)


def test_a_live_process_is_captured_with_its_image_and_cgroup() -> None:
    reader = captures()
    with running("sleep", "60") as sleep:
        wait_for_comm(sleep.pid, "sleep")
        capture = reader.capture(sleep.pid)
    assert capture.comm == "sleep" and capture.start_ticks is not None
    assert capture.image is not None and capture.cgroup is not None
    assert (reader.stats.read, reader.stats.gone) == (1, 0)


def test_exec_into_another_program_is_captured_anew() -> None:
    reader = captures()
    with running("sh", "-c", "read line; exec sleep 60") as shell:
        wait_for_comm(shell.pid, "sh")
        before = reader.capture(shell.pid)
        exec_next(shell, "sleep")
        after = reader.capture(shell.pid)
    assert (before.comm, after.comm) == ("sh", "sleep")
    assert before.start_ticks == after.start_ticks  # exec keeps the start time
    assert before.image is not None and after.image is not None
    assert before.image.mappings is not after.image.mappings
    assert reader.stats.read == 2


def test_a_gone_process_is_not_captured() -> None:
    reader = captures()
    with running("sleep", "60") as sleep:
        pid = sleep.pid
    assert reader.capture(pid) is GONE
    assert (reader.stats.read, reader.stats.gone) == (0, 1)


def test_processes_in_one_cgroup_share_one_parsed_identity() -> None:
    resolver = CgroupResolver(max_texts=4)
    shared = ProcessCaptures(Symbolizer(), cgroups=resolver)
    with running("sleep", "60") as a, running("sleep", "60") as b:
        for process in (a, b):
            wait_for_comm(process.pid, "sleep")
        first, second = shared.capture(a.pid), shared.capture(b.pid)
    assert first.cgroup is not None and second.cgroup is first.cgroup
    assert (shared.stats.read, resolver.texts, len(resolver)) == (2, 1, 2)
