"""The capture shared by the process tables: one read of /proc per process image, on
real processes (sleep, and a shell that execs), with the real symbolizer and cgroups."""

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from podflame.agent.captures import GONE, ProcessCaptures
from podflame.agent.cgroups import CgroupResolver
from podflame.agent.processes import ProcessTable
from podflame.agent.procfs import read_comm, read_stat
from podflame.agent.sampler import ProcessGeneration
from podflame.symbolizer import Symbolizer


def captures(max_entries: int = 16) -> ProcessCaptures:
    return ProcessCaptures(Symbolizer(), cgroups=CgroupResolver(), max_entries=max_entries)


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


def test_a_live_process_is_read_once_and_shared() -> None:
    shared = captures()
    with running("sleep", "60") as sleep:
        wait_for_comm(sleep.pid, "sleep")
        first = shared.capture(sleep.pid)
        second = shared.capture(sleep.pid)
    assert first.comm == "sleep" and first.start_ticks is not None
    assert first.image is not None and first.cgroup is not None
    assert second is first
    assert (shared.stats.read, shared.stats.shared, len(shared)) == (1, 1, 1)


def test_both_tables_hold_one_capture_of_a_process_they_both_announce() -> None:
    shared = captures()
    cpu, network = ProcessTable(shared), ProcessTable(shared)
    with running("sleep", "60") as sleep:
        wait_for_comm(sleep.pid, "sleep")
        # The two BPF programs number generations apart.
        cpu.announce(ProcessGeneration(sleep.pid, 11))
        network.announce(ProcessGeneration(sleep.pid, 23))
        in_cpu = cpu.lookup(ProcessGeneration(sleep.pid, 11))
        in_network = network.lookup(ProcessGeneration(sleep.pid, 23))
    assert in_cpu.image is not None and in_cpu.image is in_network.image
    assert (in_cpu.comm, in_cpu.start_ticks) == (in_network.comm, in_network.start_ticks)
    assert (shared.stats.read, shared.stats.shared) == (1, 1)
    assert (cpu.gone_at_capture, network.gone_at_capture) == (0, 0)
    # Each table still forgets on its own: the process ended, only the CPU table drains.
    cpu.end_drain(set())
    cpu.end_drain(set())
    assert (len(cpu), len(network)) == (0, 1)


def test_exec_into_another_program_is_captured_anew() -> None:
    shared = captures()
    with running("sh", "-c", "read line; exec sleep 60") as shell:
        wait_for_comm(shell.pid, "sh")
        before = shared.capture(shell.pid)
        exec_next(shell, "sleep")
        after = shared.capture(shell.pid)
    assert (before.comm, after.comm) == ("sh", "sleep")
    assert before.start_ticks == after.start_ticks  # exec keeps the start time
    assert before.image is not None and after.image is not None
    assert before.image.mappings is not after.image.mappings
    assert (shared.stats.read, shared.stats.shared) == (2, 0)


def test_exec_of_the_same_program_is_captured_anew() -> None:
    # Same name, same binary: only the stack and heap that exec placed anew
    # (at random addresses) tell the two images apart.
    if Path("/proc/sys/kernel/randomize_va_space").read_text().strip() == "0":
        pytest.skip("ASLR is off: an exec of the same program may reuse the same addresses")
    shared = captures()
    with running("sh", "-c", 'read line; exec sh -c "read line; exec sleep 60"') as shell:
        wait_for_comm(shell.pid, "sh")
        before = read_stat(shell.pid)
        first = shared.capture(shell.pid)
        assert shared.capture(shell.pid) is first
        # The inner shell runs once its `read` starts waiting; poll the stat until it changes.
        assert shell.stdin is not None
        shell.stdin.write("\n")
        shell.stdin.flush()
        deadline = time.monotonic() + 10
        while read_stat(shell.pid) == before:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        second = shared.capture(shell.pid)
    assert second is not first and second.comm == "sh"
    assert (shared.stats.read, shared.stats.shared) == (2, 1)


def test_a_gone_process_is_not_captured_nor_kept() -> None:
    shared = captures()
    with running("sleep", "60") as sleep:
        pid = sleep.pid
    assert shared.capture(pid) is GONE
    assert (shared.stats.gone, len(shared)) == (1, 0)


def test_captures_past_the_cap_evict_the_least_recently_used() -> None:
    shared = captures(max_entries=2)
    with running("sleep", "60") as a, running("sleep", "60") as b, running("sleep", "60") as c:
        for process in (a, b, c):
            wait_for_comm(process.pid, "sleep")
        first_a = shared.capture(a.pid)
        shared.capture(b.pid)
        shared.capture(a.pid)  # used again: b is now the least recently used
        shared.capture(c.pid)
        assert len(shared) == 2
        assert shared.capture(a.pid) is first_a
        shared.capture(b.pid)  # evicted: read again
    assert (shared.stats.read, shared.stats.shared) == (4, 2)


def test_processes_in_one_cgroup_share_one_parsed_identity() -> None:
    resolver = CgroupResolver(max_texts=4)
    shared = ProcessCaptures(Symbolizer(), cgroups=resolver)
    with running("sleep", "60") as a, running("sleep", "60") as b:
        for process in (a, b):
            wait_for_comm(process.pid, "sleep")
        first, second = shared.capture(a.pid), shared.capture(b.pid)
    assert first.cgroup is not None and second.cgroup is first.cgroup
    assert (shared.stats.read, resolver.texts, len(resolver)) == (2, 1, 2)
