"""The accuracy workloads (tests/fixtures/accuracy): how to build them and what they must show.

Every workload follows the protocol of tests/fixtures/accuracy/protocol.h:
prints "ready", waits for a line on stdin, runs its busy phase under a marker
function, prints "done", then lives until stdin closes. `split` is the share
of the busy phase each hot function gets by construction (work units), keyed
by the name podflame must show for it.
"""

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.accuracy.profiles import js_function, same_name
from tests.fixtures import FIXTURES, WORKLOAD_CFLAGS

SOURCES = FIXTURES / "accuracy"
CFLAGS = [*WORKLOAD_CFLAGS, "-Wall", "-Wextra", "-Werror"]
RUSTFLAGS = ["--edition", "2021", "-C", "force-frame-pointers=yes", "-C", "opt-level=1"]
# JIT names in /tmp/perf-PID.map; protocol and flags explained in hot.js.
NODE_FLAGS = ["--perf-basic-prof", "--interpreted-frames-native-stack", "--no-turbo-inlining"]


def launched_pid(pid: int) -> int:
    """The workload is the process the harness started."""
    return pid


@dataclass(frozen=True)
class Workload:
    """A workload ready to run, and what its profile must show."""

    name: str
    argv: tuple[str, ...]  # the busy phase's seconds are appended
    split: dict[str, float]  # hot function -> its known share of the busy phase
    marker: str  # the function that runs the busy phase
    # Frame name -> what is compared with perf's; podflame's top must hold
    # each function of `split` as it is, or normalized to it.
    normalize: Callable[[str], str] = same_name
    # The launched process's pid -> the workload's (host) pid.
    find_pid: Callable[[int], int] = launched_pid


def require_tool(command: str, package: str) -> str:
    """The tool's path; a test without it skips on a developer machine and fails in CI."""
    path = shutil.which(command)
    if path is None:
        message = f"{command} is not installed (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def build(argv: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stderr}"


def c_program(directory: Path) -> Path:
    """The C workload, also run from inside namespaces by `namespaced`."""
    require_tool("gcc", "gcc")
    binary = directory / "hot3"
    build(["gcc", *CFLAGS, "-o", str(binary), str(SOURCES / "hot3.c")])
    return binary


def c(directory: Path) -> Workload:
    return Workload(
        name="c",
        argv=(str(c_program(directory)),),
        split={"burn_a": 0.5, "burn_b": 0.3, "burn_c": 0.2},
        marker="run",
    )


def cpp(directory: Path) -> Workload:
    require_tool("g++", "g++")
    binary = directory / "hot_templates"
    build(["g++", *CFLAGS, "-o", str(binary), str(SOURCES / "hot_templates.cpp")])
    # As c++filt prints _ZN2ns6WorkerIiE6crunchEm and _ZN2ns6WorkerIlE6crunchEm.
    return Workload(
        name="cpp",
        argv=(str(binary),),
        split={
            "ns::Worker<int>::crunch(unsigned long)": 0.6,
            "ns::Worker<long>::crunch(unsigned long)": 0.4,
        },
        marker="run",
    )


def rust(directory: Path, mangling: str) -> Workload:
    """`mangling`: "legacy" (_ZN...17h<hash>E) or "v0" (_RNv...)."""
    require_tool("rustc", "rustc")
    binary = directory / f"accuracy_rust_{mangling}"
    # Legacy is stable rustc's default; naming it explicitly needs -Z unstable-options.
    flags = [] if mangling == "legacy" else ["-C", f"symbol-mangling-version={mangling}"]
    crate = ["--crate-name", "accuracy_rust", str(SOURCES / "accuracy_rust.rs")]
    build(["rustc", *RUSTFLAGS, *flags, "-o", str(binary), *crate])
    # Demangled without the legacy hash or the v0 crate disambiguator.
    return Workload(
        name=f"rust-{mangling}",
        argv=(str(binary),),
        split={
            "accuracy_rust::hot::alpha": 0.5,
            "accuracy_rust::hot::beta": 0.3,
            "accuracy_rust::hot::gamma": 0.2,
        },
        marker="run",
    )


