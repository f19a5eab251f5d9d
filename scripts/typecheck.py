"""Run mypy on the package as it is installed.

pyproject.toml maps top-level folders (profiler-agent/, server/, ...) to
subpackages. mypy cannot follow setuptools' editable-install import hook, so
this lays the same mapping out as a tree of symlinks under build/ and checks
that tree. The mapping is read from pyproject.toml: it is defined only there.
"""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def link(target: Path, source: Path) -> None:
    if target.is_symlink():
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)


def link_tree() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items()):
        target = TREE.joinpath(*package.split("."))
        source = ROOT / folder
        if "." not in package:
            # The root package is a real folder here, so that subpackage links
            # land in the tree and not in the repository.
            for module in source.glob("*.py"):
                link(target / module.name, module)
        elif not (target.exists() and target.resolve() == source.resolve()):
            link(target, source)


def main() -> int:
    link_tree()
    return subprocess.call(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "-p",
            "podflame",
        ],
        cwd=TREE,
    )


if __name__ == "__main__":
    sys.exit(main())
