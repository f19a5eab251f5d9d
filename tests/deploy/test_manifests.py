"""deploy/kubernetes: valid for Kubernetes, wired together, and speaking podflame's CLI.

Each build (the base and every overlay, rendered by tests/deploy/kustomize.py)
is validated against the OpenAPI schemas of a pinned Kubernetes release, in
strict mode (unknown fields fail). Then the pieces are checked against each
other (the agent's server URL is the Service, the probes are the server's
routes) and every environment variable and argument given to podflame is
parsed by the real argparse and settings models of podflame/cli.py.
"""

import base64
import re
import socket
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import kubernetes_validate
import pytest
import yaml
from pydantic import TypeAdapter
from pydantic_settings import BaseSettings

from podflame.agent.settings import AgentSettings
from podflame.cli import build_parser, settings_from
from podflame.server.auth import TokenEntry, load_tokens
from podflame.server.routers import health
from podflame.server.settings import ServerSettings
from tests.deploy import dockerfile
from tests.deploy.install import BASE, MAKE_TOKENS, OVERLAYS, ROOT, Build
from tests.deploy.kustomize import Resource, containers, split_image

# A recent release, pinned; and the oldest the manifests support (the
# appArmorProfile field arrived in 1.30).
KUBERNETES = "1.37.0"
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
    ("fieldRef", "status.podIP"): "10.244.1.7",
    ("secretKeyRef", CLICKHOUSE_SECRET, "storage"): "http://podflame:pw@clickhouse:8123/podflame",
    ("secretKeyRef", CLICKHOUSE_SECRET, "cluster"): "ch-prod",
}
# Namespaces and pods with this label may reach the server and the agents' /metrics.
CLIENT_LABEL = "podflame/client"
AGENT_CAPABILITIES = {
    "BPF",
    "PERFMON",
    "SYS_RESOURCE",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
    "SYSLOG",
    "CHECKPOINT_RESTORE",
}


