"""Helpers for the network tracer tests: the delay server, clients, and reading drains."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from podflame.agent.network import CallLatency, ConnectOutcome, NetworkDrain, NetworkTracer
from podflame.model.network import quantile
from tests.conftest import compile_c
from tests.fixtures import FIXTURES

NETWORK_FIXTURES = FIXTURES / "network"


def build(name: str, directory: Path) -> Path:
    return compile_c(NETWORK_FIXTURES / f"{name}.c", directory / name, "-pthread")


@contextmanager
def delay_server(binary: Path, address: str) -> Iterator[int]:
    """The C delay server listening on `address`; yields its port."""
    server = subprocess.Popen([str(binary), address], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        yield int(server.stdout.readline())
    finally:
        server.kill()
        server.wait()


def latency_of(drain: NetworkDrain, pid: int, syscall: str) -> CallLatency | None:
    found = [e for e in drain.latency if e.process.pid == pid and e.syscall == syscall]
    assert len(found) <= 1, found  # one process image, one histogram per call
    return found[0] if found else None


def connections_of(drain: NetworkDrain, pid: int) -> list[ConnectOutcome]:
    return [c for c in drain.connections if c.process.pid == pid]


def p50_us(entry: CallLatency) -> float:
    value = quantile(entry.buckets, 0.5)
    assert value is not None
    return value / 1000


def drain_after(tracer: NetworkTracer) -> NetworkDrain:
    tracer.poll(0)
    return tracer.drain()
