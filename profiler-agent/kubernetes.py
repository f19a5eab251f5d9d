"""Pod metadata from the Kubernetes API: a list+watch of this node's pods, in a thread.

One LIST (fieldSelector spec.nodeName=<node>, served from the API server's
watch cache) and then a WATCH from its resourceVersion, with bookmarks so a
quiet node still advances its resourceVersion; when a watch ends it resumes
from the last resourceVersion seen, and when that is too old (410 Gone) it
lists again. Failures back off exponentially, are logged once, and never
stop profiling: samples keep their cgroup labels (pod_uid, container_id)
meanwhile. Lookups for samples read the in-memory index only (pods.py).
"""

import json
import logging
import random
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from podflame.agent.cgroups import CgroupResolver
from podflame.agent.kubeapi import KubeApi, api_client, valid_text
from podflame.agent.labels import ProcessIdentity, cgroup_of
from podflame.agent.pods import Owner, PodIndex, PodInfo, PodRef, parse_pod
from podflame.agent.workloads import Forbidden, Unavailable, WorkloadResolver

log = logging.getLogger(__name__)

GONE = 410
FORBIDDEN = 403
NOT_FOUND = 404
_OWNER_PATHS = {
    "ReplicaSet": "/apis/apps/v1/namespaces/{namespace}/replicasets/{name}",
    "Job": "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
}


@dataclass(frozen=True)
class WatchTiming:
    connect_timeout: float = 5.0
    list_timeout: float = 30.0  # seconds to read a LIST response
    # The API server ends each watch after this long; the agent then resumes
    # it. Nothing else bounds a quiet watch: a node's pods may not change for
    # hours, and bookmarks are not guaranteed.
    watch_seconds: int = 300
    backoff_initial: float = 1.0
    backoff_max: float = 30.0


@dataclass
class KubernetesStats:
    """Counters of the metadata thread (exported as podflame_agent_kubernetes_*_total)."""

    lists: int = 0
    watches: int = 0
    events: int = 0
    relists_gone: int = 0  # 410 Gone: the resourceVersion was too old
    errors: int = 0
    owner_lookups: int = 0


class _Backoff:
    def __init__(self, initial: float, maximum: float) -> None:
        self._initial, self._maximum = initial, maximum
        self._next = initial

    def delay(self) -> float:
        delay, self._next = self._next, min(self._maximum, self._next * 2)
        return delay * random.uniform(0.8, 1.2)  # agents of many nodes must not retry in step

    def reset(self) -> None:
        self._next = self._initial


class _Trouble:
    """Logs the first failure of a streak, and the recovery; the rest at debug level."""

    def __init__(self) -> None:
        self.failing = False

    def report(self, error: Exception) -> None:
        if self.failing:
            log.debug("Kubernetes API still failing: %s", describe(error))
            return
        self.failing = True
        log.warning(
            "Kubernetes API: %s; samples keep their cgroup labels (pod_uid, container_id) "
            "and the agent keeps retrying",
            describe(error),
        )

    def cleared(self) -> None:
        if self.failing:
            # Logged before the flag flips: whoever sees it cleared finds the line written.
            log.info("Kubernetes API reachable again: pod metadata is current")
            self.failing = False


def describe(error: Exception) -> str:
    if isinstance(error, ApiException):
        if error.status == FORBIDDEN:
            return (
                "forbidden to list or watch pods (the agent's service account needs get, "
                "list and watch on pods)"
            )
        return f"HTTP {error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"


class _Gone(Exception):
    """The resourceVersion is too old: list again."""


