"""The container images, checked without Docker, and the agent's entrypoint, run for real.

No Docker here: the Dockerfiles are read (every COPY source exists, the
entrypoints run real `podflame` subcommands with real flags, ENV names real
settings). The entrypoint and the kernel-header logic it shares with
scripts/install.sh are shell, so they run here: the header search order, and
a BPF program compiled by BCC against Debian's headers bundled the way the
agent image bundles them.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from podflame.cli import build_parser
from tests.deploy import dockerfile
from tests.deploy.test_manifests import DOCKERFILES, ROOT, SCRIPT_VARIABLES

AGENT = ROOT / "deploy/docker/agent.Dockerfile"
SERVER = ROOT / "deploy/docker/server.Dockerfile"
HEADERS_LIBRARY = ROOT / "scripts/kernel-headers.sh"
ENTRYPOINT = ROOT / "scripts/agent-entrypoint.sh"
PODFLAME_BIN = Path(sys.executable).parent / "podflame"


@pytest.mark.parametrize("path", [AGENT, SERVER], ids=["agent", "server"])
def test_every_copied_file_exists(path: Path) -> None:
    for copy in dockerfile.copies(path):
        if copy.from_stage:
            continue
        for source in copy.sources:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source}"


@pytest.mark.parametrize("path", [AGENT, SERVER], ids=["agent", "server"])
def test_the_build_context_has_every_package_folder(path: Path) -> None:
    """pip builds the project in the image, so every folder pyproject.toml maps must be copied."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping = project["tool"]["setuptools"]["package-dir"]
    folders = {folder.split("/")[0] for folder in mapping.values()}
    copied = {
        source.rstrip("/")
        for copy in dockerfile.copies(path)
        if not copy.from_stage
        for source in copy.sources
    }
    assert folders <= copied
    assert {"pyproject.toml", "README.md"} <= copied


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "data"} <= set(ignored)


def test_server_image_runs_podflame_server() -> None:
    assert dockerfile.exec_form(SERVER, "ENTRYPOINT") == ["podflame"]
    args = build_parser().parse_args(dockerfile.exec_form(SERVER, "CMD"))
    assert args.command == "server"


