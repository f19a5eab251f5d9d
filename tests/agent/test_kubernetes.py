"""Pod metadata through the real `kubernetes` client against an in-test API server.

The agent's watcher lists and watches this node's pods; the API server speaks
the list/watch protocol (tests/kube_apiserver.py): resourceVersions, chunked
watch streams with bookmarks, 410 Gone, 403 for what RBAC forbids, and it
can go down, be slow, and come back.
"""

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from podflame.agent.kubeapi import api_client
from podflame.agent.kubernetes import KubernetesMetadata, WatchTiming, start_metadata
from podflame.agent.pods import PodMatch, PodRef, pod_label_names
from podflame.agent.settings import DEFAULT_POD_LABELS
from tests.conftest import free_port
from tests.kube_apiserver import (
    ContainerSpec,
    FakeKubeApi,
    fake_kube_api,
    owned_object,
    pod_json,
)

NODE = "node-a"
LABELS = pod_label_names(DEFAULT_POD_LABELS.split(","))
FAST = WatchTiming(
    connect_timeout=1,
    list_timeout=1.5,
    watch_seconds=60,
    backoff_initial=0.05,
    backoff_max=0.3,
)


def cid(n: int) -> str:
    return f"{n:064x}"


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"


def wait_until(predicate: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


@contextmanager
def watching(
    api: FakeKubeApi, tmp_path: Path, retention: float = 600
) -> Iterator[KubernetesMetadata]:
    metadata = start_metadata(
        api.kubeconfig(tmp_path / "kubeconfig"), NODE, LABELS, retention, FAST
    )
    assert metadata is not None
    try:
        yield metadata
    finally:
        metadata.close()


def simple_pod(n: int, node: str = NODE, **options: object) -> dict[str, object]:
    return pod_json(f"pod-{n}", uid(n), node, [ContainerSpec("main", cid(n))], **options)  # type: ignore[arg-type]


def found(metadata: KubernetesMetadata, n: int) -> PodMatch | None:
    return metadata.index.lookup(uid(n), cid(n))


def test_lists_then_watches_only_this_nodes_pods(tmp_path: Path) -> None:
    with fake_kube_api() as api:
        api.add_pod(simple_pod(1))
        api.add_pod(simple_pod(2, node="node-b"))
        with watching(api, tmp_path) as metadata:
            wait_until(lambda: found(metadata, 1))
            api.add_pod(simple_pod(3))  # arrives through the watch
            api.add_pod(simple_pod(4, node="node-b"))
            wait_until(lambda: found(metadata, 3))
            assert found(metadata, 2) is None and found(metadata, 4) is None
            (listing,) = api.requests("/api/v1/pods", watch=False)
            watches = api.requests("/api/v1/pods", watch=True)
    assert listing.query["fieldSelector"] == f"spec.nodeName={NODE}"
    assert listing.query["resourceVersion"] == "0"  # served from the API server's cache
    assert watches[0].query["fieldSelector"] == f"spec.nodeName={NODE}"
    assert watches[0].query["allowWatchBookmarks"] == "true"
    assert watches[0].query["resourceVersion"] == "102"  # the list's: two pods after 100


def test_labels_of_a_pod_and_its_containers(tmp_path: Path) -> None:
    containers = [
        ContainerSpec("app", cid(1), image="shop/api:2.1", previous_id=cid(9)),
        ContainerSpec("setup", cid(2), image="busybox:1.36", kind="initContainers"),
        ContainerSpec("debugger", cid(3), image="busybox:1.36", kind="ephemeralContainers"),
        ContainerSpec("sidecar", cid(4), image="envoy:1.30", runtime="cri-o"),
    ]
    labels = {
        "app.kubernetes.io/name": "api",
        "app.kubernetes.io/version": "2.1",
        "team": "shop",  # not allow-listed
    }
    pod = pod_json("api-0", uid(1), NODE, containers, namespace="shop", labels=labels)
    with fake_kube_api() as api:
        api.add_pod(pod)
        with watching(api, tmp_path) as metadata:
            wait_until(lambda: found(metadata, 1))
            matches = {n: metadata.index.lookup(None, cid(n)) for n in (1, 2, 3, 4, 9)}
    names = {n: m.container.name for n, m in matches.items() if m and m.container}
    assert names == {1: "app", 2: "setup", 3: "debugger", 4: "sidecar", 9: "app"}
    app = matches[1]
    assert app is not None
    assert app.labels() == {
        "namespace": "shop",
        "pod": "api-0",
        "container": "app",
        "workload_kind": "Pod",
        "workload": "api-0",
        "image": "shop/api:2.1",
        "image_id": "shop/api@sha256:" + "ab" * 32,
        "app_kubernetes_io_name": "api",
        "app_kubernetes_io_version": "2.1",
    }


def test_a_container_not_in_the_status_yet_gets_the_pods_labels(tmp_path: Path) -> None:
    starting = pod_json("pod-1", uid(1), NODE, [ContainerSpec("main", "")])
    with fake_kube_api() as api:
        api.add_pod(starting)
        with watching(api, tmp_path) as metadata:
            wait_until(lambda: found(metadata, 1))
            match = found(metadata, 1)
            assert match is not None and match.container is None
            assert match.labels()["pod"] == "pod-1" and "container" not in match.labels()
            api.modify_pod(simple_pod(1))  # the container started
            wait_until(lambda: (m := found(metadata, 1)) and m.container)


def test_a_deleted_pod_is_found_for_a_while(tmp_path: Path) -> None:
    with fake_kube_api() as api:
        api.add_pod(simple_pod(1, ips=["10.1.0.5"]))
        with watching(api, tmp_path) as metadata:
            wait_until(lambda: found(metadata, 1))
            api.delete_pod(uid(1))
            wait_until(lambda: not metadata.index.pods())
            # Its processes' last samples are still labelled.
            match = found(metadata, 1)
            assert match is not None and match.pod.name == "pod-1"
            assert metadata.pod_by_ip("10.1.0.5") == PodRef("default", "pod-1", "Pod", "pod-1")


def test_bookmarks_let_a_watch_resume_without_a_relist(tmp_path: Path) -> None:
    with fake_kube_api() as api:
        api.add_pod(simple_pod(1))
        with watching(api, tmp_path) as metadata:
            wait_until(lambda: api.requests("/api/v1/pods", watch=True))
            # Other nodes' pods advance the resourceVersion; this watch never sees them.
            for n in range(2, 6):
                api.add_pod(simple_pod(n, node="node-b"))
            api.bookmark()
            bookmark = str(api.state.version)
            wait_until(lambda: metadata.stats.events >= 1)
            api.compact()  # the history before the bookmark is gone
            api.end_watches()
            wait_until(lambda: len(api.requests("/api/v1/pods", watch=True)) >= 2)
            second = api.requests("/api/v1/pods", watch=True)[1]
            api.add_pod(simple_pod(6))
            wait_until(lambda: found(metadata, 6))
            stats = metadata.stats
    assert second.query["resourceVersion"] == bookmark
    assert (stats.lists, stats.relists_gone) == (1, 0)


def test_410_gone_relists(tmp_path: Path) -> None:
    with fake_kube_api() as api:
        api.add_pod(simple_pod(1))
        with watching(api, tmp_path) as metadata:
            wait_until(lambda: found(metadata, 1))
            api.stop()  # down while pods change and the history is compacted
            api.add_pod(simple_pod(2))
            api.delete_pod(uid(1))
            api.compact()
            api.start()
            wait_until(lambda: found(metadata, 2))
            assert [p.name for p in metadata.index.pods()] == ["pod-2"]  # pod-1's deletion
            stats = metadata.stats
    assert stats.relists_gone >= 1 and stats.lists >= 2


def test_api_down_at_start_logs_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeKubeApi(free_port())
    api.add_pod(simple_pod(1))
    metadata_log = "podflame.agent.kubernetes"
    caplog.set_level(logging.INFO, logger=metadata_log)
    with watching(api, tmp_path) as metadata:
        wait_until(lambda: metadata.stats.errors >= 3)
        assert metadata.watcher.failing and found(metadata, 1) is None
        api.start()
        try:
            wait_until(lambda: found(metadata, 1))
            wait_until(lambda: not metadata.watcher.failing)
            messages = [r.getMessage() for r in caplog.records if r.name == metadata_log]
        finally:
            api.stop()
    assert len([m for m in messages if "keeps retrying" in m]) == 1, messages
    assert len([m for m in messages if "reachable again" in m]) == 1, messages


@pytest.mark.parametrize(
    "trouble",
    [{"delay": 3.0}, {"forbidden": {"pods"}}, {"failing": 503}],
    ids=["slow", "forbidden", "unavailable"],
)
def test_trouble_with_the_api_is_retried_until_it_clears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, trouble: dict[str, object]
) -> None:
    caplog.set_level(logging.INFO, logger="podflame.agent.kubernetes")
    with fake_kube_api() as api:
        api.set(**trouble)
        api.add_pod(simple_pod(1))
        with watching(api, tmp_path) as metadata:
            wait_until(lambda: metadata.stats.errors >= 2)
            assert found(metadata, 1) is None
            api.set(delay=0.0, forbidden=set(), failing=None)
            wait_until(lambda: found(metadata, 1))
            wait_until(lambda: not metadata.watcher.failing)
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    if "forbidden" in trouble:
        assert "get, list and watch on pods" in warnings[0]