def find(resources: list[Resource], kind: str, name: str | None = None) -> Resource:
    found = [r for r in resources if r["kind"] == kind and name in (None, r["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def unhashed(name: str) -> str:
    """A generated Secret's name without the hash of its content."""
    return re.sub(r"-[0-9a-z]{10}$", "", name)


def secret(resources: list[Resource], name: str) -> dict[str, bytes]:
    """The data of the Secret generated as `name`."""
    (found,) = [
        r for r in resources if r["kind"] == "Secret" and unhashed(r["metadata"]["name"]) == name
    ]
    return {key: base64.b64decode(value) for key, value in found["data"].items()}


def agent_container(resources: list[Resource]) -> dict[str, Any]:
    return find(resources, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]


def server_pod(resources: list[Resource]) -> dict[str, Any]:
    return find(resources, "Deployment", "podflame-server")["spec"]["template"]["spec"]


@pytest.mark.parametrize("version", [KUBERNETES, OLDEST_KUBERNETES])
@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_every_manifest_validates_against_the_kubernetes_schema(
    name: str, version: str, build: Build
) -> None:
    resources = build(name)
    assert resources
    for resource in resources:
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_schema_check_rejects_a_misspelt_field(build: Build) -> None:
    daemonset = find(build("base"), "DaemonSet")
    daemonset["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES, strict=True)


def test_the_base_holds_the_whole_install(build: Build) -> None:
    kinds = sorted((r["kind"], unhashed(r["metadata"]["name"])) for r in build("base"))
    assert kinds == [
        ("ClusterRole", "podflame-agent"),
        ("ClusterRoleBinding", "podflame-agent"),
        ("DaemonSet", "podflame-agent"),
        ("Deployment", "podflame-server"),
        ("Namespace", "podflame"),
        ("NetworkPolicy", "podflame-agent"),
        ("NetworkPolicy", "podflame-server"),
        ("PersistentVolumeClaim", "podflame-data"),
        ("Secret", "podflame-agent-token"),
        ("Secret", "podflame-server-tokens"),
        ("Service", "podflame-server"),
        ("ServiceAccount", "podflame-agent"),
        ("ServiceAccount", "podflame-server"),
    ]
    namespace = find(build("base"), "Namespace")["metadata"]["name"]
    for resource in build("base"):
        if resource["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert resource["metadata"]["namespace"] == namespace


def test_images_are_the_only_thing_to_set(build: Build) -> None:
    images = sorted(container["image"] for container in containers(build("base")))
    assert images == ["podflame-agent:0.1.0", "podflame-server:0.1.0"]


def test_rbac_reads_pods_replicasets_and_jobs_and_nothing_else(build: Build) -> None:
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


def test_agent_runs_on_every_node_in_the_host_pid_namespace(build: Build) -> None:
    pod = find(build("base"), "DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    # One toleration with no key and no effect tolerates every taint.
    assert pod["tolerations"] == [{"operator": "Exists"}]
    env = agent_container(build("base"))["env"]
    node = next(item for item in env if item["name"] == "PODFLAME_NODE_NAME")
    assert node["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_agent_capabilities_are_the_justified_few(build: Build) -> None:
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


def test_node_paths_are_mounted_read_only(build: Build) -> None:
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


def test_the_spool_is_on_the_node_so_it_outlives_the_pod(build: Build) -> None:
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


def test_agent_ships_to_the_server_service(build: Build) -> None:
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
def test_server_probes_ask_the_health_routes(name: str, build: Build) -> None:
    container = server_pod(build(name))["containers"][0]
    routes = {route.path for route in health.router.routes}  # type: ignore[attr-defined]
    probes = {kind: container[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert {probe["path"] for probe in probes.values()} <= routes
    ports = {port["name"] for port in container["ports"]}
    assert all(probe["port"] in ports for probe in probes.values())


def test_embedded_storage_lives_on_the_volume_claim(build: Build) -> None:
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


def test_external_clickhouse_overlay_makes_the_server_stateless(build: Build) -> None:
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


def environment(
    container: dict[str, Any], resources: list[Resource], files: Path
) -> dict[str, str]:
    """The container's variables as the cluster would fill them: from the install's own
    Secrets, or sample values for what the user provides; files of mounted Secrets written
    under `files`, and variables that name them pointed there."""
    values = {}
    for item in container.get("env", []):
        if "value" in item:
            values[item["name"]] = item["value"]
            continue
        ((kind, source),) = item["valueFrom"].items()
        if kind == "fieldRef":
            values[item["name"]] = SAMPLE_SOURCES[(kind, source["fieldPath"])]
        elif (key := (kind, source["name"], source["key"])) in SAMPLE_SOURCES:
            values[item["name"]] = SAMPLE_SOURCES[key]
        else:
            values[item["name"]] = secret(resources, unhashed(source["name"]))[
                source["key"]
            ].decode()
    for mount_path, data in mounted_secrets(container, resources).items():
        folder = files / mount_path.strip("/")
        folder.mkdir(parents=True)
        for key, content in data.items():
            (folder / key).write_bytes(content)
        for name, value in values.items():
            if value.startswith(mount_path + "/"):
                values[name] = str(folder / value.removeprefix(mount_path + "/"))
    return values


def mounted_secrets(
    container: dict[str, Any], resources: list[Resource]
) -> dict[str, dict[str, bytes]]:
    """Mount path -> the files of the Secret mounted there (the install's own Secrets)."""
    pods = [
        r["spec"]["template"]["spec"] for r in resources if r["kind"] in ("Deployment", "DaemonSet")
    ]
    (pod,) = [pod for pod in pods if container in pod["containers"]]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    return {
        mount["mountPath"]: secret(resources, unhashed(volume["secret"]["secretName"]))
        for mount in container.get("volumeMounts", [])
        if "secret" in (volume := volumes[mount["name"]])
    }


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
    name: str, monkeypatch: pytest.MonkeyPatch, build: Build, tmp_path: Path
) -> None:
    resources = build(name)
    for number, container in enumerate(containers(resources)):
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
            files = tmp_path / str(number)
            env = {**image_settings(path), **environment(container, resources, files)}
            check_settings(model, subcommand, args, env, patch)


def image_settings(path: Path) -> dict[str, str]:
    return {k: v for k, v in dockerfile.environment(path).items() if k.startswith("PODFLAME_")}


def test_checking_catches_an_unknown_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AssertionError, match="PODFLAME_NODENAME is no setting"):
        check_settings(AgentSettings, "agent", [], {"PODFLAME_NODENAME": "x"}, monkeypatch)


def test_make_tokens_writes_an_ingest_token_and_a_query_token(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    subprocess.run([MAKE_TOKENS, folder], check=True, capture_output=True, timeout=60)
    entries = load_tokens(folder / "tokens.json")  # the server's own reader
    assert sorted((entry.name, tuple(entry.scopes)) for entry in entries) == [
        ("agents", ("ingest",)),
        ("people", ("query",)),
    ]
    tokens = {entry.name: entry.token for entry in entries}
    assert (folder / "agent-token").read_text() == tokens["agents"]
    assert (folder / "query-token").read_text() == tokens["people"]
    assert all(len(token) >= 40 for token in tokens.values())
    for file in folder.iterdir():
        assert file.stat().st_mode & 0o077 == 0, f"{file.name} is readable by others"
    # Run again: kept; with --force: new ones.
    subprocess.run([MAKE_TOKENS, folder], check=True, capture_output=True, timeout=60)
    assert (folder / "agent-token").read_text() == tokens["agents"]
    subprocess.run([MAKE_TOKENS, "--force", folder], check=True, capture_output=True, timeout=60)
    assert (folder / "agent-token").read_text() != tokens["agents"]


def pod_secret_names(pod: dict[str, Any]) -> set[str]:
    """Every Secret a pod spec names: env, envFrom, volumes (plain and projected)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in ("secretKeyRef", "secretRef"):
                    found.add(unhashed(value["name"]))
                elif key == "secret":
                    found.add(unhashed(value.get("secretName") or value["name"]))
                else:
                    walk(value)

    walk(pod)
    return found


def test_the_agents_hold_an_ingest_token_and_nothing_else(build: Build) -> None:
    resources = build("base")
    agent_pod = find(resources, "DaemonSet")["spec"]["template"]["spec"]
    assert pod_secret_names(agent_pod) == {"podflame-agent-token"}
    env = {item["name"]: item for item in agent_container(resources)["env"]}
    reference = env["PODFLAME_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert unhashed(reference["name"]) == "podflame-agent-token"
    agent_secret = secret(resources, "podflame-agent-token")
    assert agent_secret.keys() == {reference["key"]}
    token = agent_secret[reference["key"]].decode()
    tokens_file = secret(resources, "podflame-server-tokens")["tokens.json"]
    scopes = {
        entry.token: entry.scopes
        for entry in TypeAdapter(list[TokenEntry]).validate_json(tokens_file)
    }
    assert scopes[token] == ["ingest"]
    # Every scope the install gives out: one ingest-only token, one query-only.
    assert sorted(map(tuple, scopes.values())) == [("ingest",), ("query",)]


def test_the_server_reads_the_tokens_file_from_its_secret(build: Build, tmp_path: Path) -> None:
    resources = build("base")
    pod = server_pod(resources)
    (container,) = pod["containers"]
    assert pod_secret_names(pod) == {"podflame-server-tokens"}
    env = environment(container, resources, tmp_path)
    # environment() wrote the mounted Secret's files where the variable points.
    entries = load_tokens(Path(env["PODFLAME_TOKENS_FILE"]))
    assert {entry.name for entry in entries} == {"agents", "people"}
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"]["defaultMode"] == 0o440  # the server's group (fsGroup) only
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True


def test_every_build_keeps_the_tokens(build: Build) -> None:
    for name in OVERLAYS:
        resources = build(name)
        env = {item["name"] for item in server_pod(resources)["containers"][0]["env"]}
        assert "PODFLAME_TOKENS_FILE" in env, name
        assert "PODFLAME_TOKEN" in {item["name"] for item in agent_container(resources)["env"]}


def admitted(
    policy: Resource, pod: dict[str, str], namespace: dict[str, str], same_namespace: bool
) -> set[str]:
    """The ports (as the policy names them) a NetworkPolicy admits from a pod with labels
    `pod` in a namespace with labels `namespace`, per the NetworkPolicy API's rules: the
    peers of a rule are alternatives; a podSelector alone means the policy's namespace;
    a namespaceSelector with a podSelector means both."""

    def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        assert set(selector) <= {"matchLabels"}, "matchExpressions: not evaluated here"
        return selector.get("matchLabels", {}).items() <= labels.items()

    def peer_matches(peer: dict[str, Any]) -> bool:
        assert set(peer) <= {"podSelector", "namespaceSelector"}, "ipBlock: not evaluated here"
        if "namespaceSelector" in peer:
            in_namespace = selects(peer["namespaceSelector"], namespace)
        else:
            in_namespace = same_namespace
        return in_namespace and selects(peer.get("podSelector", {}), pod)

    ports: set[str] = set()
    for rule in policy["spec"].get("ingress", []):
        assert "from" in rule and "ports" in rule, "a rule without peers or ports admits all"
        if any(peer_matches(peer) for peer in rule["from"]):
            assert {port["protocol"] for port in rule["ports"]} == {"TCP"}
            ports |= {port["port"] for port in rule["ports"]}
    return ports


def template_labels(resources: list[Resource], kind: str) -> dict[str, str]:
    labels: dict[str, str] = find(resources, kind)["spec"]["template"]["metadata"]["labels"]
    return labels


def test_only_the_agents_reach_the_server_by_default(build: Build) -> None:
    resources = build("base")
    policy = find(resources, "NetworkPolicy", "podflame-server")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    server, agent = (
        template_labels(resources, "Deployment"),
        template_labels(resources, "DaemonSet"),
    )
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= server.items()
    assert not policy["spec"]["podSelector"]["matchLabels"].items() <= agent.items()
    podflame = find(resources, "Namespace")["metadata"]["labels"]
    # The server's one port, for ingest and queries alike (the tokens tell them apart).
    (port,) = server_pod(resources)["containers"][0]["ports"]
    assert admitted(policy, agent, podflame, same_namespace=True) == {port["name"]}
    # Nobody else: not a pod of the namespace, not the agents' labels elsewhere.
    assert admitted(policy, {}, podflame, same_namespace=True) == set()
    assert admitted(policy, {"app": "grafana"}, {}, same_namespace=False) == set()
    assert admitted(policy, agent, {"kubernetes.io/metadata.name": "x"}, False) == set()
    # A client is admitted when its namespace and the pod are both labelled.
    client = {CLIENT_LABEL: "true"}
    assert admitted(policy, client, {}, same_namespace=False) == set()
    assert admitted(policy, {}, client, same_namespace=False) == set()
    assert admitted(policy, client, client, same_namespace=False) == {port["name"]}
    # ... which nothing in the install is.
    assert CLIENT_LABEL not in yaml.safe_dump(
        [r for r in resources if r["kind"] != "NetworkPolicy"]
    )


def test_the_agents_metrics_are_for_labelled_clients_only(build: Build) -> None:
    resources = build("base")
    policy = find(resources, "NetworkPolicy", "podflame-agent")
    agent = template_labels(resources, "DaemonSet")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= agent.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    podflame = find(resources, "Namespace")["metadata"]["labels"]
    assert admitted(policy, agent, podflame, same_namespace=True) == set()
    client = {CLIENT_LABEL: "true"}
    assert admitted(policy, client, client, same_namespace=False) == {"metrics"}
    # /metrics listens on the pod's address, which a policy guards: no hostNetwork.
    container = agent_container(resources)
    assert not find(resources, "DaemonSet")["spec"]["template"]["spec"].get("hostNetwork")
    env = {item["name"]: item for item in container["env"]}
    assert env["PODFLAME_METRICS_HOST"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    (port,) = container["ports"]
    assert port["name"] == "metrics"
    assert port["containerPort"] == AgentSettings.model_fields["metrics_port"].default


def test_the_tls_overlay_serves_https_to_agents_that_check_it(build: Build) -> None:
    resources = build("tls")
    pod = server_pod(resources)
    (container,) = pod["containers"]
    assert pod_secret_names(pod) == {"podflame-server-tokens", "podflame-server-tls"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    agent_pod = find(resources, "DaemonSet")["spec"]["template"]["spec"]
    # The agents get the CA, never the server's key.
    assert pod_secret_names(agent_pod) == {"podflame-agent-token", "podflame-ca"}
    assert secret(resources, "podflame-ca").keys() == {"ca.crt"}
    env = {item["name"]: item.get("value") for item in agent_container(resources)["env"]}
    url = urlsplit(env["PODFLAME_SERVER"])
    assert url.scheme == "https"
    tls = secret(resources, "podflame-server-tls")
    assert find_secret(resources, "podflame-server-tls")["type"] == "kubernetes.io/tls"
    handshake(tls["tls.crt"], tls["tls.key"], secret(resources, "podflame-ca")["ca.crt"], url)


def find_secret(resources: list[Resource], name: str) -> Resource:
    (found,) = [
        r for r in resources if r["kind"] == "Secret" and unhashed(r["metadata"]["name"]) == name
    ]
    return found


def handshake(certificate: bytes, key: bytes, ca: bytes, url: SplitResult) -> None:
    """A TLS handshake on loopback: a server with `certificate` and `key`, a client
    verifying it as the agent does (podflame's shipper: the default context with `ca`)
    for the URL's host name."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "tls.crt").write_bytes(certificate)
        (Path(folder) / "tls.key").write_bytes(key)
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(Path(folder) / "tls.crt", Path(folder) / "tls.key")
    client_context = ssl.create_default_context(cadata=ca.decode())
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=10)
        accepted, _ = listener.accept()
        with accepted, client:
            accepted.settimeout(10)
            errors: list[BaseException] = []

            def serve() -> None:
                try:
                    with server_context.wrap_socket(accepted, server_side=True):
                        pass
                except (OSError, ssl.SSLError) as error:
                    errors.append(error)

            thread = threading.Thread(target=serve)
            thread.start()
            with client_context.wrap_socket(client, server_hostname=url.hostname) as wrapped:
                assert wrapped.getpeercert() is not None
            thread.join(10)
            assert not errors, errors


def test_the_handshake_check_fails_for_another_host_name(build: Build) -> None:
    resources = build("tls")
    tls = secret(resources, "podflame-server-tls")
    ca = secret(resources, "podflame-ca")["ca.crt"]
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tls["tls.crt"], tls["tls.key"], ca, urlsplit("https://elsewhere:8420"))


@pytest.mark.parametrize(
    "path",
    [
        "deploy/kubernetes/base/secrets/tokens.json",
        "deploy/kubernetes/base/secrets/query-token",
        "deploy/kubernetes/overlays/tls/secrets/tls.key",
        "deploy/kubernetes/overlays/tls/secrets/ca.key",
    ],
)
def test_the_made_secrets_are_kept_out_of_git(path: str) -> None:
    ignored = subprocess.run(["git", "-C", ROOT, "check-ignore", "--quiet", path], timeout=30)
    assert ignored.returncode == 0, f"git would commit {path}"
