"""Shared test helpers: real podflame processes, compiled workloads, BPF gating."""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.fixtures import build_workload

PODFLAME = [sys.executable, "-m", "podflame"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def compile_c(source: Path, output: Path, *flags: str) -> Path:
    """Build a C workload with the flags that keep its stacks walkable."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the test workloads (scripts/install.sh installs it)")
    return build_workload(source, output, *flags)


def workload_cpu_seconds(process: subprocess.Popen[str]) -> float:
    """Wait for a fixture workload and return the CPU seconds it reports using."""
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    return float(output.split("cpu_seconds=")[1].split()[0])


def bpf_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "BPF tests need root"
    try:
        import bcc  # noqa: F401
    except ImportError as error:
        return f"BCC is not importable ({error}); run scripts/install.sh"
    return None


@pytest.fixture(scope="session")
def require_bpf() -> None:
    """Skip BPF tests on a developer machine without BPF; fail them in CI."""
    reason = bpf_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"BPF is required in CI: {reason}")
    pytest.skip(reason)


def wait_until_ready(
    url: str,
    process: subprocess.Popen[bytes],
    timeout: float = 60,
    verify: ssl.SSLContext | bool = True,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} was ready")
        try:
            if httpx.get(url, timeout=1, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s")


# What `podflame agent` logs once its BPF programs are compiled and sampling runs.
SAMPLING_STARTED = "sampling all CPUs"


def wait_for_sampling(agent: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    """Until the agent logs that it samples: its BCC compiles take about 2 s each on a quiet
    machine and far longer on a busy one, so a fixed sleep would start workloads too early."""
    deadline = time.monotonic() + timeout
    while SAMPLING_STARTED not in log.read_text(errors="replace"):
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the agent did not start sampling in {timeout} s")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes], timeout: float = 20) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextmanager
def running_server(
    directory: Path,
    port: int | None = None,
    extra: Sequence[str] = (),
    ca_file: Path | None = None,
) -> Iterator[str]:
    """A real `podflame server` on embedded chDB under `directory`; yields its base URL.

    With `ca_file`, the server is expected to serve HTTPS (extra holds --tls-cert and
    --tls-key) with a certificate that CA signed."""
    port = port or free_port()
    log = (directory / "server.log").open("wb")
    process = subprocess.Popen(
        [
            *PODFLAME,
            "server",
            "--port",
            str(port),
            "--storage",
            f"chdb://{directory / 'chdb'}",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"{'https' if ca_file else 'http'}://127.0.0.1:{port}"
    try:
        verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
        wait_until_ready(url + "/readyz", process, verify=verify)
        yield url
    finally:
        stop(process)
        log.close()


@pytest.fixture
def podflame_server(tmp_path: Path) -> Iterator[str]:
    with running_server(tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for a module's tests, when each reads only its own samples (by pid,
    drained since the test started: pid_max may be small and pids come round)."""
    with running_server(tmp_path_factory.mktemp("server")) as url:
        yield url