def workload_pods() -> list[dict[str, object]]:
    def pod(n: int, owner: tuple[str, str] | None, **options: object) -> dict[str, object]:
        return simple_pod(n, namespace="shop", owner=owner, **options)

    return [
        pod(1, ("ReplicaSet", "api-7c9f5d"), labels={"pod-template-hash": "7c9f5d"}),
        pod(2, ("ReplicaSet", "api-7c9f5d"), labels={"pod-template-hash": "7c9f5d"}),
        pod(3, ("ReplicaSet", "legacy")),
        pod(4, ("StatefulSet", "db")),
        pod(5, ("DaemonSet", "logs")),
        pod(6, ("Job", "report-28930140")),
        pod(7, ("Job", "migrate")),
        pod(8, None),
        pod(
            9,
            ("Node", NODE),
            annotations={"kubernetes.io/config.mirror": "9729a196c4723b60ab401eaff722982d"},
        ),
    ]


def workloads(metadata: KubernetesMetadata) -> dict[str, tuple[str, str]]:
    return {p.name: (p.workload_kind, p.workload) for p in metadata.index.pods()}


def test_workloads_through_owner_references(tmp_path: Path) -> None:
    with fake_kube_api() as api:
        api.add_object(
            "replicasets", owned_object("ReplicaSet", "shop", "api-7c9f5d", ("Deployment", "api"))
        )
        api.add_object("replicasets", owned_object("ReplicaSet", "shop", "legacy", None))
        api.add_object(
            "jobs", owned_object("Job", "shop", "report-28930140", ("CronJob", "report"))
        )
        api.add_object("jobs", owned_object("Job", "shop", "migrate", None))
        for pod in workload_pods():
            api.add_pod(pod)
        with watching(api, tmp_path) as metadata:
            wait_until(lambda: len(metadata.index.pods()) == 9)
            found_workloads = workloads(metadata)
            static = metadata.index.lookup("9729a196c4723b60ab401eaff722982d", None)
        rs_gets = api.requests("/apis/apps/v1/namespaces/shop/replicasets/api-7c9f5d")
    assert found_workloads == {
        "pod-1": ("Deployment", "api"),
        "pod-2": ("Deployment", "api"),
        "pod-3": ("ReplicaSet", "legacy"),
        "pod-4": ("StatefulSet", "db"),
        "pod-5": ("DaemonSet", "logs"),
        "pod-6": ("CronJob", "report"),
        "pod-7": ("Job", "migrate"),
        "pod-8": ("Pod", "pod-8"),
        "pod-9": ("StaticPod", "pod-9"),
    }
    assert len(rs_gets) == 1  # cached: one GET for the ReplicaSet of two pods
    assert static is not None and static.pod.name == "pod-9"  # by its cgroup's UID


