"""Kubernetes attribution end to end: a real agent (BPF) and server (chDB), real cgroups,
processes in their own PID and mount namespaces, and the in-test API server.

Each workload burns CPU in a container cgroup laid out as a kubelet lays it
out; the labels are asserted through the server's HTTP API. Covered: a pod
known from the start, a pod that shows up in the watch after its container's
first samples (late), a pod deleted right after its container exits (its
last samples are drained after the deletion), and an API server that is down
when the agent starts, forbids ReplicaSet lookups, and comes up later.
"""

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import PODFLAME, running_server, stop
from tests.fixtures import build_burn7030
from tests.kube_apiserver import ContainerSpec, FakeKubeApi, owned_object, pod_json
from tests.kube_cgroups import ContainerCgroup, container_cgroup, inner_pid

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

NODE = "node-e2e"
INTERVAL = 1
POD_LABELS = {"app.kubernetes.io/name": "api", "app.kubernetes.io/version": "2.1", "app": "api"}


@contextmanager
def running_agent(tmp_path: Path, server: str, kubeconfig: Path) -> Iterator[Path]:
    """`podflame agent` watching NODE's pods; stopped (last drain shipped) on exit."""
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as log:
        command = [
            *PODFLAME,
            "agent",
            "--server",
            server,
            "--frequency",
            "99",
            "--interval",
            str(INTERVAL),
            "--metrics-port",
            "0",
            "--node-name",
            NODE,
            "--kubeconfig",
            str(kubeconfig),
        ]
        agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "sampling all CPUs" in log_path.read_text() or agent.poll(), 120)
            assert agent.poll() is None, log_path.read_text()
            yield log_path
        finally:
            code = stop(agent)
    assert code == 0, log_path.read_text()


def wait_for(predicate: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.1)


def burn(cgroup: ContainerCgroup, binary: Path) -> int:
    """Burn CPU in the container until it is removed; the burner's host pid.

    Niced: on two CPUs, two burners must not starve the agent.
    """
    command = ["nice", "-n", "19", str(binary), "1000"]
    return inner_pid(cgroup.run(command, stdout=subprocess.DEVNULL))


