"""The agent with exactly the DaemonSet's capabilities, on the real kernel.

setpriv starts the agent as root with the capabilities the DaemonSet adds as
its bounding set (so root keeps only those across exec) and no_new_privs, as
allowPrivilegeEscalation: false does. The workload runs as another user
(nobody), as containers' processes usually do. With the set, the agent
samples and names the workload's functions. Without PERFMON it cannot start;
without SYS_PTRACE it samples but cannot read the other user's memory map, so
no function gets a name; without DAC_READ_SEARCH it cannot read a program
that only its own user may read (mode 0700, as the workload here is), so that
one goes unnamed: all three are needed, and this test would notice a set that
lacked one. (A capability the test process lacks itself, such as
SYS_RESOURCE on this machine, cannot be handed down; this kernel does not
need it.)
"""

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PODFLAME, compile_c, running_server, stop
from tests.deploy.install import Build
from tests.deploy.test_manifests import agent_container
from tests.fixtures import FIXTURES

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

NOBODY = "65534"


def daemonset_capabilities(build: Build) -> set[str]:
    added: list[str] = agent_container(build("base"))["securityContext"]["capabilities"]["add"]
    return {name.lower() for name in added}


@pytest.fixture(scope="module")
def workload() -> Iterator[Path]:
    """burn7030 where nobody can run it (pytest's tmp folders are root's alone), and
    only nobody: a program its user alone may read, as a container's often is."""
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        os.chmod(folder, 0o755)
        binary = compile_c(FIXTURES / "burn7030.c", Path(folder) / "burn7030")
        os.chown(binary, int(NOBODY), int(NOBODY))
        os.chmod(binary, 0o700)
        yield binary


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(tmp_path_factory.mktemp("capabilities")) as url:
        yield url


def run_agent(
    capabilities: set[str], server: str, workload: Path, log: Path, *flags: str
) -> tuple[int, int | None]:
    """The agent under `capabilities` (and `flags`) while nobody runs the workload.

    Returns the agent's exit code and the workload's pid (None if the agent never sampled).
    """
    bounding = ",".join(["-all", *(f"+{name}" for name in sorted(capabilities))])
    agent_command = [
        "setpriv",
        "--no-new-privs",
        "--bounding-set",
        bounding,
        "--",
        *PODFLAME,
        "agent",
        "--server",
        server,
        "--frequency",
        "99",
        "--interval",
        "2",
        "--metrics-port",
        "0",
        *flags,
    ]
    with log.open("wb") as output:
        agent = subprocess.Popen(agent_command, stdout=output, stderr=subprocess.STDOUT)
        try:
            if not wait_for_sampling(agent, log):
                return agent.returncode, None
            as_nobody = ["setpriv", "--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"]
            burn = subprocess.Popen(
                [*as_nobody, str(workload), "-n", "3000"], stdout=subprocess.PIPE
            )
            printed, _ = burn.communicate(timeout=120)
            assert b"cpu_seconds=" in printed
            wait_for_samples(server, burn.pid)
        finally:
            code = stop(agent)
    return code, burn.pid


def wait_for_sampling(agent: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> bool:
    """True once the agent samples (BCC compiles first: 2 s, more on a busy machine);
    False when it exits before."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "sampling all CPUs" in log.read_text():
            return True
        if agent.poll() is not None:
            return False
        time.sleep(0.2)
    raise TimeoutError(f"the agent did not start sampling: {log.read_text()}")


def wait_for_samples(server: str, pid: int, timeout: float = 30) -> None:
    """Until the agent's next drain has reached the server (or the time is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not functions_of(server, pid):
        time.sleep(0.5)


def functions_of(server: str, pid: int) -> dict[str, int]:
    """Functions of the workload process `pid` (setpriv execs it: same pid)."""
    query = f'{{comm="burn7030", pid="{pid}"}}'
    params = {"query": query, "from": "now-10m", "until": "now", "type": "cpu"}
    top = httpx.get(server + "/api/v1/top", params=params, timeout=30).json()
    return {function["name"]: function["total"] for function in top["functions"]}


def test_daemonset_capabilities_suffice(
    server: str, workload: Path, tmp_path: Path, build: Build
) -> None:
    code, pid = run_agent(daemonset_capabilities(build), server, workload, tmp_path / "agent.log")
    assert code == 0, (tmp_path / "agent.log").read_text()
    assert pid is not None
    functions = functions_of(server, pid)
    assert {"main", "burn_a", "burn_b", "spin"} <= functions.keys(), sorted(functions)


def test_without_dac_read_search_a_binary_only_its_user_reads_goes_unnamed(
    server: str, workload: Path, tmp_path: Path, build: Build
) -> None:
    """The agent runs as uid 0 without CAP_DAC_OVERRIDE: file modes apply to it."""
    capabilities = daemonset_capabilities(build) - {"dac_read_search"}
    # Naming is the point: CPU samples alone (the full agent, network programs too,
    # starts under the whole set in test_daemonset_capabilities_suffice).
    log = tmp_path / "agent.log"
    code, pid = run_agent(capabilities, server, workload, log, "--no-network")
    assert code == 0, log.read_text()
    assert pid is not None
    functions = functions_of(server, pid)
    assert functions, "sampled nothing"
    assert not {"burn_a", "burn_b", "spin"} & functions.keys(), sorted(functions)


def test_without_sys_ptrace_other_users_processes_go_unnamed(
    server: str, workload: Path, tmp_path: Path, build: Build
) -> None:
    capabilities = daemonset_capabilities(build) - {"sys_ptrace"}
    # Naming is the point: CPU samples alone (the full agent, network programs too,
    # starts under the whole set in test_daemonset_capabilities_suffice).
    log = tmp_path / "agent.log"
    code, pid = run_agent(capabilities, server, workload, log, "--no-network")
    assert code == 0, log.read_text()
    assert pid is not None
    functions = functions_of(server, pid)
    assert functions, "sampled nothing"
    assert not {"burn_a", "burn_b", "spin"} & functions.keys(), sorted(functions)


def test_without_perfmon_the_agent_cannot_start(
    server: str, workload: Path, tmp_path: Path, build: Build
) -> None:
    capabilities = daemonset_capabilities(build) - {"perfmon"}
    code, pid = run_agent(capabilities, server, workload, tmp_path / "agent.log")
    assert pid is None  # it never started sampling
    assert code != 0
    assert "cannot start the agent" in (tmp_path / "agent.log").read_text()