def test_forbidden_owner_lookups_fall_back_and_log_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with fake_kube_api() as api:
        api.set(forbidden={"replicasets", "jobs"})
        for pod in workload_pods():
            api.add_pod(pod)
        with watching(api, tmp_path) as metadata:
            wait_until(lambda: len(metadata.index.pods()) == 9)
            found_workloads = workloads(metadata)
        lookups = api.requests("/apis/")
    assert found_workloads["pod-1"] == ("Deployment", "api")  # pod-template-hash stripped
    assert found_workloads["pod-3"] == ("ReplicaSet", "legacy")
    assert found_workloads["pod-6"] == ("Job", "report-28930140")
    assert found_workloads["pod-4"] == ("StatefulSet", "db")
    assert len(lookups) == 2  # one denial per kind, then no more asking
    forbidden = [r.getMessage() for r in caplog.records if "RBAC forbids" in r.getMessage()]
    assert len(forbidden) == 2, forbidden


def test_pod_by_ip(tmp_path: Path) -> None:
    with fake_kube_api() as api:
        api.add_pod(simple_pod(1, ips=["10.1.0.5", "fd00::5"], owner=("StatefulSet", "db")))
        api.add_pod(simple_pod(2, ips=["192.168.1.10"], host_network=True))
        with watching(api, tmp_path) as metadata:
            wait_until(lambda: len(metadata.index.pods()) == 2)
            by_ip = {ip: metadata.pod_by_ip(ip) for ip in ("10.1.0.5", "fd00::5", "192.168.1.10")}
            api.delete_pod(uid(1))
            api.add_pod(simple_pod(3, ips=["10.1.0.5"]))  # the IP is taken again
            wait_until(lambda: found(metadata, 3))
            reused = metadata.pod_by_ip("10.1.0.5")
    db = PodRef("default", "pod-1", "StatefulSet", "db")
    assert by_ip == {"10.1.0.5": db, "fd00::5": db, "192.168.1.10": None}
    assert reused == PodRef("default", "pod-3", "Pod", "pod-3")


def test_lookups_never_call_the_api(tmp_path: Path) -> None:
    with fake_kube_api() as api:
        api.add_pod(simple_pod(1))
        with watching(api, tmp_path) as metadata:
            wait_until(lambda: found(metadata, 1))
            # The watch follows the list: on a busy machine it may not have been made yet.
            wait_until(lambda: any(r.query.get("watch") == "true" for r in api.requests()))
            before = len(api.requests())
            for n in range(20_000):
                metadata.index.lookup(uid(n % 50), cid(n % 50))
                metadata.pod_by_ip(f"10.0.0.{n % 250}")
            assert len(api.requests()) == before


def test_no_api_server_outside_a_cluster(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    caplog.set_level(logging.INFO)
    assert api_client(None) is None
    assert "pod metadata is off" in caplog.text


def test_a_broken_kubeconfig_turns_metadata_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    assert api_client(broken) is None
    assert "cannot use --kubeconfig" in caplog.text
