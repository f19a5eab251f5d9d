"""deploy/kubernetes: valid for Kubernetes, wired together, and speaking podflame's CLI.

Each build (the base and every overlay, rendered by tests/deploy/kustomize.py)
is validated against the OpenAPI schemas of a pinned Kubernetes release, in
strict mode (unknown fields fail). Then the pieces are checked against each
other (the agent's server URL is the Service, the probes are the server's
routes) and every environment variable and argument given to podflame is
parsed by the real argparse and settings models of podflame/cli.py.
"""

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from pydantic import TypeAdapter
from pydantic_settings import BaseSettings

from podflame.agent.settings import AgentSettings
from podflame.cli import build_parser, settings_from
from podflame.server.routers import health
from podflame.server.settings import ServerSettings
from tests.deploy import dockerfile
from tests.deploy.kustomize import Resource, containers, render, split_image

ROOT = Path(__file__).resolve().parents[2]
# `kubectl apply -k deploy/kubernetes` installs base/; the overlays build on base/.
INSTALL = ROOT / "deploy" / "kubernetes"
BASE = INSTALL / "base"
OVERLAYS = sorted(path.name for path in (INSTALL / "overlays").iterdir())
# A recent release, pinned; and the oldest the manifests support (the
# appArmorProfile field arrived in 1.30).
KUBERNETES = "1.34.0"
OLDEST_KUBERNETES = "1.30.0"
DOCKERFILES = {
    "podflame-agent": (ROOT / "deploy/docker/agent.Dockerfile", "agent", AgentSettings),
    "podflame-server": (ROOT / "deploy/docker/server.Dockerfile", "server", ServerSettings),
}
# Read by scripts/install.sh and scripts/agent-entrypoint.sh, not settings.
SCRIPT_VARIABLES = {"PODFLAME_VENV", "PODFLAME_BUNDLED_HEADERS", "PODFLAME_COMMAND"}
# What the cluster would put in variables filled from elsewhere.
CLICKHOUSE_SECRET = "podflame-clickhouse"
SAMPLE_SOURCES = {
    ("fieldRef", "spec.nodeName"): "node-1",
    ("secretKeyRef", CLICKHOUSE_SECRET, "storage"): "http://podflame:pw@clickhouse:8123/podflame",
    ("secretKeyRef", CLICKHOUSE_SECRET, "cluster"): "ch-prod",
}
AGENT_CAPABILITIES = {
    "BPF",
    "PERFMON",
    "SYS_RESOURCE",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
    "SYSLOG",
    "CHECKPOINT_RESTORE",
}


def build(name: str) -> list[Resource]:
    return render(INSTALL if name == "base" else INSTALL / "overlays" / name)