def query(url: str, path: str, selector: str) -> dict[str, object]:
    params = {"query": selector, "from": "now-15m", "until": "now", "type": "cpu"}
    response = httpx.get(url + path, params=params, timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def total(url: str, selector: str) -> int:
    return int(query(url, "/api/v1/top", selector)["total"])  # type: ignore[call-overload]


def values(url: str, name: str, selector: str) -> list[str]:
    return list(query(url, f"/api/v1/labels/{name}/values", selector)["values"])  # type: ignore[call-overload]


def api_pod(
    cgroup: ContainerCgroup, name: str, owner: tuple[str, str], **options: object
) -> dict[str, object]:
    container = ContainerSpec("api", cgroup.container_id, image="shop/api:2.1")
    return pod_json(
        name, cgroup.pod_uid, NODE, [container], namespace="shop", owner=owner, **options
    )  # type: ignore[arg-type]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with running_server(tmp_path) as url:
        yield url


def test_known_late_and_deleted_pods(tmp_path: Path, server: str) -> None:
    binary = build_burn7030(tmp_path / "burn7030")
    api = FakeKubeApi()
    url = server
    with ExitStack() as stack:
        known = stack.enter_context(container_cgroup("v1", "cgroupfs", qos="burstable"))
        late = stack.enter_context(
            container_cgroup("v2", "systemd", qos="besteffort", runtime="cri-o")
        )
        api.add_object(
            "replicasets", owned_object("ReplicaSet", "shop", "api-7c9f5d", ("Deployment", "api"))
        )
        labels = {**POD_LABELS, "pod-template-hash": "7c9f5d"}
        api.add_pod(api_pod(known, "api-7c9f5d-x2x4q", ("ReplicaSet", "api-7c9f5d"), labels=labels))
        api.start()
        stack.callback(api.stop)
        stack.enter_context(running_agent(tmp_path, url, api.kubeconfig(tmp_path / "kubeconfig")))
        known_pid = burn(known, binary)
        late_pid = burn(late, binary)
        # The late container's first batches are stored before its pod exists...
        late_selector = f'container_id="{late.container_id}"'
        wait_for(lambda: total(url, "{" + late_selector + "}") > 0)
        version = api.add_pod(api_pod(late, "batch-0", ("StatefulSet", "batch")))
        wait_for(lambda: api.delivered(version))
        # ...and later ones carry the pod's labels.
        wait_for(lambda: total(url, "{" + late_selector + ', pod="batch-0"}') > 0)
        late.remove()
        known.remove()  # the container exits, then its pod is deleted...
        version = api.delete_pod(known.pod_uid)
        wait_for(lambda: api.delivered(version))
    # ...and its last samples are drained after that, when the agent stops.

    # The known pod: every label, on every sample, through selectors on
    # columns and on the labels map alike.
    by_container = f'{{container_id="{known.container_id}"}}'
    assert total(url, by_container) > 0
    # Deleted-pod case: even the samples drained after the deletion have the pod.
    assert total(url, f'{{container_id="{known.container_id}", pod=""}}') == 0
    expected = {
        "node": NODE,
        "namespace": "shop",
        "pod": "api-7c9f5d-x2x4q",
        "container": "api",
        "workload_kind": "Deployment",
        "workload": "api",
        "image": "shop/api:2.1",
        "image_id": "shop/api@sha256:" + "ab" * 32,
        "pod_uid": known.pod_uid,
        "app_kubernetes_io_name": "api",
        "app_kubernetes_io_version": "2.1",
        "app": "api",
    }
    whole = total(url, by_container)
    for name, value in expected.items():
        assert values(url, name, by_container) == [value], name
        # Every sample of the container carries it, and a selector on it finds them.
        assert total(url, f'{{{name}="{value}", pod_uid="{known.pod_uid}"}}') == whole, name
    assert str(known_pid) in values(url, "pid", by_container)
    assert values(url, "comm", f'{{pid="{known_pid}"}}') == ["burn7030"]
    names = query(url, "/api/v1/labels", f'{{node="{NODE}"}}')["names"]
    assert set(expected) | {"container_id", "comm", "pid"} <= set(names)  # type: ignore[call-overload]

    # The late pod: its first samples carry the cgroup's labels only, later ones the pod's.
    assert total(url, f'{{{late_selector}, pod=""}}') > 0
    assert total(url, f'{{{late_selector}, pod="batch-0", workload="batch"}}') > 0
    assert total(url, f'{{{late_selector}, pod_uid!="{late.pod_uid}"}}') == 0
    assert str(late_pid) in values(url, "pid", "{" + late_selector + "}")


def test_api_down_then_up_with_forbidden_lookups(tmp_path: Path, server: str) -> None:
    binary = build_burn7030(tmp_path / "burn7030")
    api = FakeKubeApi()  # not started: the API server is down
    url = server
    with ExitStack() as stack:
        web = stack.enter_context(container_cgroup("v1", "systemd", qos="guaranteed"))
        api.set(forbidden={"replicasets"})
        pod = api_pod(
            web,
            "web-5d4f8b7c9-qwz8t",
            ("ReplicaSet", "web-5d4f8b7c9"),
            labels={"pod-template-hash": "5d4f8b7c9"},
        )
        api.add_pod(pod)
        # Stopped after the agent (callbacks run last in, first out): an API gone while
        # the agent stops would be a second outage in its log.
        stack.callback(api.stop)
        log = stack.enter_context(
            running_agent(tmp_path, url, api.kubeconfig(tmp_path / "kubeconfig"))
        )
        burn(web, binary)
        # Samples flow while the API is down, with the cgroup's labels.
        by_container = f'container_id="{web.container_id}"'
        down = "{" + by_container + f', pod="", pod_uid="{web.pod_uid}"' + "}"
        wait_for(lambda: total(url, down) > 0)
        api.start()
        # The agent finds the API by itself, and labels the pod.
        selector = "{" + by_container + ', pod="web-5d4f8b7c9-qwz8t"}'
        wait_for(lambda: total(url, selector) > 0, 120)
        web.remove()
    # ReplicaSets are forbidden: the Deployment comes from the pod-template-hash.
    assert values(url, "workload_kind", selector) == ["Deployment"]
    assert values(url, "workload", selector) == ["web"]
    text = log.read_text()
    assert text.count("keeps retrying") == 1, text
    assert text.count("reachable again") == 1, text
    assert text.count("RBAC forbids reading ReplicaSets") == 1, text
