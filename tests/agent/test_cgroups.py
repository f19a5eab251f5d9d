"""Container identity from /proc/PID/cgroup, on the paths kubelets and runtimes write.

The matrix builds every (cgroup version, kubelet driver, QoS class, runtime)
path the way the kubelet and the runtimes name them; the literal cases are
lines as they appear on real hosts (hybrid hierarchies, kind, static pods,
cgroup namespaces, conmon, Docker and Podman outside Kubernetes, host units).
"""

import itertools
from pathlib import Path

import pytest

from podflame.agent.cgroups import (
    CgroupIdentity,
    CgroupResolver,
    cgroup_labels,
    parse_cgroup_file,
    parse_path,
)

UID = "8712f785-1a3e-41ec-a00b-e2dcc77431cb"
CID = "73051af271105c07e1f493b34856a77e665e3b0b4fc72f76c807dfbffeb881bd"
OTHER = "bd6fe092f10330edc4ad6e283948c2ef1a455af0b5063b90b2b37d3d850d6690"
STATIC_UID = "9729a196c4723b60ab401eaff722982d"  # a static pod: its manifest's hash

# How each runtime names a container's cgroup, per kubelet cgroup driver.
SYSTEMD_SCOPES = {"containerd": "cri-containerd-{}.scope", "cri-o": "crio-{}.scope"}
SYSTEMD_SCOPES["docker"] = "docker-{}.scope"  # cri-dockerd
CGROUPFS_NAMES = {"containerd": "{}", "cri-o": "crio-{}", "docker": "{}"}
V1_CONTROLLERS = ("cpuset", "memory", "devices", "pids", "cpu,cpuacct", "name=systemd")


def kubelet_path(driver: str, qos: str, runtime: str, uid: str = UID) -> str:
    if driver == "systemd":
        level = "" if qos == "guaranteed" else f"-{qos}"
        slices = "/kubepods.slice" + (f"/kubepods{level}.slice" if level else "")
        pod = f"kubepods{level}-pod{uid.replace('-', '_')}.slice"
        return f"{slices}/{pod}/" + SYSTEMD_SCOPES[runtime].format(CID)
    level = "" if qos == "guaranteed" else f"/{qos}"
    return f"/kubepods{level}/pod{uid}/" + CGROUPFS_NAMES[runtime].format(CID)


def cgroup_file(version: str, path: str) -> str:
    if version == "v2":
        return f"0::{path}\n"
    lines = [f"{12 - i}:{c}:{path}" for i, c in enumerate(V1_CONTROLLERS)]
    if version == "hybrid":  # v1 controllers plus systemd's unified hierarchy
        lines.append("0::/system.slice/containerd.service")
    return "\n".join(lines) + "\n"


MATRIX = list(
    itertools.product(
        ("v1", "v2", "hybrid"),
        ("cgroupfs", "systemd"),
        ("guaranteed", "burstable", "besteffort"),
        ("containerd", "cri-o", "docker"),
    )
)


@pytest.mark.parametrize(("version", "driver", "qos", "runtime"), MATRIX)
def test_every_driver_qos_and_runtime(version: str, driver: str, qos: str, runtime: str) -> None:
    path = kubelet_path(driver, qos, runtime)
    identity = parse_cgroup_file(cgroup_file(version, path))
    assert identity is not None
    assert (identity.pod_uid, identity.container_id, identity.qos) == (UID, CID, qos)
    assert identity.path == path
    # A bare ID (containerd or Docker with cgroupfs) does not say which runtime.
    named = driver == "systemd" or runtime == "cri-o"
    assert identity.runtime == (runtime if named else None)
    assert cgroup_labels(identity) == {"pod_uid": UID, "container_id": CID}


