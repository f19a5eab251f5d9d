"""Renders a kustomization the way kustomize does, for the features deploy/kubernetes uses.

PyPI has no kustomize, and `kubectl` is not part of what the project installs
(test_kustomize.py compares this with `kubectl kustomize` where a kubectl
happens to be). This covers exactly: `resources` (files, and folders with
their own kustomization.yaml), `patches` as RFC 6902 JSON patches with a
target (group, version, kind, name), `patches` as a strategic-merge patch that
only deletes a resource (`$patch: delete`), `images` (newName, newTag), and
`secretGenerator` from files (a Secret named with a suffix hashed from its
content, and every reference to it in the same namespace renamed, as
kustomize does; the hash is not kustomize's own). Any other field or patch
form raises, so a manifest change that needs more of kustomize fails the tests
instead of being rendered wrongly; and, stricter than kustomize, so does a
patch whose target matches nothing. Like kustomize, it refuses a folder that
contains a kustomization already building on it (an overlay inside its base).
"""

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

Resource = dict[str, Any]

SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "patches", "images", "secretGenerator"}
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


class UnsupportedKustomization(ValueError):
    pass


class KustomizationCycle(ValueError):
    pass


def render(directory: Path, building: tuple[Path, ...] = ()) -> list[Resource]:
    """The resources of the kustomization in `directory`; `building`: the folders
    whose kustomizations include this one."""
    directory = directory.resolve()
    inside = [root for root in building if root.is_relative_to(directory)]
    if inside:
        raise KustomizationCycle(f"{directory} contains {inside[0]}, which builds on it")
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(spec) - SUPPORTED_FIELDS
    if unsupported:
        raise UnsupportedKustomization(f"{directory}: {sorted(unsupported)}")
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        resources += load(directory / entry, (*building, directory))
    generated = [generate_secret(entry, directory) for entry in spec.get("secretGenerator", [])]
    resources += generated
    for patch in spec.get("patches", []):
        resources = apply_patch(resources, patch, directory)
    for image in spec.get("images", []):
        set_image(resources, image)
    for secret, entry in zip(generated, spec.get("secretGenerator", []), strict=True):
        rename_secret_references(resources, entry["name"], secret["metadata"])
    ids = [resource_id(resource) for resource in resources]
    duplicates = {item for item in ids if ids.count(item) > 1}
    if duplicates:
        raise ValueError(f"{directory}: resources defined twice: {duplicates}")
    return resources


def load(path: Path, building: tuple[Path, ...]) -> list[Resource]:
    if path.is_dir():
        return render(path, building)
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def resource_id(resource: Resource) -> tuple[str, str, str, str]:
    metadata = resource["metadata"]
    return (
        resource["apiVersion"],
        resource["kind"],
        metadata.get("namespace", ""),
        metadata["name"],
    )


def group_version(resource: Resource) -> tuple[str, str]:
    group, _, version = resource["apiVersion"].rpartition("/")
    return group, version


def matches(resource: Resource, target: dict[str, str]) -> bool:
    group, version = group_version(resource)
    actual = {
        "group": group,
        "version": version,
        "kind": resource["kind"],
        "name": resource["metadata"]["name"],
        "namespace": resource["metadata"].get("namespace", ""),
    }
    unknown = set(target) - set(actual)
    if unknown:
        raise UnsupportedKustomization(f"patch target fields {sorted(unknown)}")
    return all(actual[key] == value for key, value in target.items())


def apply_patch(resources: list[Resource], patch: dict[str, Any], where: Path) -> list[Resource]:
    if set(patch) - {"target", "patch"}:
        raise UnsupportedKustomization(f"{where}: patch fields {sorted(patch)}")
    body = yaml.safe_load(patch["patch"])
    if isinstance(body, list):
        return _json_patch(resources, patch["target"], body, where)
    if isinstance(body, dict) and body.get("$patch") == "delete" and "target" not in patch:
        return _delete(resources, body, where)
    raise UnsupportedKustomization(f"{where}: only JSON patches and `$patch: delete`")


def _json_patch(
    resources: list[Resource], target: dict[str, str], operations: list[Any], where: Path
) -> list[Resource]:
    selected = [matches(resource, target) for resource in resources]
    if not any(selected):
        raise ValueError(f"{where}: patch target {target} matches nothing")
    return [
        jsonpatch.apply_patch(resource, operations) if chosen else resource
        for resource, chosen in zip(resources, selected, strict=True)
    ]


def _delete(resources: list[Resource], body: Resource, where: Path) -> list[Resource]:
    target = {
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        "namespace": body["metadata"].get("namespace", ""),
    }
    kept = [
        resource
        for resource in resources
        if not (matches(resource, target) and resource["apiVersion"] == body["apiVersion"])
    ]
    if len(kept) == len(resources):
        raise ValueError(f"{where}: `$patch: delete` of {target} matches nothing")
    return kept


def set_image(resources: list[Resource], image: dict[str, str]) -> None:
    if set(image) - {"name", "newName", "newTag"}:
        raise UnsupportedKustomization(f"image fields {sorted(image)}")
    for container in containers(resources):
        name, tag = split_image(container["image"])
        if name == image["name"]:
            new_tag = image.get("newTag", tag)
            new_name = image.get("newName", name)
            container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def split_image(reference: str) -> tuple[str, str]:
    """`registry:5000/agent:1.0` -> (`registry:5000/agent`, `1.0`); the tag may be absent."""
    path, _, last = reference.rpartition("/")
    name, _, tag = last.partition(":")
    return (f"{path}/{name}" if path else name), tag


def containers(resources: list[Resource]) -> Iterator[dict[str, Any]]:
    """Every container of every pod template, wherever it sits in the resources."""

    def walk(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _CONTAINER_LISTS and isinstance(value, list):
                    yield from value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return walk(resources)


def generate_secret(entry: dict[str, Any], directory: Path) -> Resource:
    """A Secret (Opaque unless `type` says) from files (`key=path` or `path`), its name
    ending in a hash of its content."""
    if set(entry) - {"name", "namespace", "type", "files"}:
        raise UnsupportedKustomization(f"{directory}: secretGenerator fields {sorted(entry)}")
    data = {}
    for source in entry["files"]:
        key, _, path = source.rpartition("=")
        file = directory / path
        if not file.is_file():
            raise FileNotFoundError(f"{directory}: secretGenerator {entry['name']}: no {file}")
        data[key or file.name] = base64.b64encode(file.read_bytes()).decode()
    kind = entry.get("type", "Opaque")
    content = json.dumps({"name": entry["name"], "type": kind, "data": data}, sort_keys=True)
    suffix = hashlib.sha256(content.encode()).hexdigest()[:10]
    metadata = {"name": f"{entry['name']}-{suffix}"}
    if "namespace" in entry:
        metadata["namespace"] = entry["namespace"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": kind,
        "data": data,
    }


def rename_secret_references(resources: list[Resource], old: str, secret: dict[str, str]) -> None:
    """Points what names Secret `old` (env, envFrom, volumes, projected volumes) at `secret`."""

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key in ("secretKeyRef", "secretRef") and value.get("name") == old:
                value["name"] = secret["name"]
            elif key == "secret" and value.get("secretName") == old:
                value["secretName"] = secret["name"]
            elif key == "secret" and value.get("name") == old:  # a projected volume's source
                value["name"] = secret["name"]
            else:
                walk(value)

    namespace = secret.get("namespace", "")
    for resource in resources:
        if resource["metadata"].get("namespace", "") == namespace:
            walk(resource)
