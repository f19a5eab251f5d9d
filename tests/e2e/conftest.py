"""Real profiled runs shared by the end-to-end tests of this folder, and the browser."""

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PODFLAME, compile_c, running_server, stop, wait_for_sampling
from tests.e2e.browser import browser, page
from tests.e2e.pods import Pod, Workload, pod_agent, release, run_workloads
from tests.fixtures import FIXTURES

__all__ = ["browser", "page"]  # fixtures shared by the browser tests

FREQUENCY = 99
BURN_SECONDS = 6


@dataclass(frozen=True)
class Profiled:
    url: str  # the server holding the profile
    pid: int  # the workload's pid
    cpu_seconds: float  # CPU time the workload used, by its own clock


def start_workload(binary: Path, seconds: float) -> tuple[subprocess.Popen[str], float]:
    """Run the workload's busy phase; it then stays alive until its stdin closes.

    A process that lives until the agent's next drain, like a busy service;
    one that exits before it is symbolized from cached mappings (issue 3).
    """
    process = subprocess.Popen(
        [str(binary), "-w", str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, float(line.split("cpu_seconds=")[1].split()[0])


@pytest.fixture(scope="package")
def profiled(tmp_path_factory: pytest.TempPathFactory, require_bpf: None) -> Iterator[Profiled]:
    """The 70/30 workload profiled by a real agent shipping to a real server."""
    tmp_path = tmp_path_factory.mktemp("e2e")
    with running_server(tmp_path) as url:
        pid, cpu_seconds = profile_workload(tmp_path, url)
        yield Profiled(url, pid, cpu_seconds)


def profile_workload(tmp_path: Path, server_url: str) -> tuple[int, float]:
    """Run the workload under `podflame agent`, then stop the agent: its last drain ships."""
    binary = compile_c(FIXTURES / "burn7030.c", tmp_path / "burn7030")
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as log:
        agent = subprocess.Popen(
            [
                *PODFLAME,
                "agent",
                "--server",
                server_url,
                "--frequency",
                str(FREQUENCY),
                "--interval",
                "2",
                "--metrics-port",
                "0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_sampling(agent, log_path)
            workload, cpu_seconds = start_workload(binary, BURN_SECONDS)
        finally:
            code = stop(agent)
        workload.communicate(timeout=10)
    assert code == 0, log_path.read_text()
    return workload.pid, cpu_seconds


# ---- The web UI's data: real workloads in made-up pods (see pods.py) -------------------

CPU_SECONDS = 3  # per checkout pod: about 300 samples at 99 Hz
READ_SECONDS = 6

CHECKOUT_V1 = Pod("shop", "checkout", "checkout-v1-7f9c4", "app", {"version": "v1"})
CHECKOUT_V2 = Pod("shop", "checkout", "checkout-v2-5d2b8", "app", {"version": "v2"})
REPORT = Pod("batch", "report", "report-0", "worker")


@dataclass(frozen=True)
class Shop:
    url: str  # the server holding the profiles
    # checkout v1 splits its CPU time 70/30 between burn_a and burn_b, v2 30/70; the
    # report pod spends its time reading /dev/zero (read_zeros and kernel frames).
    v1: Pod
    v2: Pod
    report: Pod


@pytest.fixture(scope="package")
def shop(tmp_path_factory: pytest.TempPathFactory, require_bpf: None) -> Iterator[Shop]:
    tmp_path = tmp_path_factory.mktemp("shop")
    burnmix = compile_c(FIXTURES / "burnmix.c", tmp_path / "burnmix")
    reader = compile_c(FIXTURES / "syscall_loop.c", tmp_path / "syscall_loop")
    workloads = [
        Workload(CHECKOUT_V1, [str(burnmix), "7", "3", str(CPU_SECONDS)]),
        Workload(CHECKOUT_V2, [str(burnmix), "3", "7", str(CPU_SECONDS)]),
        Workload(REPORT, [str(reader), str(READ_SECONDS)]),  # exits when done
    ]
    with running_server(tmp_path) as url:
        with pod_agent(url) as provider:
            run_workloads(provider, workloads, tmp_path)
        release(workloads)
        yield Shop(url, CHECKOUT_V1, CHECKOUT_V2, REPORT)
