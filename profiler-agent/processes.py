"""Process labels, read from /proc."""

from pathlib import Path
from typing import Protocol


class LabelProvider(Protocol):
    """Labels of a sampled process. Providers are best effort: they never raise."""

    def labels(self, pid: int, sampled_comm: str) -> dict[str, str]: ...


def read_comm(pid: int, proc: Path = Path("/proc")) -> str | None:
    try:
        return (proc / str(pid) / "comm").read_text().rstrip("\n")
    except OSError:
        return None


class ProcfsLabels:
    """node, comm (the process's name as in /proc/PID/comm) and pid.

    The kernel reports the name of the sampled thread; a process's threads may
    be named differently, so /proc/PID/comm wins while the process lives, and
    the sampled thread's name stands in once it has exited.
    """

    def __init__(self, node: str, proc: Path = Path("/proc")) -> None:
        self.node = node
        self.proc = proc

    def labels(self, pid: int, sampled_comm: str) -> dict[str, str]:
        comm = read_comm(pid, self.proc) or sampled_comm
        return {"node": self.node, "comm": comm, "pid": str(pid)}
