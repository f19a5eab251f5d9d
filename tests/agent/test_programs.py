"""One process identity for both BPF programs (real BPF, as root): compiled as one module
(programs.py), the CPU sampler and the network tracer key a process by the same
generation, announced once, whichever program saw it first."""

import subprocess
import sys
from collections.abc import Iterator

import pytest

from podflame.agent.network import NetworkTracer
from podflame.agent.programs import Announcement, ProcessGeneration, Programs
from podflame.agent.sampler import CpuSampler

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

# Sends datagrams (network calls: sendto) and burns CPU in between, for about a second.
TALKER = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + 1.0
while time.monotonic() < end:
    s.sendto(b"x", ("127.0.0.1", 9))
    sum(range(20000))
"""


@pytest.fixture(scope="module")
def both() -> Iterator[tuple[Programs, CpuSampler, NetworkTracer]]:
    sampler = CpuSampler(frequency=199, interval=1, kernel_stacks=False)
    tracer = NetworkTracer()
    programs = Programs([sampler.program(), tracer.program()])
    try:
        tracer.attach(programs)
        sampler.attach(programs)
        yield programs, sampler, tracer
    finally:
        programs.close()


def test_a_process_seen_by_both_programs_has_one_generation_announced_once(
    both: tuple[Programs, CpuSampler, NetworkTracer],
) -> None:
    programs, sampler, tracer = both
    programs.poll(0)
    sampler.drain()  # what came before
    tracer.drain()
    talker = subprocess.Popen([sys.executable, "-c", TALKER])
    announced: list[Announcement] = []
    while talker.poll() is None:
        announced += programs.poll(100)
    assert talker.returncode == 0
    announced += programs.poll(100)
    cpu, network = sampler.drain(), tracer.drain()

    # Its sends: only the image after exec makes them (before it, the child was pytest's).
    talking = {e.process for e in network.latency if e.process.pid == talker.pid}
    assert len(talking) == 1, network.latency
    (process,) = talking
    sampled = {s.process for s in cpu.samples if s.process.pid == talker.pid and s.count}
    assert process in sampled, (process, sampled)
    # Announced once, with that generation, and by both programs' first event alike.
    assert [a.process for a in announced].count(process) == 1, announced
    assert process.generation != 0
    assert ProcessGeneration(talker.pid, 0) not in sampled | talking
