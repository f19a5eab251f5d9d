"""Labels of a sampled process: the attribution stage's seam."""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    comm: str  # the process's name as in /proc/PID/comm
    start_ticks: int | None  # with the pid, identifies the process (None: already gone)


class LabelProvider(Protocol):
    """Labels of a process. Providers are best effort: they never raise."""

    def labels(self, process: ProcessIdentity) -> dict[str, str]: ...


@dataclass(frozen=True)
class HostLabels:
    """node, comm and pid: what every sample carries, on any host."""

    node: str

    def labels(self, process: ProcessIdentity) -> dict[str, str]:
        return {"node": self.node, "comm": process.comm, "pid": str(process.pid)}
