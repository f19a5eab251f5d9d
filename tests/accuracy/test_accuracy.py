"""podflame's per-function CPU shares agree with `perf record -F 99 -g` within 3 points.

Each workload splits its busy phase between named hot functions in a known
ratio; perf and the real agent profile it at the same time (conftest.py).
For every hot function: podflame names it as perf does (demangled, JIT names
from the perf map), and its share of the busy phase is within 3 percentage
points of perf's. perf's share must also be within 5 points of the known
split, which checks the workload rather than podflame.
"""

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.accuracy import workloads
from tests.accuracy.conftest import Measurement, assert_accurate
from tests.accuracy.profiles import UNKNOWN

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

Measure = Callable[[workloads.Workload], Measurement]

ET_DYN = 3  # e_type of a PIE executable or a shared library


def elf_type(path: Path) -> int:
    """e_type from the ELF header (little-endian x86-64: bytes 16-17)."""
    return int.from_bytes(path.read_bytes()[16:18], "little")


def unnamed_frames(measurement: Measurement, module: str) -> set[str]:
    """Frames of the busy phase that podflame could not name, in `module` or anywhere."""
    return {
        frame
        for stack in measurement.podflame_stacks
        if measurement.workload.marker in stack.frames
        for frame in stack.frames
        if frame.startswith(f"{module}+0x") or frame == UNKNOWN
    }


def test_c_with_frame_pointers(measure: Measure, tmp_path: Path) -> None:
    assert_accurate(measure(workloads.c(tmp_path)))


def test_cpp_mangled_names_and_templates(measure: Measure, tmp_path: Path) -> None:
    assert_accurate(measure(workloads.cpp(tmp_path)))


@pytest.mark.parametrize("mangling", ["legacy", "v0"])
def test_rust_with_frame_pointers(measure: Measure, tmp_path: Path, mangling: str) -> None:
    assert_accurate(measure(workloads.rust(tmp_path, mangling)))


def test_node_jit_functions_through_perf_map(measure: Measure, tmp_path: Path) -> None:
    assert_accurate(measure(workloads.node(tmp_path)))


def test_go(measure: Measure, tmp_path: Path) -> None:
    assert_accurate(measure(workloads.go(tmp_path)))


def test_binary_in_own_pid_and_mount_namespaces(measure: Measure, tmp_path: Path) -> None:
    workload, path_inside = workloads.namespaced(tmp_path)
    measurement = measure(workload)
    # What makes this case: the path the process maps is not on the host.
    assert not path_inside.exists()
    assert unnamed_frames(measurement, path_inside.name) == set()
    assert_accurate(measurement)


def test_pie_executable_and_shared_library(measure: Measure, tmp_path: Path) -> None:
    workload, library = workloads.pie_with_library(tmp_path)
    assert elf_type(Path(workload.argv[0])) == ET_DYN  # position independent
    measurement = measure(workload)
    assert unnamed_frames(measurement, library.name) == set()
    assert unnamed_frames(measurement, os.path.basename(workload.argv[0])) == set()
    assert_accurate(measurement)
