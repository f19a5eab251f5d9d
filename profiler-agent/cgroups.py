"""Which pod and container a process belongs to, read from /proc/PID/cgroup.

The kubelet names a pod's cgroup after the pod's UID, and the runtime names a
container's cgroup after the container ID, so the cgroup path alone gives
both, with no API call and even when the API server is unreachable:

    cgroupfs driver:  /kubepods/burstable/pod<uid>/<id>          (CRI-O: crio-<id>)
    systemd driver:   /kubepods.slice/kubepods-burstable.slice/
                      kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope
                      (CRI-O: crio-<id>.scope, cri-dockerd: docker-<id>.scope)

Guaranteed pods have no QoS level (/kubepods/pod<uid>/...); a static pod's UID
is its 32-hex config hash; kind nests all of it under /kubelet.slice/ inside a
Docker container; an agent in its own cgroup namespace sees paths starting
with /.. . So the parser looks at path components, innermost container first,
instead of matching whole paths. Docker and Podman containers outside
Kubernetes (/docker/<id>, /system.slice/docker-<id>.scope,
/machine.slice/libpod-<id>.scope) yield a container ID without a pod;
everything else yields its systemd unit, or its cgroup path.
"""

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from podflame.agent.procfs import read_start_ticks
from podflame.symbolizer.text import decode, display

_UUID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
# pod<uid> (cgroupfs), kubepods[-<qos>]-pod<uid>.slice (systemd); a static
# pod's UID is a 32-hex hash of its manifest.
_POD = re.compile(rf"(?:^|-)pod({_UUID}|[0-9a-f]{{32}})(?:\.slice)?$")
# <id>, or <runtime prefix>-<id>[.scope]; conmon (the CRI-O and Podman
# monitor) has its own scope beside the container's and is not the container.
_CONTAINER = re.compile(r"(?:(cri-containerd|crio|docker|libpod)-)?([0-9a-f]{64})(?:\.scope)?")
_RUNTIMES = {
    "cri-containerd": "containerd",
    "crio": "cri-o",
    "docker": "docker",
    "libpod": "podman",
}
_QOS = re.compile(r"(?:^|-)(burstable|besteffort)(?:-|\.slice$|$)")
_KUBEPODS = ("kubepods", "kubepods.slice", "kubelet-kubepods.slice")
_KUBEPODS_PREFIXES = ("kubepods-pod", "kubelet-kubepods-pod")
# Where a process outside containers is: the unified hierarchy, else systemd's
# own, else the first v1 controller with a path.
_VIEW_ORDER = {"": 0, "name=systemd": 1}
_UNIT_SUFFIXES = (".service", ".scope")
_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


@dataclass(frozen=True)
class CgroupIdentity:
    """What the cgroup path says about a process."""

    path: str  # the path the identity was read from
    pod_uid: str | None = None  # with dashes, as in the pod's metadata.uid
    container_id: str | None = None  # 64 hex digits, without the runtime's scheme
    runtime: str | None = None  # containerd, cri-o, docker or podman, when the name says
    qos: str | None = None  # guaranteed, burstable or besteffort, for pods
    unit: str | None = None  # the systemd unit of a process outside containers

    @property
    def in_container(self) -> bool:
        return self.container_id is not None or self.pod_uid is not None


def parse_path(path: str) -> CgroupIdentity:
    """The identity one cgroup path gives (a path of /proc/PID/cgroup)."""
    # The systemd driver's name=systemd hierarchy writes a container as
    # "<pod slice>:cri-containerd:<id>": its parts read like components.
    parts = [p for c in path.split("/") for p in c.split(":") if p and p != ".."]
    container, runtime, depth = _container(parts)
    pod_uid, pod_depth = _pod(parts[:depth] if container else parts)
    if container is None:
        unit = None if pod_uid else _unit(parts)
        qos = _qos(parts[: pod_depth + 1], pod_uid)
        return CgroupIdentity(path, pod_uid=pod_uid, unit=unit, qos=qos)
    if runtime is None and depth > 0 and parts[depth - 1] in _RUNTIMES:
        runtime = _RUNTIMES[parts[depth - 1]]
    if runtime is None and pod_uid is None and "docker" in parts[:depth]:
        runtime = "docker"  # /docker/<id>: Docker's cgroupfs driver
    qos = _qos(parts[: pod_depth + 1], pod_uid)
    return CgroupIdentity(path, pod_uid, container, runtime, qos)


def parse_cgroup_file(text: str) -> CgroupIdentity | None:
    """The identity of a process from the text of its /proc/PID/cgroup.

    A line naming a container wins (the unified line first, then the v1
    controllers in order: on hybrid hosts the unified line may still name
    the runtime's service while the controllers name the container), then one
    naming a pod; otherwise the unified path, or the name=systemd one, or a
    controller's, says where the process is.
    """
    paths = _paths(text)
    if not paths:
        return None
    ordered = sorted(paths, key=lambda item: item[0] != "")
    identities = [parse_path(path) for _, path in ordered]
    for found in (
        [i for i in identities if i.container_id],
        [i for i in identities if i.pod_uid],
    ):
        if found:
            return found[0]
    views = sorted(paths, key=lambda item: _VIEW_ORDER.get(item[0], len(_VIEW_ORDER)))
    return parse_path(next((path for _, path in views if path != "/"), views[0][1]))


