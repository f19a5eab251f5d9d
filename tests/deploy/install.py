"""The Kubernetes install as a test renders it: a copy of deploy/kubernetes with the
files `kubectl apply -k` needs made by the real scripts (tokens, TLS)."""

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.deploy.kustomize import Resource, render

ROOT = Path(__file__).resolve().parents[2]
# `kubectl apply -k deploy/kubernetes` installs base/; the overlays build on base/.
INSTALL = ROOT / "deploy" / "kubernetes"
BASE = INSTALL / "base"
OVERLAYS = sorted(path.name for path in (INSTALL / "overlays").iterdir())
MAKE_TOKENS = ROOT / "scripts" / "make-tokens.sh"
MAKE_TLS = ROOT / "scripts" / "make-tls.sh"

Build = Callable[[str], list[Resource]]


def prepare(destination: Path) -> Path:
    """deploy/kubernetes copied to `destination` (without a developer's own secrets),
    with new tokens and a new CA and certificate in it, as the docs say to make them."""
    shutil.copytree(INSTALL, destination, ignore=shutil.ignore_patterns("secrets"))
    subprocess.run([MAKE_TOKENS, destination / "base" / "secrets"], check=True, timeout=60)
    subprocess.run([MAKE_TLS, destination / "overlays/tls/secrets"], check=True, timeout=60)
    return destination


def builder(install: Path) -> Build:
    """`build("base")`: the default install; `build(overlay)`: that overlay."""

    def build(name: str) -> list[Resource]:
        return render(install if name == "base" else install / "overlays" / name)

    return build
