"""This node's pods as the agent keeps them: parsed from the API's JSON, indexed for lookups.

The watch thread writes, the drain thread reads: every lookup is a few dict
reads under a lock, never an API call. A deleted pod is kept for a while (its
processes' last samples are drained after the deletion arrives), then purged.
"""

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Labels the agent sets itself; a pod label that would take one of these
# names is renamed pod_label_<name>.
AGENT_LABELS = frozenset(
    {
        "node",
        "namespace",
        "pod",
        "container",
        "workload_kind",
        "workload",
        "image",
        "image_id",
        "comm",
        "pid",
        "pod_uid",
        "container_id",
        "systemd_unit",
        "cgroup",
    }
)
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A Kubernetes label key: an optional DNS-subdomain prefix and a name.
_KEY_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_KEY_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


def label_name(key: str) -> str:
    """The sample label for pod label `key`: app.kubernetes.io/name -> app_kubernetes_io_name."""
    name = _NOT_NAME.sub("_", key)
    if name[:1].isdigit():
        name = "_" + name
    return "pod_label_" + name if name in AGENT_LABELS else name


def pod_label_names(keys: Sequence[str]) -> dict[str, str]:
    """Pod label key -> sample label name; ValueError for a bad key or two keys on one name."""
    names: dict[str, str] = {}
    for key in keys:
        prefix, _, name = key.rpartition("/")
        if not _KEY_NAME.fullmatch(name) or (prefix and not _KEY_PREFIX.fullmatch(prefix)):
            raise ValueError(f"{key!r} is not a Kubernetes label key")
        taken = [k for k, n in names.items() if n == label_name(key)]
        if taken:
            raise ValueError(f"{taken[0]!r} and {key!r} both become label {label_name(key)!r}")
        names[key] = label_name(key)
    return names


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    image: str
    image_id: str


@dataclass(frozen=True)
class Owner:
    kind: str
    name: str


@dataclass(frozen=True)
class PodInfo:
    uid: str
    namespace: str
    name: str
    node: str
    owner: Owner | None  # the controller among ownerReferences
    template_hash: str | None  # the pod-template-hash label (Deployment's ReplicaSets)
    labels: Mapping[str, str]  # the allow-listed pod labels, by sample label name
    containers: Mapping[str, ContainerInfo]  # container ID (no runtime scheme) -> container
    ips: tuple[str, ...]  # empty for host-network pods, whose IP is the node's
    mirror_of: str | None = None  # a static pod's UID (its cgroup's), when this is its mirror
    workload_kind: str = ""
    workload: str = ""
    workload_exact: bool = True  # False: a fallback, to resolve again later


@dataclass(frozen=True)
class PodRef:
    """Who has a pod IP: what the network tracer labels a peer with."""

    namespace: str
    pod: str
    workload_kind: str
    workload: str


@dataclass(frozen=True)
class PodMatch:
    pod: PodInfo
    container: ContainerInfo | None  # None: the container is not in the pod's status yet

    def labels(self) -> dict[str, str]:
        pod = self.pod
        labels = {"namespace": pod.namespace, "pod": pod.name, **pod.labels}
        if pod.workload:
            labels.update(workload_kind=pod.workload_kind, workload=pod.workload)
        if self.container:
            labels["container"] = self.container.name
            labels.update(image=self.container.image, image_id=self.container.image_id)
        return {name: value for name, value in labels.items() if value}


def parse_pod(raw: Mapping[str, Any], label_names: Mapping[str, str]) -> PodInfo | None:
    """A pod from the API's JSON (a list item or a watch event's object)."""
    meta, spec, status = (raw.get(k) or {} for k in ("metadata", "spec", "status"))
    if not meta.get("uid") or not meta.get("name"):
        return None
    pod_labels = meta.get("labels") or {}
    return PodInfo(
        uid=meta["uid"],
        namespace=meta.get("namespace", ""),
        name=meta["name"],
        node=spec.get("nodeName", ""),
        owner=_controller(meta.get("ownerReferences") or []),
        template_hash=pod_labels.get("pod-template-hash"),
        labels={n: str(pod_labels[k]) for k, n in label_names.items() if pod_labels.get(k)},
        containers=_containers(spec, status),
        ips=() if spec.get("hostNetwork") else _ips(status),
        mirror_of=(meta.get("annotations") or {}).get(MIRROR_ANNOTATION),
    )


def _controller(references: list[Mapping[str, Any]]) -> Owner | None:
    chosen = next((r for r in references if r.get("controller")), None)
    chosen = chosen or (references[0] if references else None)
    if not chosen or not chosen.get("kind") or not chosen.get("name"):
        return None
    return Owner(chosen["kind"], chosen["name"])


