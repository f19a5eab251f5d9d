"""The BPF sampler on the real kernel: drains lose nothing and count nothing twice."""

import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from podflame.agent.bpfmaps import call_sites
from podflame.agent.programs import ProcessGeneration
from podflame.agent.sampler import (
    CpuSampler,
    MapSizes,
    SampleCount,
    map_sizes,
)
from tests.agent.churnlib import build_churn
from tests.conftest import compile_c, workload_cpu_seconds
from tests.fixtures import FIXTURES


def test_map_sizes_grow_with_rate_and_stay_bounded() -> None:
    small = map_sizes(frequency=19, interval=10, cpus=2)
    large = map_sizes(frequency=999, interval=60, cpus=64)
    assert small.stack_entries >= 4 * 2 * 19 * 10 * 2
    assert small.count_entries >= 19 * 10 * 2
    assert large.stack_entries == large.count_entries == 1 << 18
    for size in (*vars(small).values(), *vars(large).values()):
        assert size & (size - 1) == 0, "BPF hash maps are sized in powers of two"


@pytest.mark.bpf
@pytest.mark.usefixtures("require_bpf")
def test_frequent_drains_account_for_all_cpu_time(tmp_path: Path) -> None:
    binary = compile_c(FIXTURES / "burn7030.c", tmp_path / "burn7030")
    sampler = CpuSampler(frequency=199, interval=0.1, kernel_stacks=True)
    sampler.start()
    try:
        workload = subprocess.Popen([str(binary), "3"], stdout=subprocess.PIPE, text=True)
        counted = drains = 0
        while workload.poll() is None:
            time.sleep(0.05)  # many drains while the workload runs: boundaries matter
            counted += sum(
                s.count for s in sampler.drain().samples if s.process.pid == workload.pid
            )
            drains += 1
        counted += sum(s.count for s in sampler.drain().samples if s.process.pid == workload.pid)
        cpu_seconds = workload_cpu_seconds(workload)
    finally:
        sampler.close()
    assert drains > 20
    # At 199 Hz over ~3 s the sampling error alone is well under 5 %.
    assert counted * sampler.period_ns / 1e9 == pytest.approx(cpu_seconds, rel=0.05)


def test_call_sites_point_into_the_call_instruction() -> None:
    assert call_sites((0x1000, 0x2005, 0x3010)) == (0x1000, 0x2004, 0x300F)
    assert call_sites(()) == ()


