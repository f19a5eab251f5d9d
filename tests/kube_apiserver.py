"""An in-test Kubernetes API server: the parts of the wire protocol the agent uses.

There is no kube-apiserver here, so this serves what the real `kubernetes`
client asks for, the way the API server answers it:

- GET /api/v1/pods?fieldSelector=spec.nodeName=N: a JSON PodList whose
  metadata.resourceVersion is the store's current version;
- the same with watch=true&resourceVersion=R: a chunked stream of JSON lines,
  {"type": ADDED|MODIFIED|DELETED|BOOKMARK, "object": ...}, of the changes
  after R, then live ones, until timeoutSeconds; a resourceVersion older than
  the compacted history gets an ERROR event with a 410 Status (Expired);
- GET /apis/apps/v1/namespaces/NS/replicasets/NAME and
  /apis/batch/v1/namespaces/NS/jobs/NAME: the object, 404, or 403 when the
  test forbids the resource (an RBAC denial, with a Status body).

Tests change the store (add, modify, delete pods; compact; send bookmarks;
end watches), make requests fail or hang, stop the server (API down) and
start it again on the same port, and read which requests came.
"""

import copy
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.conftest import free_port

Json = dict[str, Any]


@dataclass
class Request:
    path: str
    query: dict[str, str]

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch") == "true"


@dataclass
class _Event:
    version: int
    type: str
    pod: Json


@dataclass
class ApiState:
    """The store and the test's switches; shared by the handler threads under `changed`."""

    pods: dict[str, Json] = field(default_factory=dict)  # uid -> pod
    objects: dict[tuple[str, str, str], Json] = field(default_factory=dict)  # (res, ns, name)
    events: list[_Event] = field(default_factory=list)
    version: int = 100
    compacted: int = 0  # watches from a version below this get 410
    forbidden: set[str] = field(default_factory=set)  # resources answering 403
    failing: int | None = None  # HTTP status every pod request answers with
    delay: float = 0.0  # seconds before any answer (a slow API server)
    watch_generation: int = 0  # bumped to end the open watches
    requests: list[Request] = field(default_factory=list)
    delivered: set[int] = field(default_factory=set)  # versions written to a watch
    connections: set[socket.socket] = field(default_factory=set)
    changed: threading.Condition = field(default_factory=threading.Condition)