class PodWatcher:
    """Keeps a PodIndex equal to the API's view of this node's pods."""

    def __init__(
        self,
        api: KubeApi,
        node: str,
        index: PodIndex,
        label_names: Mapping[str, str],
        timing: WatchTiming = WatchTiming(),
    ) -> None:
        self._api = api
        self._selector = f"spec.nodeName={node}"
        self._index = index
        self._label_names = label_names
        self._timing = timing
        self._workloads = WorkloadResolver(self._read_owner)
        self._backoff = _Backoff(timing.backoff_initial, timing.backoff_max)
        self._trouble = _Trouble()
        self._resource_version: str | None = None
        self._watch: watch.Watch | None = None
        self.stats = KubernetesStats()

    @property
    def failing(self) -> bool:
        return self._trouble.failing

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if self._resource_version is None:
                    self._list()
                    self._succeeded()
                got_events = self._watch_once(stop)
            except _Gone:
                self.stats.relists_gone += 1
                self._resource_version = None
                continue
            except Exception as error:  # API down, slow, forbidden, or odd data
                if stop.is_set():
                    break  # stop() cut the watch short
                self.stats.errors += 1
                self._trouble.report(error)
                stop.wait(self._backoff.delay())
                continue
            self._trouble.cleared()
            if not got_events:  # a watch that ended at once, empty, must not spin
                stop.wait(self._backoff.delay())

    def _succeeded(self) -> None:
        self._trouble.cleared()
        self._backoff.reset()

    def stop(self) -> None:
        """Unblock a watch in progress (run() then returns once its stop event is set)."""
        current = self._watch
        if current is not None:
            current.stop()

    def _list(self) -> None:
        response = self._api.list_pods(
            field_selector=self._selector,
            resource_version="0",  # from the API server's cache, not etcd
            _request_timeout=(self._timing.connect_timeout, self._timing.list_timeout),
        )
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
        self.stats.lists += 1
        pods = [self._resolved(item) for item in body.get("items") or []]
        self._index.replace_all(pod for pod in pods if pod is not None)
        self._resource_version = (body.get("metadata") or {}).get("resourceVersion")
        if not self._resource_version:
            raise ValueError("pod list without a resourceVersion")
        self._resolve_fallbacks()

    def _watch_once(self, stop: threading.Event) -> bool:
        """One watch request, until the API server ends it; whether any event came."""
        self._watch = watch.Watch()
        got_events = False
        try:
            if stop.is_set():  # stopped before stop() could see this watch
                return False
            self.stats.watches += 1
            for event in self._events(self._watch):
                if not got_events:
                    got_events = True
                    self._succeeded()
                self._handle(event)
        except ApiException as error:
            if error.status == GONE:
                raise _Gone() from error
            raise
        finally:
            self._watch = None
        self._resolve_fallbacks()
        return got_events

    def _events(self, current: watch.Watch) -> Iterator[Mapping[str, Any]]:
        timing = self._timing
        events: Iterator[Mapping[str, Any]] = current.stream(
            self._api.list_pods,
            field_selector=self._selector,
            resource_version=self._resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timing.watch_seconds,
            # Past the server's own end of the watch, the API server is hung.
            _request_timeout=(timing.connect_timeout, timing.watch_seconds + 30),
        )
        return events

    def _handle(self, event: Mapping[str, Any]) -> None:
        self.stats.events += 1
        kind = event.get("type")
        obj = event.get("raw_object") or event.get("object") or {}
        meta = obj.get("metadata") or {}
        if kind in ("ADDED", "MODIFIED"):
            pod = self._resolved(obj)
            if pod is not None:
                self._index.upsert(pod)
        elif kind == "DELETED" and meta.get("uid"):
            self._index.delete(meta["uid"])
        elif kind == "BOOKMARK":
            self._index.purge()
        self._resource_version = meta.get("resourceVersion") or self._resource_version

    def _resolved(self, raw: Mapping[str, Any]) -> PodInfo | None:
        # The edge for pod text: lists and watch events both come through here.
        pod = parse_pod(valid_text(raw), self._label_names)
        if pod is None:
            return None
        workload = self._workloads.workload(pod)
        self.stats.owner_lookups = self._workloads.lookups
        return replace(
            pod, workload_kind=workload.kind, workload=workload.name, workload_exact=workload.exact
        )

    def _resolve_fallbacks(self) -> None:
        """Pods whose owner lookup failed get another try (cached and forbidden ones are free)."""
        for pod in self._index.pods():
            if pod.workload_exact:
                continue
            workload = self._workloads.workload(pod)
            if workload.exact:
                self._index.upsert(
                    replace(pod, workload_kind=workload.kind, workload=workload.name)
                )
        self.stats.owner_lookups = self._workloads.lookups

    def _read_owner(self, kind: str, namespace: str, name: str) -> Owner | None:
        path = _OWNER_PATHS[kind]
        timeout = (self._timing.connect_timeout, self._timing.list_timeout)
        try:
            obj = self._api.get_json(path, {"namespace": namespace, "name": name}, timeout)
        except ApiException as error:
            if error.status == FORBIDDEN:
                raise Forbidden(kind) from error
            if error.status == NOT_FOUND:
                return None
            raise Unavailable(kind) from error
        except Exception as error:  # connection refused, timeout
            raise Unavailable(kind) from error
        references = (obj.get("metadata") or {}).get("ownerReferences")
        controller = [r for r in references or [] if r.get("controller")]
        return Owner(controller[0]["kind"], controller[0]["name"]) if controller else None


@dataclass
class KubernetesMetadata:
    """This node's pods, kept current from the API server by a watch thread."""

    watcher: PodWatcher
    index: PodIndex
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.watcher.run, args=(self._stop,), name="kubernetes", daemon=True
        )
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.watcher.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def pod_by_ip(self, ip: str) -> PodRef | None:
        """Which pod of this node has the IP `ip`: namespace, pod, workload_kind, workload.

        For the network tracer, to label a connection's peer. An index read,
        never an API call; None for IPs of no pod on this node (other nodes,
        services, host-network pods, whose IP is the node's). A deleted pod's
        IP still answers for a while, unless a new pod has taken it.
        """
        return self.index.pod_by_ip(ip)

    @property
    def stats(self) -> KubernetesStats:
        return self.watcher.stats

    def cache_sizes(self) -> dict[str, int]:
        return self.index.sizes()


def start_metadata(
    kubeconfig: Path | None,
    node: str,
    label_names: Mapping[str, str],
    deleted_retention: float,
    timing: WatchTiming = WatchTiming(),
) -> KubernetesMetadata | None:
    """Start watching this node's pods; None when there is no API server to ask."""
    configured = api_client(kubeconfig)
    if configured is None:
        return None
    api = KubeApi(configured)
    index = PodIndex(deleted_retention=deleted_retention)
    metadata = KubernetesMetadata(PodWatcher(api, node, index, label_names, timing), index)
    metadata.start()
    log.info("watching the pods of node %s at %s", node, api.host)
    return metadata


@dataclass(frozen=True)
class PodLabels:
    """LabelProvider: namespace, pod, container, workload, image and pod labels."""

    index: PodIndex
    resolver: CgroupResolver

    def labels(self, process: ProcessIdentity) -> dict[str, str]:
        identity = cgroup_of(process, self.resolver)
        if identity is None or not identity.in_container:
            return {}
        match = self.index.lookup(identity.pod_uid, identity.container_id)
        return match.labels() if match else {}
