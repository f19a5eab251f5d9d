"""The network tracer on the real kernel: latency, EAGAIN, connect outcomes, seeded sockets.

A loopback delay server (C) answers each request after the delay it asks
for; clients in C and Python run as their own processes, so their calls are
told apart by pid.
"""

import statistics
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from podflame.agent.network import NetworkTracer
from podflame.agent.programs import Announcement
from podflame.model.network import bucket_of
from tests.agent.churnlib import build_churn
from tests.agent.netlib import (
    build,
    connections_of,
    delay_server,
    drain_after,
    latency_of,
    p50_us,
    python,
)
from tests.conftest import free_port

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]


@pytest.fixture(scope="module")
def tracer(require_bpf: None) -> Iterator[NetworkTracer]:
    tracer = NetworkTracer()
    tracer.start()
    yield tracer
    tracer.close()


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("network")
    return {name: build(name, directory) for name in ("delay_server", "delay_client")}


@pytest.fixture(scope="module")
def port(binaries: dict[str, Path]) -> Iterator[int]:
    with delay_server(binaries["delay_server"], "127.0.0.1") as port:
        yield port


@pytest.fixture(scope="module")
def port6(binaries: dict[str, Path]) -> Iterator[int]:
    with delay_server(binaries["delay_server"], "::1") as port:
        yield port


PYTHON_CLIENT = """
    import socket, struct, sys, time
    port, count, delay_us = map(int, sys.argv[1:])
    sock = socket.create_connection(("127.0.0.1", port))
    took = []
    for _ in range(count):
        sock.sendall(struct.pack("I", delay_us))
        start = time.perf_counter()
        assert len(sock.recv(4, socket.MSG_WAITALL)) == 4
        took.append(time.perf_counter() - start)
    took.sort()
    print(f"median_us={took[len(took) // 2] * 1e6:.1f}")
"""


def python_client(port: int, count: int, delay_us: int) -> tuple[int, float]:
    process = python(PYTHON_CLIENT, port, count, delay_us, stdout=subprocess.PIPE)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    return process.pid, float(output.split("median_us=")[1])


def c_client(binary: Path, port: int, count: int, delay_us: int, call: str) -> tuple[int, float]:
    """Run the C client for `count` requests; its pid and its own median receive time."""
    process = subprocess.Popen(
        [str(binary), "127.0.0.1", str(port), str(count), "0", str(delay_us), "0", call],
        stdout=subprocess.PIPE,
        text=True,
    )
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    return process.pid, float(output.split("fast_median_us=")[1].split()[0])


@pytest.mark.parametrize("delay_us", [2000, 20000])
@pytest.mark.parametrize("client", ["c-recv", "c-read", "python"])
def test_receive_latency_p50_is_the_injected_delay(
    tracer: NetworkTracer, binaries: dict[str, Path], port: int, client: str, delay_us: int
) -> None:
    count = 100 if delay_us < 10000 else 20
    tracer.drain()
    if client == "python":
        pid, measured_us = python_client(port, count, delay_us)
        syscall = "recvfrom"  # socket.recv()
    else:
        call = client.removeprefix("c-")
        pid, measured_us = c_client(binaries["delay_client"], port, count, delay_us, call)
        syscall = "recvfrom" if call == "recv" else "read"
    drain = drain_after(tracer)
    entry = latency_of(drain, pid, syscall)
    assert entry is not None, [e for e in drain.latency if e.process.pid == pid]
    assert entry.count == count
    assert entry.errors == entry.eagain == 0
    # The histogram's resolution is a bucket, 1/8 of an octave (12.5 %): the
    # p50 is read at its bucket's midpoint. It is the bucket of the client's
    # own median, or its neighbour when that median sits near a bucket edge.
    p50_bucket = bucket_of(round(p50_us(entry) * 1000))
    assert abs(p50_bucket - bucket_of(round(measured_us * 1000))) <= 1
    # Against the injected delay: never below its bucket, and at most one
    # bucket above it (a reply 5 % late on a busy machine reads 11 % late).
    assert 0 <= p50_bucket - bucket_of(delay_us * 1000) <= 1
    # No reply comes before its delay: the sum is at least count x delay (a
    # loaded machine only adds to it), and the slowest call is no faster.
    assert entry.sum_ns >= 0.98 * count * delay_us * 1000
    assert entry.max_ns >= 0.98 * delay_us * 1000