def _containers(spec: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, ContainerInfo]:
    images = {
        c.get("name"): c.get("image", "")
        for kind in ("containers", "initContainers", "ephemeralContainers")
        for c in spec.get(kind) or []
    }
    found: dict[str, ContainerInfo] = {}
    for kind in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for s in status.get(kind) or []:
            name = s.get("name", "")
            info = ContainerInfo(name, images.get(name) or s.get("image", ""), s.get("imageID", ""))
            # The previous instance of a restarted container: its last samples
            # may still be in the drain.
            last = ((s.get("lastState") or {}).get("terminated") or {}).get("containerID")
            for container_id in (last, s.get("containerID")):
                if container_id:
                    found[container_id.rpartition("://")[2]] = info
    return found


def _ips(status: Mapping[str, Any]) -> tuple[str, ...]:
    ips = [entry.get("ip") for entry in status.get("podIPs") or []]
    ips = ips or [status.get("podIP")]
    return tuple(ip for ip in ips if ip)


@dataclass
class PodIndex:
    """Pods by UID (and static pods by their cgroup UID), container ID and pod IP."""

    deleted_retention: float = 120.0  # seconds a deleted pod is still found
    clock: Callable[[], float] = time.monotonic
    _pods: dict[str, PodInfo] = field(default_factory=dict)
    _deleted: dict[str, float] = field(default_factory=dict)  # uid -> when to purge
    _by_cgroup_uid: dict[str, str] = field(default_factory=dict)
    _by_container: dict[str, str] = field(default_factory=dict)
    _by_ip: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __len__(self) -> int:
        return len(self._pods)

    def sizes(self) -> dict[str, int]:
        """Entries per index (the agent's cache gauges); deleted pods are kept a while."""
        with self._lock:
            return {
                "pods": len(self._pods),
                "pods_deleted": len(self._deleted),
                "pod_ips": len(self._by_ip),
                "pod_containers": len(self._by_container),
            }

    def upsert(self, pod: PodInfo) -> None:
        with self._lock:
            self._remove(pod.uid)
            self._deleted.pop(pod.uid, None)
            self._pods[pod.uid] = pod
            self._by_cgroup_uid[pod.uid] = pod.uid
            if pod.mirror_of:
                self._by_cgroup_uid[pod.mirror_of] = pod.uid
            self._by_container.update(dict.fromkeys(pod.containers, pod.uid))
            self._by_ip.update(dict.fromkeys(pod.ips, pod.uid))
            self._purge()

    def delete(self, uid: str) -> None:
        """The pod is gone from the API; it is still found for deleted_retention seconds."""
        with self._lock:
            if uid in self._pods and uid not in self._deleted:
                self._deleted[uid] = self.clock() + self.deleted_retention
            self._purge()

    def replace_all(self, pods: Iterable[PodInfo]) -> None:
        """A fresh list: pods missing from it were deleted while the agent was not watching."""
        listed = {pod.uid: pod for pod in pods}
        for pod in listed.values():
            self.upsert(pod)
        with self._lock:
            missing = set(self._pods) - set(listed)
        for uid in missing:
            self.delete(uid)

    def pods(self) -> list[PodInfo]:
        with self._lock:
            return [pod for uid, pod in self._pods.items() if uid not in self._deleted]

    def lookup(self, pod_uid: str | None, container_id: str | None) -> PodMatch | None:
        """The pod (and container) a process's cgroup names, if this node has it."""
        with self._lock:
            uid = self._by_container.get(container_id or "")
            if uid is None:
                uid = self._by_cgroup_uid.get(pod_uid or "")
            pod = self._pods.get(uid or "")
            if pod is None:
                return None
            return PodMatch(pod, pod.containers.get(container_id or ""))

    def pod_by_ip(self, ip: str) -> PodRef | None:
        """The pod of this node that has `ip` (host-network pods excluded), if any."""
        with self._lock:
            pod = self._pods.get(self._by_ip.get(ip, ""))
            if pod is None:
                return None
            return PodRef(pod.namespace, pod.name, pod.workload_kind, pod.workload)

    def purge(self) -> None:
        with self._lock:
            self._purge()

    def _purge(self) -> None:
        now = self.clock()
        for uid in [uid for uid, deadline in self._deleted.items() if deadline <= now]:
            del self._deleted[uid]
            self._remove(uid)

    def _remove(self, uid: str) -> None:
        """Drop a pod and the index entries that still point at it."""
        pod = self._pods.pop(uid, None)
        if pod is None:
            return
        for index, keys in (
            (self._by_cgroup_uid, (pod.uid, pod.mirror_of)),
            (self._by_container, pod.containers),
            (self._by_ip, pod.ips),
        ):
            for key in keys:
                if key and index.get(key) == uid:
                    del index[key]