@pytest.mark.parametrize(
    ("path", "pod_uid", "container_id", "runtime", "qos"),
    [
        # A static pod (kube-apiserver, etcd): its UID is the manifest hash.
        (f"/kubepods/burstable/pod{STATIC_UID}/{CID}", STATIC_UID, CID, None, "burstable"),
        (
            f"/kubepods.slice/kubepods-pod{STATIC_UID}.slice/cri-containerd-{CID}.scope",
            STATIC_UID,
            CID,
            "containerd",
            "guaranteed",
        ),
        # A process in a child cgroup of its container.
        (f"/kubepods/besteffort/pod{UID}/{CID}/kube-proxy", UID, CID, None, "besteffort"),
        (
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            f"{UID.replace('-', '_')}.slice/crio-{CID}.scope/container",
            UID,
            CID,
            "cri-o",
            "burstable",
        ),
        # containerd without .scope, and the name=systemd form with colons.
        (
            f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID}.slice/"
            f"cri-containerd-{CID}",
            UID,
            CID,
            "containerd",
            "besteffort",
        ),
        (
            "/system.slice/containerd.service/kubepods-burstable-pod"
            f"{UID.replace('-', '_')}.slice:cri-containerd:{CID}",
            UID,
            CID,
            "containerd",
            "burstable",
        ),
        # kind: a node is a Docker container, its kubelet nests under kubelet.slice.
        (
            f"/system.slice/docker-{OTHER}.scope/kubelet.slice/kubelet-kubepods.slice/"
            "kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod"
            f"{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope",
            UID,
            CID,
            "containerd",
            "besteffort",
        ),
        (
            f"/docker/{OTHER}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod"
            f"{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope",
            UID,
            CID,
            "containerd",
            "guaranteed",
        ),
        (f"/docker/{OTHER}/kubepods/pod{UID}/{CID}", UID, CID, None, "guaranteed"),
        # An agent in its own cgroup namespace sees paths relative to its root.
        (
            f"/../../kubepods-besteffort-pod{UID.replace('-', '_')}.slice/"
            f"cri-containerd-{CID}.scope",
            UID,
            CID,
            "containerd",
            "besteffort",
        ),
        (f"/../pod{UID}/{CID}", UID, CID, None, None),
        # conmon and the pod's own slice: the pod, but no container.
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            f"{UID.replace('-', '_')}.slice/crio-conmon-{CID}.scope",
            UID,
            None,
            None,
            "burstable",
        ),
        (f"/kubepods/besteffort/pod{UID}", UID, None, None, "besteffort"),
        # Docker and Podman outside Kubernetes.
        (f"/docker/{CID}", None, CID, "docker", None),
        (f"/system.slice/docker-{CID}.scope", None, CID, "docker", None),
        (f"/machine.slice/libpod-{CID}.scope", None, CID, "podman", None),
        (f"/machine.slice/libpod-{CID}.scope/container", None, CID, "podman", None),
        (f"/libpod_parent/libpod-{CID}", None, CID, "podman", None),
        (
            f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope",
            None,
            CID,
            "podman",
            None,
        ),
        (
            f"/machine.slice/machine-libpod_pod_{OTHER}.slice/libpod-{CID}.scope",
            None,
            CID,
            "podman",
            None,
        ),
        # A containerd namespace without Kubernetes (nerdctl, k8s.io namespace).
        (f"/k8s.io/{CID}", None, CID, None, None),
    ],
)
def test_real_world_container_paths(
    path: str, pod_uid: str | None, container_id: str | None, runtime: str | None, qos: str | None
) -> None:
    identity = parse_path(path)
    assert (identity.pod_uid, identity.container_id) == (pod_uid, container_id)
    assert (identity.runtime, identity.qos) == (runtime, qos)
    assert identity.in_container
    assert identity.unit is None


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("0::/system.slice/ssh.service\n", {"systemd_unit": "ssh.service"}),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", {"systemd_unit": "session-3.scope"}),
        ("0::/init.scope\n", {"systemd_unit": "init.scope"}),
        (
            "0::/system.slice/system-postgresql.slice/postgresql@15-main.service\n",
            {"systemd_unit": "postgresql@15-main.service"},
        ),
        (
            "0::/system.slice/system-serial\\x2dgetty.slice/serial-getty@ttyS0.service\n",
            {"systemd_unit": "serial-getty@ttyS0.service"},
        ),
        ("0::/system.slice/foo\\x2dbar.service\n", {"systemd_unit": "foo-bar.service"}),
        ("0::/runtime.slice/kubelet.service\n", {"systemd_unit": "kubelet.service"}),
        ("0::/system.slice\n", {"cgroup": "/system.slice"}),
        ("0::/\n", {"cgroup": "/"}),
        # v1 on a systemd host: the name=systemd hierarchy has the unit.
        (
            "4:memory:/system.slice/cron.service\n2:cpu,cpuacct:/\n"
            "1:name=systemd:/system.slice/cron.service\n",
            {"systemd_unit": "cron.service"},
        ),
        # Hybrid with everything at the root but one controller.
        ("9:name=systemd:/\n4:memory:/batch/job7\n1:cpu:/\n0::/\n", {"cgroup": "/batch/job7"}),
        # v1 without systemd.
        ("3:cpu:/\n2:cpuacct:/tenants/a\n", {"cgroup": "/tenants/a"}),
    ],
)
def test_processes_outside_containers(text: str, labels: dict[str, str]) -> None:
    identity = parse_cgroup_file(text)
    assert identity is not None and not identity.in_container
    assert cgroup_labels(identity) == labels


