"""The BPF sampler on the real kernel: drains lose nothing and count nothing twice."""

import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from podflame.agent.sampler import CpuSampler, MapSizes, SampleCount, call_sites, map_sizes
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
    mine = [p.generation for p in announced if p.pid == process.pid]
    # Besides the two images, the fork child may be sampled before its exec:
    # a third generation. The exit path keeps the last image's generation.
    assert 2 <= len(mine) <= 3, mine
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