CONNECTS = """
    import socket, sys
    port, port6, closed = map(int, sys.argv[1:])
    def attempt(family, address):
        with socket.socket(family) as sock:
            print(sock.connect_ex(address))
    attempt(socket.AF_INET, ("127.0.0.1", port))
    attempt(socket.AF_INET6, ("::1", port6))
    attempt(socket.AF_INET6, ("::ffff:127.0.0.1", port))  # IPv4-mapped, as dual-stack code does
    attempt(socket.AF_INET, ("127.0.0.1", closed))
    attempt(socket.AF_INET6, ("::1", closed))
"""


def test_connects_report_address_port_and_errno(
    tracer: NetworkTracer, port: int, port6: int
) -> None:
    closed = free_port()  # nothing listens there
    tracer.drain()
    process = python(CONNECTS, port, port6, closed, stdout=subprocess.PIPE)
    output, _ = process.communicate(timeout=60)
    assert output.split() == ["0", "0", "0", "111", "111"]
    drain = drain_after(tracer)
    outcomes = {(c.address, c.port, c.result): c.count for c in connections_of(drain, process.pid)}
    assert outcomes == {
        ("127.0.0.1", port, "ok"): 2,
        ("::1", port6, "ok"): 1,
        ("127.0.0.1", closed, "ECONNREFUSED"): 1,
        ("::1", closed, "ECONNREFUSED"): 1,
    }
    histogram = latency_of(drain, process.pid, "connect")
    assert histogram is not None
    assert (histogram.count, histogram.errors) == (5, 2)
    for connection in connections_of(drain, process.pid):
        assert sum(connection.buckets.values()) == connection.count
        assert connection.max_ns > 0


NONBLOCKING_CONNECTS = """
    import asyncio, socket, sys, time
    port, closed = map(int, sys.argv[1:])
    async def main():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        try:
            await asyncio.open_connection("127.0.0.1", closed)
        except ConnectionRefusedError:
            print("refused")
    asyncio.run(main())
    # Started and never asked about: reported as still in progress.
    sock = socket.socket()
    sock.setblocking(False)
    print(sock.connect_ex(("127.0.0.1", port)))
    time.sleep(0.05)
    sock.close()
"""


def test_nonblocking_connects_are_followed_to_their_outcome(
    tracer: NetworkTracer, port: int
) -> None:
    closed = free_port()
    tracer.drain()
    process = python(NONBLOCKING_CONNECTS, port, closed, stdout=subprocess.PIPE)
    output, _ = process.communicate(timeout=60)
    assert output.split() == ["refused", "115"]
    drain = drain_after(tracer)
    outcomes = {(c.port, c.result): c.count for c in connections_of(drain, process.pid)}
    assert outcomes == {(port, "ok"): 1, (closed, "ECONNREFUSED"): 1, (port, "EINPROGRESS"): 1}
    # The connect() calls themselves returned EINPROGRESS: not slow calls.
    histogram = latency_of(drain, process.pid, "connect")
    assert histogram is not None
    assert histogram.eagain == 3
    assert histogram.count == 0


EAGAIN = """
    import socket, sys
    sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    sock.setblocking(False)
    for _ in range(50):
        try:
            sock.recv(4)
        except BlockingIOError:
            pass
    sock.setblocking(True)
    for _ in range(3):
        sock.sendall((1000).to_bytes(4, "little"))
        sock.recv(4, socket.MSG_WAITALL)
"""


