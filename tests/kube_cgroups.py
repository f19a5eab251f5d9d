"""Real cgroups laid out as a kubelet lays them out, with real processes inside.

This machine mounts cgroup v1 hierarchies under /sys/fs/cgroup/<controller>
and cgroup v2 under /sys/fs/cgroup/unified. A ContainerCgroup makes a pod's
and a container's cgroup the way the kubelet's cgroupfs or systemd driver
names them (in v1 in the cpu and pids hierarchies, never memory: the test
process's own memory limit must keep applying), runs commands in it in their
own PID and mount namespaces (`unshare --pid --mount --fork --mount-proc`,
as a container runs), and removes what it made.
"""

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("cpu", "pids")
LAYOUTS = [("v1", "cgroupfs"), ("v1", "systemd"), ("v2", "cgroupfs"), ("v2", "systemd")]
# How the runtimes name a container's cgroup, per driver.
SCOPES = {"containerd": "cri-containerd-{}.scope", "cri-o": "crio-{}.scope"}
CGROUPFS = {"containerd": "{}", "cri-o": "crio-{}"}


def require_cgroups(version: str) -> None:
    """Fail in CI, skip elsewhere, when this host lacks the hierarchy or root."""
    roots = [CGROUP_ROOT / c for c in V1_CONTROLLERS] if version == "v1" else [unified_root()]
    reason = None
    if os.geteuid() != 0:
        reason = "making cgroups needs root"
    elif shutil.which("unshare") is None:
        reason = "unshare (util-linux) is missing"
    elif not all((root / "cgroup.procs").exists() for root in roots):
        reason = f"no writable cgroup {version} hierarchy at {', '.join(map(str, roots))}"
    if reason and os.environ.get("CI"):
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)


def unified_root() -> Path:
    """The v2 hierarchy: /sys/fs/cgroup/unified on hybrid hosts, else /sys/fs/cgroup."""
    hybrid = CGROUP_ROOT / "unified"
    return hybrid if (hybrid / "cgroup.procs").exists() else CGROUP_ROOT


@dataclass
class ContainerCgroup:
    version: str  # v1 or v2
    driver: str  # cgroupfs or systemd
    qos: str = "burstable"
    runtime: str = "containerd"
    pod_uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    container_id: str = field(default_factory=lambda: uuid.uuid4().hex + uuid.uuid4().hex)
    _made: list[Path] = field(default_factory=list)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def relative_path(self) -> str:
        """The path /proc/PID/cgroup shows for the container."""
        if self.driver == "systemd":
            level = "" if self.qos == "guaranteed" else f"-{self.qos}"
            slices = "kubepods.slice" + (f"/kubepods{level}.slice" if level else "")
            pod = f"kubepods{level}-pod{self.pod_uid.replace('-', '_')}.slice"
            return f"/{slices}/{pod}/" + SCOPES[self.runtime].format(self.container_id)
        level = "" if self.qos == "guaranteed" else f"/{self.qos}"
        return f"/kubepods{level}/pod{self.pod_uid}/" + CGROUPFS[self.runtime].format(
            self.container_id
        )

    def directories(self) -> list[Path]:
        path = self.relative_path.lstrip("/")
        if self.version == "v2":
            return [unified_root() / path]
        return [CGROUP_ROOT / controller / path for controller in V1_CONTROLLERS]

    def create(self) -> None:
        for directory in self.directories():
            for parent in reversed([directory, *directory.parents]):
                if not parent.exists():
                    parent.mkdir()
                    self._made.append(parent)

    def run(self, command: Sequence[str], **popen: object) -> subprocess.Popen[bytes]:
        """Start `command` in this container's cgroup, in new PID and mount namespaces.

        The returned process is the outer `unshare`; `inner_pid()` gives the
        host pid of the command itself (pid 1 of its namespace).
        """
        joins = " && ".join(f"echo $$ > {d / 'cgroup.procs'}" for d in self.directories())
        # --kill-child: the command (pid 1 of its namespace, so all of it)
        # dies with unshare.
        unshare = "unshare --pid --mount --fork --mount-proc --kill-child"
        shell = f'{joins} && exec {unshare} -- "$@"'
        process: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["sh", "-c", shell, "sh", *command], **popen
        )
        self._processes.append(process)
        return process

    def members(self) -> list[int]:
        """The pids in this container's cgroup."""
        pids: set[int] = set()
        for directory in self.directories():
            with suppress(OSError):
                pids.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
        return sorted(pids)

    def remove(self) -> None:
        for process in self._processes:
            # The command first, so that unshare reaps it and the cgroup empties
            # now; killed unshare would leave it to the host's init to reap.
            for pid in _children(process.pid):
                with suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in self.members():  # whatever else is left in the cgroup is the test's
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for directory in reversed(self._made):
            _rmdir(directory)
        self._made.clear()


def inner_pid(process: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """The host pid of the command `unshare --fork` started (its child)."""
    deadline = time.monotonic() + timeout
    comm = Path(f"/proc/{process.pid}/comm")
    while time.monotonic() < deadline:
        pids = _children(process.pid)
        with suppress(OSError):
            # unshare itself, then its child once that has mounted /proc and
            # exec'd the command (no command here is named unshare).
            unshared = pids and comm.read_text().strip() == "unshare"
            if unshared and Path(f"/proc/{pids[0]}/comm").read_text().strip() != "unshare":
                return pids[0]
        time.sleep(0.02)
    raise TimeoutError(f"no child of unshare (pid {process.pid})")


@contextmanager
def container_cgroup(version: str, driver: str, **options: str) -> Iterator[ContainerCgroup]:
    require_cgroups(version)
    cgroup = ContainerCgroup(version, driver, **options)
    cgroup.create()
    try:
        yield cgroup
    finally:
        cgroup.remove()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _rmdir(directory: Path) -> None:
    # A cgroup empties a moment after its last process is reaped; a shared
    # parent (kubepods) may still hold another test's cgroups.
    for _ in range(100):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
