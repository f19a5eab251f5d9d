"""Attribution on real kernel objects: cgroups made in both driver layouts, in cgroup v1
and v2, with processes inside running in their own PID and mount namespaces, and the
pod metadata from the in-test API server through the real client.

The agent's label providers are composed as build_agent composes them.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from podflame.agent.batch import BatchBuilder
from podflame.agent.captures import ProcessCaptures
from podflame.agent.cgroups import CgroupResolver
from podflame.agent.kubernetes import KubernetesMetadata, PodLabels, WatchTiming, start_metadata
from podflame.agent.labels import CgroupLabels, CombinedLabels, HostLabels, ProcessIdentity
from podflame.agent.pods import pod_label_names
from podflame.agent.processes import ProcessTable
from podflame.agent.procfs import read_comm, read_start_ticks
from podflame.agent.programs import ProcessGeneration
from podflame.agent.sampler import Drain, SampleCount
from podflame.symbolizer import Symbolizer
from tests.agent.drainlib import drain_batch, lifetimes_of
from tests.agent.test_kubernetes import wait_until
from tests.kube_apiserver import ContainerSpec, FakeKubeApi, fake_kube_api, pod_json
from tests.kube_cgroups import LAYOUTS, ContainerCgroup, container_cgroup, inner_pid

NODE = "node-a"
TIMING = WatchTiming(backoff_initial=0.05, backoff_max=0.3)


def identity(pid: int) -> ProcessIdentity:
    comm = read_comm(pid)
    assert comm is not None
    return ProcessIdentity(pid=pid, comm=comm, start_ticks=read_start_ticks(pid))


@contextmanager
def sleeping_in(cgroup: ContainerCgroup) -> Iterator[int]:
    process = cgroup.run(["sleep", "60"])
    try:
        pid = inner_pid(process)
        # pid 1 of its own PID namespace, with its own /proc mounted.
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        (nspid,) = [line.split()[1:] for line in status if line.startswith("NSpid:")]
        assert nspid == [str(pid), "1"]
        yield pid
    finally:
        cgroup.remove()  # the command first, then unshare, which reaps it


@contextmanager
def labels_for(
    api: FakeKubeApi, tmp_path: Path
) -> Iterator[tuple[CombinedLabels, KubernetesMetadata]]:
    cgroups = CgroupResolver()
    names = pod_label_names(["app.kubernetes.io/name"])
    metadata = start_metadata(api.kubeconfig(tmp_path / "kubeconfig"), NODE, names, 600, TIMING)
    assert metadata is not None
    providers = [HostLabels(NODE), CgroupLabels(cgroups), PodLabels(metadata.index, cgroups)]
    try:
        yield CombinedLabels(providers), metadata
    finally:
        metadata.close()


@pytest.mark.parametrize(("version", "driver"), LAYOUTS, ids=["-".join(x) for x in LAYOUTS])
@pytest.mark.parametrize("runtime", ["containerd", "cri-o"])
def test_a_process_in_a_pods_cgroup(
    tmp_path: Path, version: str, driver: str, runtime: str
) -> None:
    with (
        container_cgroup(version, driver, qos="besteffort", runtime=runtime) as cgroup,
        sleeping_in(cgroup) as pid,
    ):
        found = CgroupResolver().read(pid, read_start_ticks(pid))
        assert found is not None
        assert (found.pod_uid, found.container_id) == (cgroup.pod_uid, cgroup.container_id)
        assert (found.qos, found.path) == ("besteffort", cgroup.relative_path)
        assert found.runtime == (runtime if driver == "systemd" or runtime == "cri-o" else None)


@pytest.mark.parametrize(("version", "driver"), LAYOUTS, ids=["-".join(x) for x in LAYOUTS])
def test_samples_get_pod_labels_and_keep_cgroup_labels_without_the_api(
    tmp_path: Path, version: str, driver: str
) -> None:
    with container_cgroup(version, driver) as cgroup, sleeping_in(cgroup) as pid:
        container = ContainerSpec("web", cgroup.container_id, image="nginx:1.27")
        pod = pod_json(
            "web-0",
            cgroup.pod_uid,
            NODE,
            [container],
            namespace="shop",
            labels={"app.kubernetes.io/name": "web"},
            owner=("StatefulSet", "web"),
        )
        with fake_kube_api() as api, labels_for(api, tmp_path) as (labels, metadata):
            # Before the pod is in the API: what the cgroup says.
            cgroup_only = labels.labels(identity(pid))
            api.add_pod(pod)
            wait_until(lambda: len(metadata.index) == 1)
            with_pod = labels.labels(identity(pid))
    host = {"node": NODE, "comm": "sleep", "pid": str(pid)}
    ids = {"pod_uid": cgroup.pod_uid, "container_id": cgroup.container_id}
    assert cgroup_only == {**host, **ids}
    assert with_pod == {
        **host,
        **ids,
        "namespace": "shop",
        "pod": "web-0",
        "container": "web",
        "workload_kind": "StatefulSet",
        "workload": "web",
        "image": "nginx:1.27",
        "image_id": "docker.io/library/nginx@sha256:" + "ab" * 32,
        "app_kubernetes_io_name": "web",
    }


def test_a_process_outside_containers(tmp_path: Path) -> None:
    with fake_kube_api() as api, labels_for(api, tmp_path) as (labels, _):
        found = labels.labels(identity(1))
    assert {"pod_uid", "container_id", "pod", "namespace"}.isdisjoint(found)
    assert "systemd_unit" in found or "cgroup" in found


def drain_of(process: ProcessGeneration, comm: str) -> Drain:
    """What the kernel side would report: a few samples of `process` (no stack needed here)."""
    return Drain(start_ns=0, end_ns=1, samples=[SampleCount(process, comm, (), (), 5)])


def test_a_late_pod_labels_the_next_drain_and_an_exited_process_keeps_its_cgroup(
    tmp_path: Path,
) -> None:
    with (
        container_cgroup("v2", "systemd") as cgroup,
        sleeping_in(cgroup) as pid,
        fake_kube_api() as api,
        labels_for(api, tmp_path) as (labels, metadata),
    ):
        symbolizer = Symbolizer()
        processes = ProcessTable(ProcessCaptures(symbolizer, cgroups=CgroupResolver()))
        builder = BatchBuilder(symbolizer, labels, period_ns=10_000_000)
        lifetimes = lifetimes_of(processes, builder)
        process = ProcessGeneration(pid, 1)
        processes.announce(process)  # its first sample: captured while it lives
        first = drain_batch(lifetimes, builder, drain_of(process, "sleep")).series[0].labels
        container = ContainerSpec("main", cgroup.container_id)
        api.add_pod(pod_json("job-0", cgroup.pod_uid, NODE, [container]))
        wait_until(lambda: len(metadata.index) == 1)
        second = drain_batch(lifetimes, builder, drain_of(process, "sleep")).series[0].labels
        cgroup.remove()  # the process exits before the next drain
        assert not Path(f"/proc/{pid}").exists()
        # Providers that never saw it: only what the process table captured can label it.
        fresh = CgroupResolver()
        builder.labels = CombinedLabels(
            [HostLabels(NODE), CgroupLabels(fresh), PodLabels(metadata.index, fresh)]
        )
        third = drain_batch(lifetimes, builder, drain_of(process, "sleep")).series[0].labels
    assert first["container_id"] == cgroup.container_id and "pod" not in first
    assert (second["pod"], second["container"]) == ("job-0", "main")
    assert second["container_id"] == cgroup.container_id
    assert third == second