def cgroup_labels(identity: CgroupIdentity) -> dict[str, str]:
    """pod_uid and container_id, or for a process outside containers its unit or cgroup."""
    labels: dict[str, str] = {}
    if identity.pod_uid:
        labels["pod_uid"] = identity.pod_uid
    if identity.container_id:
        labels["container_id"] = identity.container_id
    if not identity.in_container:
        if identity.unit:
            labels["systemd_unit"] = identity.unit
        else:
            labels["cgroup"] = identity.path
    return labels


class CgroupResolver:
    """Cgroup identities per (pid, start time), the least recently used forgotten first.

    Thread-safe: the agent's threads and the network tracer share one.
    """

    def __init__(
        self, proc: Path = Path("/proc"), max_entries: int = 16384, max_texts: int = 1024
    ) -> None:
        self._proc = proc
        self._max_entries = max_entries
        self._cache: OrderedDict[tuple[int, int], CgroupIdentity | None] = OrderedDict()
        # Identities per /proc/PID/cgroup text: the processes of one container
        # (and the thousands of children of one job) share it, and parsing it
        # cost as much as reading it.
        self._max_texts = max_texts
        self._parsed: OrderedDict[str, CgroupIdentity | None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def texts(self) -> int:
        """Distinct cgroup file texts remembered as parsed."""
        return len(self._parsed)

    def read(
        self, pid: int, start_ticks: int | None, *, verify: bool = True
    ) -> CgroupIdentity | None:
        """Read the process's cgroup now (it may have moved since), and remember it.

        `verify=False`: the caller checks itself, after this, that the pid still
        is the process that started at `start_ticks`."""
        if start_ticks is None:
            return None
        try:
            text = decode((self._proc / str(pid) / "cgroup").read_bytes())
        except OSError:
            return None
        # The pid may have been reused while the file was read.
        if verify and read_start_ticks(pid, self._proc) != start_ticks:
            return None
        identity = self._parse(text)
        self._remember((pid, start_ticks), identity)
        return identity

    def _parse(self, text: str) -> CgroupIdentity | None:
        with self._lock:
            if text in self._parsed:
                self._parsed.move_to_end(text)
                return self._parsed[text]
        identity = parse_cgroup_file(text)
        with self._lock:
            self._parsed[text] = identity
            while len(self._parsed) > self._max_texts:
                self._parsed.popitem(last=False)
        return identity

    def resolve(self, pid: int, start_ticks: int | None) -> CgroupIdentity | None:
        """The remembered identity, or a fresh read for a process not seen before."""
        if start_ticks is None:
            return None
        key = (pid, start_ticks)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        return self.read(pid, start_ticks)

    def _remember(self, key: tuple[int, int], identity: CgroupIdentity | None) -> None:
        with self._lock:
            self._cache[key] = identity
            self._cache.move_to_end(key)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)


def _paths(text: str) -> list[tuple[str, str]]:
    """(controllers, path) per line; "" is the unified (v2) hierarchy."""
    paths = []
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) == 3 and fields[2].startswith("/"):
            paths.append((fields[1], fields[2]))
    return paths


def _container(parts: list[str]) -> tuple[str | None, str | None, int]:
    """The innermost container ID, its runtime and its component's index."""
    for depth in range(len(parts) - 1, -1, -1):
        found = _CONTAINER.fullmatch(parts[depth])
        if found:
            return found.group(2), _RUNTIMES.get(found.group(1) or ""), depth
    return None, None, 0


def _pod(parts: list[str]) -> tuple[str | None, int]:
    for depth in range(len(parts) - 1, -1, -1):
        found = _POD.search(parts[depth])
        if found:
            uid = found.group(1).replace("_", "-")
            return uid, depth
    return None, 0


def _qos(parts: list[str], pod_uid: str | None) -> str | None:
    """The pod's QoS class from the components up to and including the pod's."""
    if pod_uid is None or not parts:
        return None
    for part in parts:
        found = _QOS.search(part)
        if found:
            return found.group(1)
    # Guaranteed pods sit right under the kubepods cgroup; a path cut short
    # by a cgroup namespace may not show it.
    pod, parent = parts[-1], parts[-2] if len(parts) > 1 else ""
    if pod.startswith(_KUBEPODS_PREFIXES) or parent in _KUBEPODS:
        return "guaranteed"
    return None


def _unit(parts: list[str]) -> str | None:
    for part in reversed(parts):
        if part.endswith(_UNIT_SUFFIXES):
            # systemd escapes bytes as \\xNN (UTF-8 ones included): undone as
            # bytes, then decoded as every text the agent reads is.
            raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), display(part).encode())
            return decode(raw)
    return None