def go(directory: Path) -> Workload:
    go_command = require_tool("go", "golang-go")
    binary = directory / "hot_go"
    # A private build cache: nothing written under $HOME.
    env = {**os.environ, "GOCACHE": str(directory / "gocache"), "GOFLAGS": ""}
    build([go_command, "build", "-o", str(binary), str(SOURCES / "hot.go")], env=env)
    return Workload(
        name="go",
        argv=(str(binary),),
        split={"main.hotAlpha": 0.6, "main.hotBeta": 0.4},
        marker="main.run",
    )


def node(directory: Path) -> Workload:
    node_command = require_tool("node", "nodejs")
    return Workload(
        name="node",
        argv=(node_command, *NODE_FLAGS, str(SOURCES / "hot.js")),
        split={"hotAlpha": 0.5, "hotBeta": 0.3, "hotGamma": 0.2},
        marker="runCycles",
        normalize=js_function,
    )


# Runs as the init of new PID and mount namespaces: mounts a tmpfs visible in
# its mount namespace only, copies the binary there and becomes it.
_IN_NAMESPACE = """set -e
mount -t tmpfs -o size=16m podflame-accuracy "$1"
mkdir "$1/only-in-namespace"
cp "$2" "$1/only-in-namespace/$(basename "$2")"
exec "$1/only-in-namespace/$(basename "$2")" "$3"
"""


def namespaced(directory: Path) -> tuple[Workload, Path]:
    """The C workload in its own PID and mount namespaces, and its path in there.

    The tmpfs is mounted over an empty host directory, so on the host the
    binary's path does not exist: only /proc/PID/root (or map_files) reaches it.
    """
    require_tool("unshare", "util-linux")
    binary = c_program(directory)
    mountpoint = directory / "namespace-mount"
    mountpoint.mkdir()
    workload = Workload(
        name="namespaced",
        argv=(
            *("unshare", "--pid", "--mount", "--fork", "--mount-proc", "--kill-child"),
            *("sh", "-c", _IN_NAMESPACE, "sh", str(mountpoint), str(binary)),
        ),
        split={"burn_a": 0.5, "burn_b": 0.3, "burn_c": 0.2},
        marker="run",
        find_pid=namespaced_child,
    )
    return workload, mountpoint / "only-in-namespace" / binary.name


def namespaced_child(unshare_pid: int) -> int:
    """The workload's host pid: unshare --fork runs it as its only child.

    Also checks what the test relies on: its own PID namespace (two pids in
    NSpid, host and namespace) and its own mount namespace.
    """
    children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    assert len(children) == 1, f"unshare ({unshare_pid}) has children {children}"
    pid = int(children[0])
    status = Path(f"/proc/{pid}/status").read_text()
    nspid = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
    assert nspid == [str(pid), "1"], status
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    return pid


def pie_with_library(directory: Path) -> tuple[Workload, Path]:
    """A PIE executable and its shared library, which only the executable's rpath finds."""
    require_tool("gcc", "gcc")
    library_dir = directory / "lib-only-here"
    library_dir.mkdir()
    library = library_dir / "libaccuracy_hot.so"
    build(["gcc", *CFLAGS, "-fPIC", "-shared", "-o", str(library), str(SOURCES / "libhot.c")])
    binary = directory / "pie_main"
    build(
        [
            *("gcc", *CFLAGS, "-fPIE", "-pie", "-o", str(binary), str(SOURCES / "pie_main.c")),
            *(f"-L{library_dir}", "-laccuracy_hot", f"-Wl,-rpath,{library_dir}"),
        ]
    )
    workload = Workload(
        name="pie",
        argv=(str(binary),),
        split={"lib_burn": 0.6, "pie_burn": 0.4},
        marker="run",
    )
    return workload, library
