"""Process churn (issue 8): the agent's memory stays bounded, its caches evict, nothing crashes.

Hundreds of short-lived processes per second, some exec'ing another binary,
each burning a little CPU and sending a datagram on loopback, against the real
agent (subprocess, real BPF) and a real server. Memory is compared window to
window (never timings): from the middle third of the run to the last, resident
memory may grow only by what the agent's bounded state grew by (process
records and the symbol cache, each asserted under its cap) and a fixed margin.
On a loaded machine drains run late and the tables hold more processes in the
last third than in the middle one; that is bounded growth, and allowed for,
while growth that no bounded state accounts for still fails.
"""

from pathlib import Path

import pytest

from podflame.agent.processes import MAX_RECORDS
from tests.agent.churnlib import ChurnReport, Tick, run_churn

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

# What every agent cache is capped at (Symbolizer and CgroupResolver defaults).
SYMBOL_TABLES = 256
CACHE_BOUNDS = {
    "processes": MAX_RECORDS,
    "cgroup_texts": 1024,
    "cgroups": 16384,
    "symbol_tables": SYMBOL_TABLES,
    "opened_files": 4 * SYMBOL_TABLES,
    "mapped_files": 4 * SYMBOL_TABLES,
    "layouts": 4 * SYMBOL_TABLES,
    "perf_maps": SYMBOL_TABLES,
}
SYMBOL_CACHE_BYTES = 16 << 20
# Resident memory may rise this much from the middle third of the run to the
# last besides what the bounded state grew by: glibc and Python keep freed
# memory in arenas, and a late drain (more samples) raises their high-water mark.
RSS_MARGIN_MIB = 64
# The most a process record holds: about 3 KiB for a process captured
# alive (its mappings, cgroup and name; tracemalloc, see docs/operations.md),
# 0.3 KiB for one gone at capture. Counted at the higher figure.
RECORD_KIB = 3
RECORD_CACHES = ("processes",)


def gauge(tick: Tick, cache: str) -> float:
    return tick.gauges.get(f'podflame_agent_cache_entries{{cache="{cache}"}}', 0)


def state_mib(ticks: list[Tick]) -> float:
    """The most memory the agent's bounded state accounted for in `ticks`."""
    return max(
        sum(gauge(t, c) for c in RECORD_CACHES) * RECORD_KIB / 1024
        + gauge(t, "symbol_table_bytes") / (1 << 20)
        for t in ticks
    )


def rss_peak_mib(ticks: list[Tick]) -> float:
    return max(t.rss_kib for t in ticks) / 1024


def assert_bounded(report: ChurnReport, seconds: float) -> None:
    assert report.alive and report.exit_code == 0, report.log[-3000:]
    assert "Traceback" not in report.log and " ERROR " not in report.log, report.log[-3000:]
    # The first third is warm-up: the process tables fill up to what three
    # drain intervals of churn leave in them. From then on memory must level
    # off, but for what the bounded state grew by when drains ran late.
    third = seconds / 3
    middle, last = report.window(third, 2 * third), report.window(2 * third, seconds)
    assert middle and last
    grown = max(0.0, state_mib(last) - state_mib(middle))
    rss_middle, rss_last = rss_peak_mib(middle), rss_peak_mib(last)
    assert rss_last <= rss_middle + grown + RSS_MARGIN_MIB, (rss_middle, rss_last, grown)
    for tick in report.ticks:
        for cache, bound in CACHE_BOUNDS.items():
            assert gauge(tick, cache) <= bound, (cache, gauge(tick, cache), tick.second)
    tables = [gauge(t, "processes") for t in report.ticks]
    # Records of ended processes are dropped: the table shrinks once the churn ends.
    assert tables[-1] < max(tables), tables
    assert report.named > 0  # children were sampled and named at all


def run(tmp_path: Path, rate: int, seconds: float, interval: float) -> ChurnReport:
    return run_churn(
        tmp_path,
        rate=rate,
        seconds=seconds,
        interval=interval,
        symbol_cache_bytes=SYMBOL_CACHE_BYTES,
    )


def test_agent_memory_is_bounded_under_process_churn_short(tmp_path: Path) -> None:
    """Scaled down: 200 processes per second and 1 s drains reach steady state in seconds."""
    report = run(tmp_path, rate=200, seconds=15, interval=1)
    assert report.started == 3000
    assert_bounded(report, 15)


@pytest.mark.soak
def test_agent_memory_is_bounded_under_500_processes_per_second_for_60_s(tmp_path: Path) -> None:
    report = run(tmp_path, rate=500, seconds=60, interval=5)
    assert report.started == 30000
    assert_bounded(report, 60)
