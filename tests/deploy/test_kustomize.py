"""tests/deploy/kustomize.py, the renderer the manifest tests use, against kustomize itself.

Where a `kubectl` is on the PATH (it is not one of the project's dependencies),
every build of deploy/kubernetes is rendered by `kubectl kustomize` too and the
two must agree resource for resource. Everywhere, the renderer must refuse what
kustomize refuses.
"""

import base64
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.install import INSTALL, OVERLAYS
from tests.deploy.kustomize import KustomizationCycle, Resource, render

KUBECTL = shutil.which("kubectl")


def kubectl_kustomize(directory: Path) -> list[Resource]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def by_identity(resources: list[Resource]) -> dict[tuple[str, str, str], Resource]:
    """Resources by kind, namespace and name, generated Secrets' hash suffixes replaced
    (by `-HASH`, there and where they are named): the renderer's hash is not kustomize's."""
    generated = {
        r["metadata"]["name"]: re.sub(r"-[a-z0-9]{10}$", "-HASH", r["metadata"]["name"])
        for r in resources
        if r["kind"] == "Secret"
    }

    def unhashed(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: unhashed(value) for key, value in node.items()}
        if isinstance(node, list):
            return [unhashed(item) for item in node]
        return generated.get(node, node) if isinstance(node, str) else node

    def decoded(resource: Resource) -> Resource:
        """Secret data as bytes: kustomize wraps long base64 lines."""
        if resource["kind"] == "Secret":
            data = resource["data"].items()
            resource["data"] = {key: base64.b64decode(value) for key, value in data}
        return resource

    return {
        (r["kind"], r["metadata"].get("namespace", ""), r["metadata"]["name"]): decoded(r)
        for r in map(unhashed, resources)
    }


@pytest.mark.skipif(KUBECTL is None, reason="no kubectl on this machine")
@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_the_renderer_agrees_with_kubectl_kustomize(name: str, install: Path) -> None:
    directory = install if name == "base" else install / "overlays" / name
    ours = by_identity(render(directory))
    theirs = by_identity(kubectl_kustomize(directory))
    assert ours.keys() == theirs.keys()
    for key, resource in ours.items():
        assert resource == theirs[key], key


@pytest.mark.skipif(KUBECTL is None, reason="no kubectl on this machine")
def test_without_the_tokens_kubectl_kustomize_stops_naming_the_file() -> None:
    """The repository has no tokens (they are made by scripts/make-tokens.sh)."""
    if (INSTALL / "base" / "secrets" / "tokens.json").exists():
        pytest.skip("this checkout has made its tokens")
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(INSTALL)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "secrets/tokens.json" in result.stderr


def test_without_the_tokens_the_renderer_stops_naming_the_file(tmp_path: Path) -> None:
    shutil.copytree(INSTALL, tmp_path / "kubernetes", ignore=shutil.ignore_patterns("secrets"))
    with pytest.raises(FileNotFoundError, match=re.escape("secrets/tokens.json")):
        render(tmp_path / "kubernetes")


def write(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))


def test_an_overlay_inside_its_base_is_refused(tmp_path: Path) -> None:
    """kustomize refuses it (`cycle detected`): the overlays lay that way until this test."""
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    write(tmp_path / "cm.yaml", config_map)
    write(tmp_path / "kustomization.yaml", {"resources": ["cm.yaml"]})
    write(tmp_path / "overlays/a/kustomization.yaml", {"resources": ["../.."]})
    with pytest.raises(KustomizationCycle):
        render(tmp_path / "overlays/a")
    write(tmp_path / "overlays/b/kustomization.yaml", {"resources": ["../../base"]})
    write(tmp_path / "base/kustomization.yaml", {"resources": ["cm.yaml"]})
    write(tmp_path / "base/cm.yaml", config_map)
    assert render(tmp_path / "overlays/b") == [config_map]


def test_a_generated_secret_is_named_by_its_content_and_references_follow(
    tmp_path: Path,
) -> None:
    def pod(namespace: str) -> Resource:
        container = {
            "name": "c",
            "image": "i",
            "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        }
        spec = {
            "containers": [container],
            "volumes": [{"name": "v", "secret": {"secretName": "s"}}],
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": namespace},
            "spec": spec,
        }

    (tmp_path / "k").write_text("one")
    write(tmp_path / "pods.yaml", pod("a"))
    write(tmp_path / "other.yaml", pod("b"))
    generator = {"name": "s", "namespace": "a", "files": ["k=k"]}
    write(
        tmp_path / "kustomization.yaml",
        {"resources": ["pods.yaml", "other.yaml"], "secretGenerator": [generator]},
    )
    first = by_identity(render(tmp_path))
    generated = next(r for r in render(tmp_path) if r["kind"] == "Secret")["metadata"]["name"]
    assert re.fullmatch(r"s-[0-9a-z]{10}", generated)
    assert first[("Secret", "a", "s-HASH")]["data"] == {"k": b"one"}
    same_namespace = yaml.safe_dump(next(r for r in render(tmp_path) if r["kind"] == "Pod"))
    assert same_namespace.count(generated) == 2
    # A Secret "s" in another namespace is another Secret: not renamed.
    assert first[("Pod", "b", "p")] == pod("b")
    (tmp_path / "k").write_text("two")
    renamed = next(r for r in render(tmp_path) if r["kind"] == "Secret")["metadata"]["name"]
    assert renamed != generated
    (tmp_path / "k").unlink()
    with pytest.raises(FileNotFoundError):
        render(tmp_path)