def test_hybrid_prefers_the_controllers_naming_the_container() -> None:
    path = f"/kubepods/burstable/pod{UID}/{CID}"
    text = "\n".join(
        [
            f"13:cpuset:{path}",
            "9:misc:/",
            f"2:cpu,cpuacct:{path}",
            f"1:name=systemd:{path}",
            "0::/reserved.slice/containerd.service",
        ]
    )
    identity = parse_cgroup_file(text)
    assert identity == CgroupIdentity(path, UID, CID, None, "burstable")


def test_unreadable_text() -> None:
    assert parse_cgroup_file("") is None
    assert parse_cgroup_file("garbage\n") is None


def fake_proc(root: Path, pid: int, start: int, cgroup: str) -> None:
    directory = root / str(pid)
    directory.mkdir(parents=True, exist_ok=True)
    # comm with a space and a parenthesis: the parser must find the last ')'.
    fields = ["S"] + ["0"] * 18 + [str(start)] + ["0"] * 10
    (directory / "stat").write_text(f"{pid} (a b) c) " + " ".join(fields) + "\n")
    (directory / "cgroup").write_text(cgroup)


def test_resolver_caches_per_start_time(tmp_path: Path) -> None:
    resolver = CgroupResolver(proc=tmp_path)
    fake_proc(tmp_path, 10, 500, f"0::/docker/{CID}\n")
    first = resolver.resolve(10, 500)
    assert first is not None and first.container_id == CID
    # Cached: a later change of the file is not read again for the same process...
    fake_proc(tmp_path, 10, 500, "0::/system.slice/ssh.service\n")
    assert resolver.resolve(10, 500) == first
    # ...but read() reads anew, and a reused pid (new start time) is a new process.
    assert resolver.read(10, 500) == parse_path("/system.slice/ssh.service")
    fake_proc(tmp_path, 10, 900, f"0::/docker/{OTHER}\n")
    reused = resolver.resolve(10, 900)
    assert reused is not None and reused.container_id == OTHER


def test_resolver_rejects_a_reused_pid_and_gone_processes(tmp_path: Path) -> None:
    resolver = CgroupResolver(proc=tmp_path)
    fake_proc(tmp_path, 11, 700, f"0::/docker/{CID}\n")
    assert resolver.read(11, 600) is None  # the pid now belongs to another process
    assert resolver.resolve(12, 100) is None  # no such process
    assert resolver.resolve(11, None) is None


def test_resolver_evicts_the_least_recently_used(tmp_path: Path) -> None:
    resolver = CgroupResolver(proc=tmp_path, max_entries=3)
    for pid in range(1, 5):
        fake_proc(tmp_path, pid, pid, f"0::/docker/{CID}\n")
        resolver.resolve(pid, pid)
    assert len(resolver) == 3
    # pid 1 was evicted: changing its file shows on the next resolve.
    fake_proc(tmp_path, 1, 1, "0::/system.slice/a.service\n")
    again = resolver.resolve(1, 1)
    assert again is not None and again.unit == "a.service"
    assert len(resolver) == 3