def find(resources: list[Resource], kind: str, name: str | None = None) -> Resource:
    found = [r for r in resources if r["kind"] == kind and name in (None, r["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def agent_container(resources: list[Resource]) -> dict[str, Any]:
    return find(resources, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]


def server_pod(resources: list[Resource]) -> dict[str, Any]:
    return find(resources, "Deployment", "podflame-server")["spec"]["template"]["spec"]


@pytest.mark.parametrize("version", [KUBERNETES, OLDEST_KUBERNETES])
@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_every_manifest_validates_against_the_kubernetes_schema(name: str, version: str) -> None:
    resources = build(name)
    assert resources
    for resource in resources:
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    daemonset = find(build("base"), "DaemonSet")
    daemonset["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES, strict=True)


def test_the_base_holds_the_whole_install() -> None:
    kinds = sorted((r["kind"], r["metadata"]["name"]) for r in build("base"))
    assert kinds == [
        ("ClusterRole", "podflame-agent"),
        ("ClusterRoleBinding", "podflame-agent"),
        ("DaemonSet", "podflame-agent"),
        ("Deployment", "podflame-server"),
        ("Namespace", "podflame"),
        ("PersistentVolumeClaim", "podflame-data"),
        ("Service", "podflame-server"),
        ("ServiceAccount", "podflame-agent"),
        ("ServiceAccount", "podflame-server"),
    ]
    namespace = find(build("base"), "Namespace")["metadata"]["name"]
    for resource in build("base"):
        if resource["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert resource["metadata"]["namespace"] == namespace


def test_images_are_the_only_thing_to_set() -> None:
    images = sorted(container["image"] for container in containers(build("base")))
    assert images == ["podflame-agent:0.1.0", "podflame-server:0.1.0"]


def test_rbac_reads_pods_replicasets_and_jobs_and_nothing_else() -> None:
    resources = build("base")
    rules = find(resources, "ClusterRole")["rules"]
    granted = sorted(
        (group, resource, tuple(sorted(rule["verbs"])))
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    )
    read = ("get", "list", "watch")
    assert granted == [("", "pods", read), ("apps", "replicasets", read), ("batch", "jobs", read)]
    binding = find(resources, "ClusterRoleBinding")
    daemonset = find(resources, "DaemonSet")
    assert binding["roleRef"]["name"] == find(resources, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": daemonset["spec"]["template"]["spec"]["serviceAccountName"],
            "namespace": daemonset["metadata"]["namespace"],
        }
    ]
    assert server_pod(resources)["automountServiceAccountToken"] is False


def test_agent_runs_on_every_node_in_the_host_pid_namespace() -> None:
    pod = find(build("base"), "DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    # One toleration with no key and no effect tolerates every taint.
    assert pod["tolerations"] == [{"operator": "Exists"}]
    env = agent_container(build("base"))["env"]
    node = next(item for item in env if item["name"] == "PODFLAME_NODE_NAME")
    assert node["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_agent_capabilities_are_the_justified_few() -> None:
    security = agent_container(build("base"))["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) == AGENT_CAPABILITIES
    assert security["privileged"] is False
    assert security["readOnlyRootFilesystem"] is True
    sys_admin = agent_container(build("sys-admin"))["securityContext"]["capabilities"]["add"]
    assert set(sys_admin) == AGENT_CAPABILITIES | {"SYS_ADMIN"}


def test_every_capability_is_justified_in_a_comment() -> None:
    comments = [
        line.strip().removeprefix("#").strip()
        for line in (BASE / "agent-daemonset.yaml").read_text().splitlines()
        if line.strip().startswith("#")
    ]
    for capability in [*AGENT_CAPABILITIES, "SYS_ADMIN"]:
        assert any(
            comment.startswith(f"{capability}:") or f"{capability} is not" in comment
            for comment in comments
        ), capability


def test_node_paths_are_mounted_read_only() -> None:
    resources = build("base")
    pod = find(resources, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in agent_container(resources)["volumeMounts"]}
    # At their own paths, and /usr/src through the node's /usr (the image links it).
    for host_path, path in [
        ("/sys/kernel/debug", "/sys/kernel/debug"),
        ("/sys/fs/cgroup", "/sys/fs/cgroup"),
        ("/lib/modules", "/lib/modules"),
        ("/usr", "/host/usr"),
    ]:
        mount = mounts[path]
        assert mount.get("readOnly") is True, path
        assert volumes[mount["name"]]["hostPath"]["path"] == host_path
    agent_image = (ROOT / "deploy/docker/agent.Dockerfile").read_text()
    assert "ln -s /host/usr/src /usr/src" in agent_image
    writable_host_paths = [
        mount["mountPath"]
        for mount in mounts.values()
        if "hostPath" in volumes[mount["name"]] and not mount.get("readOnly")
    ]
    assert writable_host_paths == ["/var/lib/podflame/spool"], "only the spool is written"


def test_the_spool_is_on_the_node_so_it_outlives_the_pod() -> None:
    resources = build("base")
    pod = find(resources, "DaemonSet")["spec"]["template"]["spec"]
    container = agent_container(resources)
    env = {item["name"]: item.get("value") for item in container["env"]}
    mount = next(
        m for m in container["volumeMounts"] if m["mountPath"] == env["PODFLAME_SPOOL_DIR"]
    )
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["hostPath"] == {"path": "/var/lib/podflame/spool", "type": "DirectoryOrCreate"}
    assert "maxSurge" not in find(resources, "DaemonSet")["spec"]["updateStrategy"].get(
        "rollingUpdate", {}
    ), "two agents on a node would share one spool"


def test_agent_ships_to_the_server_service() -> None:
    resources = build("base")
    env = {item["name"]: item.get("value") for item in agent_container(resources)["env"]}
    url = urlsplit(env["PODFLAME_SERVER"])
    service = find(resources, "Service", "podflame-server")
    assert url.hostname == service["metadata"]["name"]
    (port,) = service["spec"]["ports"]
    assert url.port == port["port"]
    pod = server_pod(resources)
    labels = find(resources, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    container_ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
    server_env = {item["name"]: item.get("value") for item in pod["containers"][0]["env"]}
    assert container_ports[port["targetPort"]] == int(server_env["PODFLAME_PORT"])


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_server_probes_ask_the_health_routes(name: str) -> None:
    container = server_pod(build(name))["containers"][0]
    routes = {route.path for route in health.router.routes}  # type: ignore[attr-defined]
    probes = {kind: container[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert {probe["path"] for probe in probes.values()} <= routes
    ports = {port["name"] for port in container["ports"]}
    assert all(probe["port"] in ports for probe in probes.values())


def test_embedded_storage_lives_on_the_volume_claim() -> None:
    resources = build("base")
    pod = server_pod(resources)
    (container,) = pod["containers"]
    storage = next(e["value"] for e in container["env"] if e["name"] == "PODFLAME_STORAGE")
    data_path = storage.removeprefix("chdb://")
    claim = find(resources, "PersistentVolumeClaim")["metadata"]["name"]
    volume = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert data_path.startswith(mount["mountPath"] + "/")
    assert find(resources, "Deployment")["spec"]["strategy"]["type"] == "Recreate"
    assert find(resources, "Deployment")["spec"]["replicas"] == 1


def test_external_clickhouse_overlay_makes_the_server_stateless() -> None:
    resources = build("external-clickhouse")
    assert not [r for r in resources if r["kind"] == "PersistentVolumeClaim"]
    deployment = find(resources, "Deployment", "podflame-server")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = deployment["spec"]["template"]["spec"]
    assert "persistentVolumeClaim" not in yaml.safe_dump(pod)
    env = {item["name"]: item for item in pod["containers"][0]["env"]}
    assert env["PODFLAME_STORAGE"]["valueFrom"]["secretKeyRef"]["key"] == "storage"
    cluster = env["PODFLAME_CLICKHOUSE_CLUSTER"]["valueFrom"]["secretKeyRef"]
    assert cluster["optional"] is True
    # The agents are the base's.
    assert find(resources, "DaemonSet") == find(build("base"), "DaemonSet")


def environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's variables, with those filled from elsewhere given sample values."""
    values = {}
    for item in container.get("env", []):
        if "value" in item:
            values[item["name"]] = item["value"]
            continue
        ((kind, source),) = item["valueFrom"].items()
        if kind == "fieldRef":
            values[item["name"]] = SAMPLE_SOURCES[(kind, source["fieldPath"])]
        else:
            values[item["name"]] = SAMPLE_SOURCES[(kind, source["name"], source["key"])]
    return values


def check_settings(
    model: type[BaseSettings],
    subcommand: str,
    args: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`podflame SUBCOMMAND ARGS` with `env` parses, and every PODFLAME_* variable lands."""
    for name in env:
        assert name.startswith("PODFLAME_"), name
        field = name.removeprefix("PODFLAME_").lower()
        assert field in model.model_fields or name in SCRIPT_VARIABLES, f"{name} is no setting"
        monkeypatch.setenv(name, env[name])
    settings = settings_from(model, build_parser().parse_args([subcommand, *args]))
    for name, value in env.items():
        field = name.removeprefix("PODFLAME_").lower()
        if field in model.model_fields:
            annotation = model.model_fields[field].annotation
            assert getattr(settings, field) == TypeAdapter(annotation).validate_python(value)


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_every_variable_and_argument_is_accepted_by_the_cli(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for container in containers(build(name)):
        image, _ = split_image(container["image"])
        path, subcommand, model = DOCKERFILES[image]
        # command would replace the image's entrypoint, which runs podflame.
        assert "command" not in container
        args = container.get("args", dockerfile.exec_form(path, "CMD"))
        if subcommand == "server":  # ENTRYPOINT ["podflame"], CMD ["server", ...]
            assert args[0] == "server"
            args = args[1:]
        with monkeypatch.context() as patch:
            for variable in list(dockerfile.environment(path)):
                patch.delenv(variable, raising=False)
            env = {**image_settings(path), **environment(container)}
            check_settings(model, subcommand, args, env, patch)


def image_settings(path: Path) -> dict[str, str]:
    return {k: v for k, v in dockerfile.environment(path).items() if k.startswith("PODFLAME_")}


def test_checking_catches_an_unknown_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AssertionError, match="PODFLAME_NODENAME is no setting"):
        check_settings(AgentSettings, "agent", [], {"PODFLAME_NODENAME": "x"}, monkeypatch)