def test_eagain_is_counted_apart_from_calls(tracer: NetworkTracer, port: int) -> None:
    tracer.drain()
    process = python(EAGAIN, port)
    assert process.wait(60) == 0
    drain = drain_after(tracer)
    recv = latency_of(drain, process.pid, "recvfrom")
    assert recv is not None
    assert (recv.eagain, recv.count, recv.errors) == (50, 3, 0)
    assert sum(recv.buckets.values()) == 3


SEEDED = """
    import os, socket, sys
    a, b = socket.socketpair()
    with open("/dev/zero", "rb", buffering=0) as zero:
        print("ready", flush=True)
        sys.stdin.readline()
        for _ in range(20):
            os.write(a.fileno(), b"x")
            os.read(b.fileno(), 1)
            zero.read(1)  # a file: never counted
"""


def test_sockets_opened_before_the_tracer_started_are_seeded_from_proc() -> None:
    process = python(SEEDED, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    tracer = NetworkTracer()
    tracer.start()
    try:
        process.stdin.write("go\n")
        process.stdin.close()
        assert process.wait(60) == 0
        drain = drain_after(tracer)
    finally:
        tracer.close()
    for syscall in ("read", "write"):
        entry = latency_of(drain, process.pid, syscall)
        assert entry is not None, syscall
        assert entry.count == 20, syscall


def test_stacks_are_drained_with_their_time(
    tracer: NetworkTracer, binaries: dict[str, Path], port: int
) -> None:
    tracer.drain()
    pid, _ = c_client(binaries["delay_client"], port, 10, 20000, "recv")
    drain = drain_after(tracer)
    waits = [w for w in drain.waits if w.process.pid == pid]
    assert waits and all(w.user_stack for w in waits)
    total_ms = sum(w.count for w in waits) / 1e6
    recv = latency_of(drain, pid, "recvfrom")
    assert recv is not None
    # Calls of 20 ms record their stack every time: the stacks carry the
    # histogram's time (plus the short sends, sampled).
    assert total_ms >= recv.sum_ns / 1e6
    assert total_ms == pytest.approx(recv.sum_ns / 1e6, rel=0.05)
    assert statistics.mean(len(w.user_stack) for w in waits) >= 3


def test_a_suspended_tracer_measures_nothing_until_resumed(
    tracer: NetworkTracer, port: int
) -> None:
    tracer.drain()
    tracer.suspend()
    try:
        before = python(EAGAIN, port)
        assert before.wait(60) == 0
    finally:
        tracer.resume()
    after = python(EAGAIN, port)
    assert after.wait(60) == 0
    drain = drain_after(tracer)
    assert latency_of(drain, before.pid, "recvfrom") is None
    assert latency_of(drain, after.pid, "recvfrom") is not None


def test_forked_children_are_announced_with_their_parent(
    tracer: NetworkTracer, tmp_path: Path
) -> None:
    """A child that only forked carries its parent (whose image it has); one that
    exec'd another binary does not."""
    parent, child = build_churn(tmp_path)
    tracer.poll(0)  # what earlier tests left

    def churn(exec_every: int) -> tuple[int, list[Announcement]]:
        # 20 children, each burning 1 ms and sending a datagram to the parent.
        command = [str(parent), "20", "1", "1000", str(exec_every), str(child)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE)
        announced = []
        while process.poll() is None:
            announced += tracer.poll(100)
        announced += tracer.poll(100)
        return process.pid, announced

    pid, announced = churn(exec_every=0)  # no child execs
    forked = {a.process.pid for a in announced if a.parent and a.parent.pid == pid}
    assert len(forked) >= 15, announced  # the children's datagrams were traced
    pid, announced = churn(exec_every=1)  # every child execs churn_child first
    assert len(announced) >= 20, announced
    assert not [a for a in announced if a.parent and a.parent.pid == pid], announced
