"""The pod index, label names and workload fallbacks, with a clock the test turns."""

import pytest

from podflame.agent.pods import (
    AGENT_LABELS,
    LABEL_NAME,
    ContainerInfo,
    Owner,
    PodIndex,
    PodInfo,
    label_name,
    pod_label_names,
)
from podflame.agent.settings import AgentSettings
from podflame.agent.workloads import Forbidden, Unavailable, Workload, WorkloadResolver


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pod(uid: str, container_id: str = "", ips: tuple[str, ...] = (), **fields: object) -> PodInfo:
    containers = {container_id: ContainerInfo("main", "img", "")} if container_id else {}
    values: dict[str, object] = {
        "uid": uid,
        "namespace": "ns",
        "name": f"pod-{uid}",
        "node": "n",
        "owner": None,
        "template_hash": None,
        "labels": {},
        "containers": containers,
        "ips": ips,
        **fields,
    }
    return PodInfo(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("app", "app"),
        ("app.kubernetes.io/name", "app_kubernetes_io_name"),
        ("helm.sh/chart", "helm_sh_chart"),
        ("version", "version"),
        ("3tier", "_3tier"),
        ("pod", "pod_label_pod"),  # the agent's own labels keep their meaning
        ("example.com/namespace", "example_com_namespace"),
        ("namespace", "pod_label_namespace"),
    ],
)
def test_label_names(key: str, name: str) -> None:
    assert label_name(key) == name
    assert LABEL_NAME.fullmatch(name)
    assert name not in AGENT_LABELS


def test_pod_label_keys_are_checked() -> None:
    assert pod_label_names(["app", "app.kubernetes.io/name"]) == {
        "app": "app",
        "app.kubernetes.io/name": "app_kubernetes_io_name",
    }
    with pytest.raises(ValueError, match="both become label 'app_version'"):
        pod_label_names(["app.version", "app-version"])
    for bad in ("-app", "a b", "Example.com/x", "x/", "a" * 64):
        with pytest.raises(ValueError, match="not a Kubernetes label key"):
            pod_label_names([bad])


def test_pod_labels_setting() -> None:
    settings = AgentSettings(pod_labels=" app , team.example.com/owner ,")
    assert settings.pod_label_map() == {
        "app": "app",
        "team.example.com/owner": "team_example_com_owner",
    }
    assert AgentSettings(pod_labels="").pod_label_map() == {}
    with pytest.raises(ValueError, match="not a Kubernetes label key"):
        AgentSettings(pod_labels="app,bad key")


def test_deleted_pods_are_purged_after_the_retention() -> None:
    clock = Clock()
    index = PodIndex(deleted_retention=60, clock=clock)
    index.upsert(pod("a", "c" * 64, ips=("10.0.0.1",)))
    index.delete("a")
    clock.now += 59
    index.purge()
    assert index.lookup("a", None) is not None and index.pod_by_ip("10.0.0.1")
    assert index.pods() == []  # no longer listed as live
    clock.now += 2
    index.purge()
    assert index.lookup("a", "c" * 64) is None and index.pod_by_ip("10.0.0.1") is None
    assert len(index) == 0


def test_a_relist_deletes_the_pods_it_misses() -> None:
    clock = Clock()
    index = PodIndex(deleted_retention=60, clock=clock)
    index.replace_all([pod("a"), pod("b")])
    index.replace_all([pod("b"), pod("c")])
    assert sorted(p.uid for p in index.pods()) == ["b", "c"]
    assert index.lookup("a", None) is not None  # deleted, still found for a while


def test_an_ip_taken_by_a_new_pod_stays_with_it_when_the_old_one_is_purged() -> None:
    clock = Clock()
    index = PodIndex(deleted_retention=10, clock=clock)
    index.upsert(pod("old", ips=("10.0.0.1",)))
    index.delete("old")
    index.upsert(pod("new", ips=("10.0.0.1",)))
    clock.now += 11
    index.purge()
    ref = index.pod_by_ip("10.0.0.1")
    assert ref is not None and ref.pod == "pod-new"


class Reader:
    """The API's answers to owner lookups, scripted per call."""

    def __init__(self, answers: dict[tuple[str, str, str], object]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, kind: str, namespace: str, name: str) -> Owner | None:
        self.calls.append((kind, namespace, name))
        answer = self.answers[(kind, namespace, name)]
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]


def test_forbidden_lookups_are_asked_again_after_a_while() -> None:
    clock = Clock()
    key = ("ReplicaSet", "ns", "api-5d8f")
    reader = Reader({key: Forbidden("ReplicaSet")})
    resolver = WorkloadResolver(reader, forbidden_retry=600, clock=clock)
    owned = pod("a", owner=Owner("ReplicaSet", "api-5d8f"), template_hash="5d8f")
    assert resolver.workload(owned) == Workload("Deployment", "api", exact=False)
    clock.now += 599
    assert resolver.workload(owned) == Workload("Deployment", "api", exact=False)
    assert len(reader.calls) == 1
    reader.answers[key] = Owner("Deployment", "api")
    clock.now += 2
    assert resolver.workload(owned) == Workload("Deployment", "api")
    assert len(reader.calls) == 2


def test_failed_lookups_are_not_cached() -> None:
    key = ("Job", "ns", "nightly-28930140")
    reader = Reader({key: Unavailable("Job")})
    resolver = WorkloadResolver(reader)
    owned = pod("a", owner=Owner("Job", "nightly-28930140"))
    assert resolver.workload(owned) == Workload("Job", "nightly-28930140", exact=False)
    reader.answers[key] = Owner("CronJob", "nightly")
    assert resolver.workload(owned) == Workload("CronJob", "nightly")
    assert resolver.workload(owned) == Workload("CronJob", "nightly")
    assert len(reader.calls) == 2  # the answer is cached, the failure was not


def test_owner_cache_is_bounded() -> None:
    reader = Reader({("ReplicaSet", "ns", f"rs-{n}"): None for n in range(10)})
    resolver = WorkloadResolver(reader, max_entries=4)
    for n in range(10):
        resolver.workload(pod("a", owner=Owner("ReplicaSet", f"rs-{n}")))
    resolver.workload(pod("a", owner=Owner("ReplicaSet", "rs-0")))  # evicted: asked again
    assert len(reader.calls) == 11
