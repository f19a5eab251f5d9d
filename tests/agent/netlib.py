"""Helpers for the network tracer tests: the delay server, clients, and reading drains."""

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Set
from contextlib import contextmanager
from pathlib import Path

import pytest

from podflame.agent.netprobes import FEATURES
from podflame.agent.network import CallLatency, ConnectOutcome, NetworkDrain, NetworkTracer
from podflame.agent.tracefs import events_root
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


def python(code: str, *args: object, **popen: object) -> "subprocess.Popen[str]":
    """`code` in a fresh interpreter: its own pid, so its calls are told apart."""
    command = [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]
    return subprocess.Popen(command, text=True, **popen)  # type: ignore[call-overload]


ALL_TRACEPOINTS = {probe.tracepoint for feature in FEATURES for probe in feature.probes}


def copy_events(destination: Path, leave_out: Set[str] = frozenset()) -> Path:
    """A tracefs `events` folder with this kernel's formats of the tracepoints we use,
    less `leave_out`: the tracer then plans as on a kernel without those."""
    events = events_root()
    if events is None:
        pytest.skip("tracefs is not mounted")
    for tracepoint in ALL_TRACEPOINTS - leave_out:
        category, _, name = tracepoint.partition(":")
        target = destination / category / name
        target.mkdir(parents=True)
        shutil.copy(events / category / name / "format", target / "format")
    return destination
