"""The BPF sampler on the real kernel: drains lose nothing and count nothing twice."""

import subprocess
import time
from pathlib import Path

import pytest

from podflame.agent.sampler import CpuSampler, call_sites, map_sizes
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
            counted += sum(s.count for s in sampler.drain().samples if s.pid == workload.pid)
            drains += 1
        counted += sum(s.count for s in sampler.drain().samples if s.pid == workload.pid)
        cpu_seconds = workload_cpu_seconds(workload)
    finally:
        sampler.close()
    assert drains > 20
    # At 199 Hz over ~3 s the sampling error alone is well under 5 %.
    assert counted * sampler.period_ns / 1e9 == pytest.approx(cpu_seconds, rel=0.05)


def test_call_sites_point_into_the_call_instruction() -> None:
    assert call_sites((0x1000, 0x2005, 0x3010)) == (0x1000, 0x2004, 0x300F)
    assert call_sites(()) == ()
