"""The real agent with every capability dropped but those a DaemonSet would grant
(setpriv's bounding set), profiling workloads that run as another user, as a
container's would.

What this kernel (6.18) turned out to need, capability by capability:
- CAP_BPF and CAP_PERFMON: sampling at all (without CAP_BPF the BPF maps cannot be
  created; without CAP_PERFMON no perf event opens). CAP_PERFMON also lets the agent
  read other processes' /proc/PID/maps.
- CAP_SYS_PTRACE: open their binaries through /proc/PID/root (and their perf maps);
  without it every user frame is module+offset.
- CAP_SYSLOG: real addresses in /proc/kallsyms (perf_event_paranoid is 2); without it
  kernel frames are [unknown].
- CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN): /proc/PID/map_files, for binaries deleted
  or replaced on disk since they were mapped.
- Not needed: CAP_SYS_ADMIN (BCC loads and attaches without it), CAP_SYS_RESOURCE (BPF
  memory is charged to the memory cgroup; this machine cannot even grant it). Nor is
  CAP_DAC_READ_SEARCH for world-readable binaries (it does not open /proc/PID/root); a
  binary only its owner may read needs it (tests/deploy/test_agent_capabilities.py).
"""

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.test_pipeline import folded
from tests.conftest import PODFLAME, compile_c, stop
from tests.fixtures import FIXTURES, build_burn7030

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

FULL = ["bpf", "perfmon", "sys_ptrace", "syslog", "checkpoint_restore", "sys_resource"]
SAMPLING_ONLY = ["bpf", "perfmon", "sys_resource"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def confined(capabilities: list[str]) -> list[str]:
    """setpriv keeping only `capabilities` (dropping one the machine lacks is a no-op)."""
    keep = ",".join(f"+{name}" for name in capabilities)
    return ["setpriv", f"--bounding-set=-all,{keep}", "--inh-caps=-all", "--"]


@pytest.fixture(scope="module")
def workloads() -> Iterator[dict[str, Path]]:
    """The workloads, where the nobody user can run them (not under pytest's 0700 tmp)."""
    with tempfile.TemporaryDirectory(prefix="podflame-caps-") as directory:
        os.chmod(directory, 0o755)
        folder = Path(directory)
        yield {
            "burn": build_burn7030(folder / "burn7030"),
            "syscalls": compile_c(FIXTURES / "syscall_loop.c", folder / "syscall_loop"),
        }


def profile(server: str, capabilities: list[str], workloads: dict[str, Path], log: Path) -> dict:
    """Run the agent confined, run each workload as nobody, stop the agent (it ships)."""
    command = [
        *confined(capabilities),
        *PODFLAME,
        "agent",
        "--server",
        server,
        "--interval",
        "2",
        "--frequency",
        "99",
        "--metrics-port",
        "0",
    ]
    started = time.time()
    with log.open("wb") as out:
        agent = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            # BCC compiles (both programs) before sampling starts.
            deadline = time.monotonic() + 120
            while "sampling all CPUs" not in log.read_text() and time.monotonic() < deadline:
                assert agent.poll() is None, log.read_text()
                time.sleep(0.2)
            assert agent.poll() is None, log.read_text()
            pids = {}
            for name, binary in workloads.items():
                run = subprocess.Popen([*NOBODY, str(binary), "1.5"], stdout=subprocess.DEVNULL)
                assert run.wait(30) == 0
                pids[name] = run.pid  # setpriv execs: the same pid
        finally:
            code = stop(agent)
    assert code == 0, log.read_text()[-3000:]
    return {name: folded(server, pid, since=started) for name, pid in pids.items()}


def frames(stacks: list[tuple[list[str], int]]) -> set[str]:
    return {frame for stack, _ in stacks for frame in stack}


def test_with_the_needed_capabilities_everything_is_named(
    module_server: str, workloads: dict[str, Path], tmp_path: Path
) -> None:
    stacks = profile(module_server, FULL, workloads, tmp_path / "agent.log")
    assert {"main", "run", "burn_a", "burn_b", "spin"} <= frames(stacks["burn"])
    kernel = {f for f in frames(stacks["syscalls"]) if f.endswith("_[k]")}
    assert kernel and "[unknown]_[k]" not in kernel, sorted(kernel)
    assert "main" in frames(stacks["syscalls"])


def test_with_bpf_and_perfmon_alone_it_still_profiles(
    module_server: str, workloads: dict[str, Path], tmp_path: Path
) -> None:
    """CPU time is all there; the workload's own frames are module+offset, kernel ones [unknown].

    Without CAP_SYS_PTRACE the agent cannot open the workload's binary. It may still name
    libc frames: the agent maps the very same file (path, device, inode) itself, and the
    symbolizer finds a table by that identity; and [vdso] is named from memory.
    """
    stacks = profile(module_server, SAMPLING_ONLY, workloads, tmp_path / "agent.log")
    burn = stacks["burn"]
    assert sum(value for _, value in burn) > 0.5e9  # of some 1.5 s of CPU
    user = {f for f in frames(burn) if not f.endswith("_[k]")}
    assert any(f.startswith("burn7030+0x") for f in user), user
    assert not user & {"main", "run", "burn_a", "burn_b", "spin"}, user
    kernel = {f for f in frames(stacks["syscalls"]) if f.endswith("_[k]")}
    assert kernel == {"[unknown]_[k]"}


@pytest.mark.parametrize("missing", ["bpf", "perfmon"])
def test_without_bpf_or_perfmon_the_agent_says_it_cannot_start(missing: str) -> None:
    kept = [name for name in FULL if name != missing]
    result = subprocess.run(
        [*confined(kept), *PODFLAME, "agent", "--metrics-port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "cannot start the agent" in result.stderr
