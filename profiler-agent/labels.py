"""Labels of a sampled process: the attribution stage's seam.

build_agent composes the providers: HostLabels (node, comm, pid), CgroupLabels
(pod_uid, container_id, or systemd_unit / cgroup) and, on Kubernetes, the pod
metadata (podflame.agent.kubernetes.PodLabels). Each is asked at every drain,
so a pod that shows up in the API after its first samples labels the next
batch.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from podflame.agent.cgroups import CgroupIdentity, CgroupResolver, cgroup_labels


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    comm: str  # the process's name as in /proc/PID/comm
    start_ticks: int | None  # with the pid, identifies the process (None: already gone)
    # Captured while the process lived; None: providers read it when asked.
    cgroup: CgroupIdentity | None = None


class LabelProvider(Protocol):
    """Labels of a process. Providers are best effort: they never raise."""

    def labels(self, process: ProcessIdentity) -> dict[str, str]: ...


@dataclass(frozen=True)
class HostLabels:
    """node, comm and pid: what every sample carries, on any host."""

    node: str

    def labels(self, process: ProcessIdentity) -> dict[str, str]:
        return {"node": self.node, "comm": process.comm, "pid": str(process.pid)}


def cgroup_of(process: ProcessIdentity, resolver: CgroupResolver) -> CgroupIdentity | None:
    """The process's cgroup identity: as captured, else read now (cached per start time)."""
    return process.cgroup or resolver.resolve(process.pid, process.start_ticks)


@dataclass(frozen=True)
class CgroupLabels:
    """pod_uid and container_id from the cgroup path, API server or not.

    A process outside containers gets systemd_unit, or cgroup (its path).
    """

    resolver: CgroupResolver

    def labels(self, process: ProcessIdentity) -> dict[str, str]:
        identity = cgroup_of(process, self.resolver)
        return cgroup_labels(identity) if identity else {}


@dataclass(frozen=True)
class CombinedLabels:
    """The union of several providers' labels; an earlier provider's value wins."""

    providers: Sequence[LabelProvider]

    def labels(self, process: ProcessIdentity) -> dict[str, str]:
        labels: dict[str, str] = {}
        for provider in reversed(self.providers):
            labels.update(provider.labels(process))
        return labels