class FakeKubeApi:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.state = ApiState()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle: stop() is the API server going down, start() coming back
    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self.end_watches()
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        # Kept-alive connections too: the client must find nobody there.
        with self.state.changed:
            connections, self.state.connections = self.state.connections, set()
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig file for this server (plain HTTP, no credentials)."""
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "test", "cluster": {"server": self.url}}],
                    "users": [{"name": "test", "user": {}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                    "current-context": "test",
                }
            )
        )
        return path

    # -- the store
    # Each change returns its resourceVersion.
    def add_pod(self, pod: Json) -> int:
        return self._change("ADDED", pod)

    def modify_pod(self, pod: Json) -> int:
        return self._change("MODIFIED", pod)

    def delete_pod(self, uid: str) -> int:
        with self.state.changed:
            pod = self.state.pods[uid]
        return self._change("DELETED", pod)

    def delivered(self, version: int) -> bool:
        """Whether the change `version` was written to a watch stream."""
        with self.state.changed:
            return version in self.state.delivered

    def add_object(self, resource: str, obj: Json) -> None:
        meta = obj["metadata"]
        with self.state.changed:
            self.state.objects[(resource, meta["namespace"], meta["name"])] = obj

    def compact(self) -> None:
        """Forget the change history: watches from an older resourceVersion get 410 Gone."""
        with self.state.changed:
            self.state.compacted = self.state.version
            self.state.events.clear()

    def bookmark(self) -> None:
        """A BOOKMARK at the current resourceVersion to every watch that allows them."""
        self._change("BOOKMARK", None)

    def end_watches(self) -> None:
        """End the open watches, as the API server does when their timeout is reached."""
        with self.state.changed:
            self.state.watch_generation += 1
            self.state.changed.notify_all()

    def set(self, **switches: Any) -> None:
        """forbidden={...}, failing=403, delay=2.0: applies to later requests."""
        with self.state.changed:
            for name, value in switches.items():
                setattr(self.state, name, value)

    def requests(self, path_prefix: str = "", watch: bool | None = None) -> list[Request]:
        with self.state.changed:
            return [
                r
                for r in self.state.requests
                if r.path.startswith(path_prefix) and (watch is None or r.is_watch == watch)
            ]

    def wait_for(self, predicate: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("the fake API server did not see what the test waited for")
            time.sleep(0.05)

    def _change(self, kind: str, pod: Json | None) -> int:
        with self.state.changed:
            self.state.version += 1
            if pod is not None:
                pod = copy.deepcopy(pod)
                pod["metadata"]["resourceVersion"] = str(self.state.version)
                uid = pod["metadata"]["uid"]
                if kind == "DELETED":
                    self.state.pods.pop(uid, None)
                else:
                    self.state.pods[uid] = pod
            else:
                pod = {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self.state.version)},
                }
            self.state.events.append(_Event(self.state.version, kind, pod))
            self.state.changed.notify_all()
            return self.state.version


@contextmanager
def fake_kube_api(port: int | None = None) -> Iterator[FakeKubeApi]:
    api = FakeKubeApi(port)
    api.start()
    try:
        yield api
    finally:
        api.stop()


def status(code: int, reason: str, message: str) -> Json:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ApiState

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def handle(self) -> None:
        with suppress(OSError):  # a client that went away (closed, timed out)
            super().handle()

    def setup(self) -> None:
        super().setup()
        with self.state.changed:
            self.state.connections.add(self.connection)

    def finish(self) -> None:
        with self.state.changed:
            self.state.connections.discard(self.connection)
        with suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self.state.changed:
            self.state.requests.append(Request(parts.path, query))
            delay, failing = self.state.delay, self.state.failing
        if delay:
            time.sleep(delay)
        segments = parts.path.strip("/").split("/")
        if parts.path == "/api/v1/pods":
            if failing or "pods" in self.state.forbidden:
                code = failing or 403
                self._status(code, "Forbidden" if code == 403 else "ServiceUnavailable")
            elif query.get("watch") == "true":
                self._watch(query)
            else:
                self._list(query)
        elif len(segments) == 7 and segments[3] == "namespaces":
            self._get(segments[5], segments[4], segments[6])
        else:
            self._status(404, "NotFound")

    def _get(self, resource: str, namespace: str, name: str) -> None:
        if resource in self.state.forbidden:
            self._status(403, "Forbidden", f"cannot get resource {resource!r}")
            return
        with self.state.changed:
            obj = self.state.objects.get((resource, namespace, name))
        if obj is None:
            self._status(404, "NotFound", f"{resource} {name!r} not found")
        else:
            self._json(200, obj)

    def _list(self, query: Mapping[str, str]) -> None:
        node = _node(query)
        with self.state.changed:
            items = [p for p in self.state.pods.values() if _on_node(p, node)]
            version = self.state.version
        body = {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(version)},
            "items": items,
        }
        self._json(200, body)

    def _watch(self, query: Mapping[str, str]) -> None:
        node, bookmarks = _node(query), query.get("allowWatchBookmarks") == "true"
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with self.state.changed:
            generation = self.state.watch_generation
            if since < self.state.compacted:
                message = f"too old resource version: {since} ({self.state.compacted})"
                self._chunk({"type": "ERROR", "object": status(410, "Expired", message)})
                self._end()
                return
        try:
            self._stream(since, node, bookmarks, deadline, generation)
        except OSError:
            return  # the client went away
        self._end()

    def _stream(
        self, since: int, node: str | None, bookmarks: bool, deadline: float, generation: int
    ) -> None:
        with self.state.changed:
            while time.monotonic() < deadline and generation == self.state.watch_generation:
                new = [e for e in self.state.events if e.version > since]
                for event in new:
                    since = event.version
                    if event.type == "BOOKMARK" and not bookmarks:
                        continue
                    if event.type != "BOOKMARK" and not _on_node(event.pod, node):
                        continue
                    self._chunk({"type": event.type, "object": event.pod})
                    self.state.delivered.add(event.version)
                self.state.changed.wait(0.2)

    def _chunk(self, event: Json) -> None:
        data = (json.dumps(event) + "\n").encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def _status(self, code: int, reason: str, message: str = "") -> None:
        self._json(code, status(code, reason, message or reason))

    def _json(self, code: int, body: Json) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _node(query: Mapping[str, str]) -> str | None:
    selector = query.get("fieldSelector", "")
    return selector.removeprefix("spec.nodeName=") if selector else None


def _on_node(pod: Json, node: str | None) -> bool:
    return node is None or pod.get("spec", {}).get("nodeName") == node


# -- building the objects tests put in the store


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    container_id: str  # 64 hex; "" while not started
    image: str = "registry.example/app:1.0"
    kind: str = "containers"  # or initContainers, ephemeralContainers
    runtime: str = "containerd"
    previous_id: str = ""  # the container's last terminated instance


_STATUS_KEYS = {
    "containers": "containerStatuses",
    "initContainers": "initContainerStatuses",
    "ephemeralContainers": "ephemeralContainerStatuses",
}


def pod_json(
    name: str,
    uid: str,
    node: str,
    containers: Sequence[ContainerSpec],
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    owner: tuple[str, str] | None = None,
    ips: Sequence[str] = (),
    host_network: bool = False,
    annotations: Mapping[str, str] | None = None,
) -> Json:
    metadata: Json = {"name": name, "namespace": namespace, "uid": uid}
    metadata["labels"] = dict(labels or {})
    metadata["annotations"] = dict(annotations or {})
    if owner:
        kind, owner_name = owner
        api_version = {"ReplicaSet": "apps/v1", "Job": "batch/v1", "Node": "v1"}.get(kind, "v1")
        metadata["ownerReferences"] = [
            {
                "apiVersion": api_version,
                "kind": kind,
                "name": owner_name,
                "uid": f"{owner_name}-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    spec: Json = {"nodeName": node, "hostNetwork": host_network}
    status: Json = {"phase": "Running"}
    if ips:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": ip} for ip in ips]
    for container in containers:
        spec.setdefault(container.kind, []).append(
            {"name": container.name, "image": container.image}
        )
        status.setdefault(_STATUS_KEYS[container.kind], []).append(_container_status(container))
    return {"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": spec, "status": status}


def _container_status(container: ContainerSpec) -> Json:
    image = container.image if "/" in container.image else f"docker.io/library/{container.image}"
    entry: Json = {
        "name": container.name,
        "image": image,
        "imageID": f"{image.split(':')[0]}@sha256:{'ab' * 32}",
        "ready": bool(container.container_id),
        "restartCount": 1 if container.previous_id else 0,
        "state": {"running": {}} if container.container_id else {"waiting": {}},
        "lastState": {},
    }
    if container.container_id:
        entry["containerID"] = f"{container.runtime}://{container.container_id}"
    if container.previous_id:
        previous = f"{container.runtime}://{container.previous_id}"
        entry["lastState"] = {"terminated": {"exitCode": 1, "containerID": previous}}
    return entry


def owned_object(kind: str, namespace: str, name: str, owner: tuple[str, str] | None) -> Json:
    """A ReplicaSet or Job, owned by `owner` (kind, name) if given."""
    api_version = "apps/v1" if kind == "ReplicaSet" else "batch/v1"
    metadata: Json = {"name": name, "namespace": namespace, "uid": f"{name}-uid"}
    if owner:
        group = "apps/v1" if owner[0] == "Deployment" else "batch/v1"
        metadata["ownerReferences"] = [
            {"apiVersion": group, "kind": owner[0], "name": owner[1], "controller": True}
        ]
    return {"kind": kind, "apiVersion": api_version, "metadata": metadata, "spec": {}}
