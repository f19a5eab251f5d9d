"""The workload a pod belongs to, through its ownerReferences.

Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob take one lookup of the
middle object each; StatefulSet, DaemonSet and other owners are the pod's own
owner. Lookups are cached (owners do not change), so the API sees one GET per
ReplicaSet or Job, not one per pod or event.

When RBAC forbids the lookup (or the API fails), the workload falls back to
what the pod alone says:
- a ReplicaSet whose pod carries pod-template-hash=H and is named <name>-H is
  taken as Deployment <name> (the Deployment controller names them so);
  otherwise the workload is ReplicaSet <name>;
- a Job stays Job <name> (a CronJob's Jobs carry no label naming it).
A forbidden kind is retried after `forbidden_retry` seconds; a failed lookup
on the next pass over the pods.
"""

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from podflame.agent.pods import Owner, PodInfo

log = logging.getLogger(__name__)


class Forbidden(Exception):
    """RBAC does not let the agent read this kind."""


class Unavailable(Exception):
    """The lookup failed for now (API down, slow, or an error)."""


# (kind, namespace, name) -> that object's controller owner, or None if it has
# none; None also when the object no longer exists.
OwnerReader = Callable[[str, str, str], Owner | None]
_LOOKED_UP = ("ReplicaSet", "Job")


@dataclass(frozen=True)
class Workload:
    kind: str
    name: str
    exact: bool = True  # False: a fallback; resolve again later


class WorkloadResolver:
    def __init__(
        self,
        read_owner: OwnerReader,
        max_entries: int = 4096,
        forbidden_retry: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_owner = read_owner
        self._max_entries = max_entries
        self._forbidden_retry = forbidden_retry
        self._clock = clock
        self._owners: OrderedDict[tuple[str, str, str], Owner | None] = OrderedDict()
        self._forbidden_until: dict[str, float] = {}
        self._logged_forbidden: set[str] = set()
        self.lookups = 0  # GETs sent to the API

    def workload(self, pod: PodInfo) -> Workload:
        owner = pod.owner
        if owner is None:
            return Workload("Pod", pod.name)
        if owner.kind == "Node":  # a static pod's mirror: <manifest name>-<node>
            return Workload("StaticPod", pod.name.removesuffix("-" + pod.node))
        if owner.kind not in _LOOKED_UP:
            return Workload(owner.kind, owner.name)
        try:
            parent = self._owner(owner.kind, pod.namespace, owner.name)
        except (Forbidden, Unavailable):
            return _fallback(owner, pod.template_hash)
        return Workload(parent.kind, parent.name) if parent else Workload(owner.kind, owner.name)

    def _owner(self, kind: str, namespace: str, name: str) -> Owner | None:
        key = (kind, namespace, name)
        if key in self._owners:
            self._owners.move_to_end(key)
            return self._owners[key]
        if self._clock() < self._forbidden_until.get(kind, 0.0):
            raise Forbidden(kind)
        self.lookups += 1
        try:
            owner = self._read_owner(kind, namespace, name)
        except Forbidden:
            self._forbid(kind)
            raise
        self._forbidden_until.pop(kind, None)
        self._owners[key] = owner
        while len(self._owners) > self._max_entries:
            self._owners.popitem(last=False)
        return owner

    def _forbid(self, kind: str) -> None:
        self._forbidden_until[kind] = self._clock() + self._forbidden_retry
        if kind not in self._logged_forbidden:
            self._logged_forbidden.add(kind)
            log.warning(
                "Kubernetes RBAC forbids reading %ss: workloads fall back to the pod's "
                "owner (docs/kubernetes.md); grant get on %ss to the agent's service account",
                kind,
                kind.lower(),
            )


def _fallback(owner: Owner, template_hash: str | None) -> Workload:
    if owner.kind == "ReplicaSet" and template_hash:
        deployment = owner.name.removesuffix("-" + template_hash)
        if deployment != owner.name:
            return Workload("Deployment", deployment, exact=False)
    return Workload(owner.kind, owner.name, exact=False)