@pytest.mark.bpf
@pytest.mark.usefixtures("require_bpf")
@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param(MapSizes(stack_entries=4096, count_entries=2), id="count-map-full"),
        pytest.param(MapSizes(stack_entries=4, count_entries=1024), id="stack-map-collides"),
    ],
)
def test_full_maps_are_counted_not_silent(tmp_path: Path, sizes: MapSizes) -> None:
    """With a map far too small, every sample is counted, collided or counted as dropped."""
    binary = compile_c(FIXTURES / "burn7030.c", tmp_path / "burn7030")
    sampler = CpuSampler(frequency=199, interval=1, kernel_stacks=True, sizes=sizes)
    sampler.start()
    try:
        workloads = [
            subprocess.Popen([str(binary), "1.5"], stdout=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        cpu_seconds = sum(workload_cpu_seconds(w) for w in workloads)
        sampler.poll(0)  # collided samples come through the overflow ring buffer
        drain = sampler.drain()
    finally:
        sampler.close()
    if sizes.count_entries == 2:
        assert drain.drops["count_map"] > 0, "three processes cannot share two entries"
    else:
        assert drain.overflowed > 0, "a 4-entry stack map collides at once"
    # Samples of the workloads that made it in (counted or collided), plus the
    # ones lost for a full count map or a full overflow ring buffer (nothing
    # read it during the run), cover the CPU time the workloads used.
    pids = {w.pid for w in workloads}
    recorded = sum(s.count for s in drain.samples if s.process.pid in pids)
    lost = drain.drops["count_map"] + drain.drops["overflow"]
    assert (recorded + lost) * sampler.period_ns / 1e9 >= 0.95 * cpu_seconds


@pytest.mark.bpf
@pytest.mark.usefixtures("require_bpf")
def test_new_processes_are_announced_once_per_image(tmp_path: Path) -> None:
    exec_after = compile_c(FIXTURES / "exec_after.c", tmp_path / "exec_after")
    burn = compile_c(FIXTURES / "burn7030.c", tmp_path / "burn7030")
    sampler = CpuSampler(frequency=199, interval=1, kernel_stacks=False)
    sampler.start()
    try:
        process = subprocess.Popen(
            [str(exec_after), "0.5", str(burn), "0.5"], stdout=subprocess.PIPE
        )
        announced = []
        while process.poll() is None:
            announced += sampler.poll(100)
        announced += sampler.poll(100)
        samples = [s for s in sampler.drain().samples if s.process.pid == process.pid]
    finally:
        sampler.close()
    mine = [a.process.generation for a in announced if a.process.pid == process.pid]
    # Besides the two images, the fork child may be sampled before its exec:
    # a third generation. The exit path keeps the last image's generation.
    assert 2 <= len(mine) <= 3, mine
    # Only that fork child (this process's, before its exec) carries a parent.
    parents = [a.parent.pid for a in announced if a.process.pid == process.pid and a.parent]
    assert parents in ([], [os.getpid()]), parents
    assert len(set(mine)) == len(mine), "a generation was announced twice"
    assert 0 not in mine
    assert {s.process.generation for s in samples} <= set(mine)
    before = _busiest_generation(samples, "exec_after")
    after = _busiest_generation(samples, "burn7030")
    assert before != after, "exec must start a new generation"


def _busiest_generation(samples: list[SampleCount], comm: str) -> int:
    per_generation: Counter[int] = Counter()
    for sample in samples:
        if sample.comm == comm:
            per_generation[sample.process.generation] += sample.count
    assert per_generation, f"no samples of {comm}"
    return per_generation.most_common(1)[0][0]


@pytest.mark.bpf
@pytest.mark.usefixtures("require_bpf")
def test_forked_children_are_announced_with_their_parent(tmp_path: Path) -> None:
    """Children that only fork carry their parent; those that exec'd another binary do not."""
    parent, child = build_churn(tmp_path)
    sampler = CpuSampler(frequency=499, interval=1, kernel_stacks=False)
    sampler.start()
    try:
        # 40 children, each burning 30 ms; every second one execs churn_child.
        churn = subprocess.Popen(
            [str(parent), "40", "1", "30000", "2", str(child)], stdout=subprocess.PIPE
        )
        announced = []
        while churn.poll() is None:
            announced += sampler.poll(100)
        announced += sampler.poll(100)
        samples = sampler.drain().samples
    finally:
        sampler.close()
    forked = {s.process for s in samples if s.comm == "churn" and s.process.pid != churn.pid}
    # The exec'd images: a sample between exec's change of name and the end of the
    # exec (its tracepoint) still has the forked image's generation.
    execd = busiest_generations(samples, "churn_child")
    assert len(forked) >= 10 and len(execd) >= 10, (len(forked), len(execd))
    parents = {a.process: a.parent for a in announced}
    assert {parents[p].pid for p in forked if parents.get(p)} == {churn.pid}
    assert all(parents.get(p) for p in forked), [p for p in forked if not parents.get(p)]
    assert not any(parents.get(p) for p in execd)


def busiest_generations(samples: list[SampleCount], comm: str) -> set[ProcessGeneration]:
    """Per pid, the generation with most samples under `comm`."""
    counts: Counter[ProcessGeneration] = Counter()
    for sample in samples:
        if sample.comm == comm:
            counts[sample.process] += sample.count
    busiest: dict[int, ProcessGeneration] = {}
    for process, _ in counts.most_common():
        busiest.setdefault(process.pid, process)
    return set(busiest.values())