def test_agent_image_runs_the_entrypoint_with_agent_flags() -> None:
    (entrypoint,) = dockerfile.exec_form(AGENT, "ENTRYPOINT")
    installed = {
        f"{copy.destination.rstrip('/')}/{Path(source).name}": source
        for copy in dockerfile.copies(AGENT)
        for source in copy.sources
    }
    assert installed[entrypoint] == "scripts/agent-entrypoint.sh"
    # The library it sources sits beside it.
    assert installed[str(Path(entrypoint).with_name("kernel-headers.sh"))] == (
        "scripts/kernel-headers.sh"
    )
    assert dockerfile.exec_form(AGENT, "CMD") == []
    # /metrics' address is a variable the DaemonSet can change, not an argument, which
    # would win over it (the DaemonSet's PODFLAME_METRICS_HOST was ignored when it was).
    assert dockerfile.environment(AGENT)["PODFLAME_METRICS_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_image_variables_are_settings_or_read_by_the_scripts(image: str) -> None:
    path, _, model = DOCKERFILES[image]
    scripts = "".join(p.read_text() for p in (ROOT / "scripts").glob("*.sh"))
    for name in dockerfile.environment(path):
        if not name.startswith("PODFLAME_"):
            continue
        if name in SCRIPT_VARIABLES:
            assert name in scripts, name
        else:
            assert name.removeprefix("PODFLAME_").lower() in model.model_fields, name


def run_headers(tmp_path: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`script` after sourcing scripts/kernel-headers.sh, with the node's paths replaced."""
    variables = {
        "PATH": os.environ["PATH"],
        "MODULES_DIR": str(tmp_path / "modules"),
        "KERNEL_RELEASE": "6.18.0-test",
        "KHEADERS_FILE": str(tmp_path / "kheaders.tar.xz"),
        "MODPROBE": "false",  # never load a module on the test machine
        **env,
    }
    return subprocess.run(
        [
            "bash",
            "-c",
            f'set -euo pipefail; log() {{ echo "$*"; }}; . "$0"; {script}',
            str(HEADERS_LIBRARY),
        ],
        capture_output=True,
        text=True,
        env=variables,
        check=False,
    )


def test_headers_search_order(tmp_path: Path) -> None:
    choose = (
        'own_kernel_headers || kheaders_archive || use_bundled_headers "$BUNDLED" || '
        'echo none; echo "BCC_KERNEL_SOURCE=${BCC_KERNEL_SOURCE:-}"'
    )
    bundled = tmp_path / "bundle"
    (bundled / "6.1.0-9" / "include").mkdir(parents=True)
    (bundled / "6.1.0-10" / "include").mkdir(parents=True)
    result = run_headers(tmp_path, choose, BUNDLED=str(bundled))
    assert result.stdout.splitlines() == [
        "kernel headers: bundled 6.1.0-10 (running kernel 6.18.0-test has none)",
        f"BCC_KERNEL_SOURCE={bundled}/6.1.0-10",
    ]
    (tmp_path / "kheaders.tar.xz").touch()
    result = run_headers(tmp_path, choose, BUNDLED=str(bundled))
    assert result.stdout.splitlines()[-1] == "BCC_KERNEL_SOURCE="
    assert "kheaders.tar.xz" in result.stdout
    (tmp_path / "modules" / "6.18.0-test" / "build" / "include").mkdir(parents=True)
    result = run_headers(tmp_path, choose, BUNDLED=str(bundled))
    assert result.stdout.startswith(f"kernel headers: {tmp_path}/modules/6.18.0-test/build")
    assert result.stdout.splitlines()[-1] == "BCC_KERNEL_SOURCE="
    result = run_headers(tmp_path / "nothing", choose, BUNDLED=str(tmp_path / "empty"))
    assert result.stdout.splitlines()[0] == "none"


def debian_headers() -> Path:
    found = sorted(Path("/usr/src").glob("linux-headers-*-amd64"))
    if not found:
        pytest.fail("Debian's linux-headers-amd64 is needed (scripts/install.sh installs it)")
    return found[-1]


@pytest.mark.bpf
def test_bundled_debian_headers_compile_our_bpf_program(require_bpf: None, tmp_path: Path) -> None:
    """The agent image's fallback: both halves of Debian's headers in one folder for BCC."""
    bundle = tmp_path / "kernel-headers"
    made = run_headers(tmp_path, f'bundle_debian_headers "{bundle}"', DEBIAN_ARCH="amd64")
    assert made.returncode == 0, made.stderr
    (version,) = bundle.iterdir()
    assert sorted(p.name for p in (version / "arch").iterdir()) == ["x86"]
    compile_program = (
        "from bcc import BPF; from podflame.bpf import source_text;"
        "BPF(text=source_text('cpu_profile.bpf.c').encode(), cflags=["
        "'-DSTACK_MAP_ENTRIES=1024', '-DCOUNT_MAP_ENTRIES=1024', '-DKERNEL_STACKS=1',"
        "'-DKNOWN_PIDS=1024']); print('compiled')"
    )
    env = {**os.environ, "BCC_KERNEL_SOURCE": str(version)}
    result = subprocess.run(
        [sys.executable, "-c", compile_program], capture_output=True, text=True, env=env
    )
    assert result.stdout.strip() == "compiled", result.stderr[-2000:]
    # The -amd64 half alone, what BCC_KERNEL_SOURCE would get without the merge, fails.
    env["BCC_KERNEL_SOURCE"] = str(debian_headers())
    alone = subprocess.run(
        [sys.executable, "-c", compile_program], capture_output=True, text=True, env=env
    )
    assert alone.returncode != 0


def test_entrypoint_runs_podflame_agent_with_its_arguments(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PODFLAME_COMMAND": str(PODFLAME_BIN),
        "MODPROBE": "false",
        "PODFLAME_BUNDLED_HEADERS": str(tmp_path),
    }
    result = subprocess.run(
        [str(ENTRYPOINT), "--help"], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.startswith("usage: podflame agent")
    assert "kernel headers:" in result.stderr
    refused = subprocess.run(
        [str(ENTRYPOINT), "--no-such-flag"], capture_output=True, text=True, env=env
    )
    assert refused.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in refused.stderr
