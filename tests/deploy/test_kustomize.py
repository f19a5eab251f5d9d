"""tests/deploy/kustomize.py, the renderer the manifest tests use, against kustomize itself.

Where a `kubectl` is on the PATH (it is not one of the project's dependencies),
every build of deploy/kubernetes is rendered by `kubectl kustomize` too and the
two must agree resource for resource. Everywhere, the renderer must refuse what
kustomize refuses.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.kustomize import KustomizationCycle, Resource, render
from tests.deploy.test_manifests import INSTALL, OVERLAYS

KUBECTL = shutil.which("kubectl")


def kubectl_kustomize(directory: Path) -> list[Resource]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def by_identity(resources: list[Resource]) -> dict[tuple[str, str, str], Resource]:
    return {
        (r["kind"], r["metadata"].get("namespace", ""), r["metadata"]["name"]): r for r in resources
    }


@pytest.mark.skipif(KUBECTL is None, reason="no kubectl on this machine")
@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_the_renderer_agrees_with_kubectl_kustomize(name: str) -> None:
    directory = INSTALL if name == "base" else INSTALL / "overlays" / name
    ours = by_identity(render(directory))
    theirs = by_identity(kubectl_kustomize(directory))
    assert ours.keys() == theirs.keys()
    for key, resource in ours.items():
        assert resource == theirs[key], key


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
