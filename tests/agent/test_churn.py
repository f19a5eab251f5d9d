"""Process churn (issue 8): the agent's memory stays bounded, its caches evict, nothing crashes.

Hundreds of short-lived processes per second, some exec'ing another binary,
each burning a little CPU and sending a datagram on loopback, against the real
agent (subprocess, real BPF) and a real server. Memory is compared window to
window (never timings): once the process tables have reached the size the
drain interval gives them, resident memory must stop growing.
"""

from pathlib import Path

import pytest

from podflame.agent.processes import MAX_RECORDS
from tests.agent.churnlib import ChurnReport, run_churn

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

# What every agent cache is capped at (Symbolizer and CgroupResolver defaults).
SYMBOL_TABLES = 256
CACHE_BOUNDS = {
    "processes_cpu": MAX_RECORDS,
    "processes_network": MAX_RECORDS,
    "cgroups": 16384,
    "symbol_tables": SYMBOL_TABLES,
    "opened_files": 4 * SYMBOL_TABLES,
    "mapped_files": 4 * SYMBOL_TABLES,
    "layouts": 4 * SYMBOL_TABLES,
    "perf_maps": SYMBOL_TABLES,
}
# Resident memory may still rise this much from the middle third of the run to the last:
# glibc and Python keep freed memory in arenas, and other processes on the
# node keep filling the symbol cache (capped at --symbol-cache-bytes).
RSS_MARGIN_MIB = 64


def assert_bounded(report: ChurnReport, seconds: float) -> None:
    assert report.alive and report.exit_code == 0, report.log[-3000:]
    assert "Traceback" not in report.log and " ERROR " not in report.log, report.log[-3000:]
    # The first third is warm-up: the process tables fill up to what three
    # drain intervals of churn leave in them. From then on memory must level off.
    third = seconds / 3
    middle, last = report.rss_mib(third, 2 * third), report.rss_mib(2 * third, seconds)
    assert middle and last
    assert max(last) <= max(middle) + RSS_MARGIN_MIB, (middle, last)
    for tick in report.ticks:
        for cache, bound in CACHE_BOUNDS.items():
            value = tick.gauges.get(f'podflame_agent_cache_entries{{cache="{cache}"}}', 0)
            assert value <= bound, (cache, value, tick.second)
    tables = [
        t.gauges.get('podflame_agent_cache_entries{cache="processes_cpu"}', 0) for t in report.ticks
    ]
    # Records of ended processes are dropped: the table shrinks once the churn ends.
    assert tables[-1] < max(tables), tables
    assert report.named > 0  # children were sampled and named at all


def run(tmp_path: Path, rate: int, seconds: float, interval: float) -> ChurnReport:
    return run_churn(
        tmp_path, rate=rate, seconds=seconds, interval=interval, symbol_cache_bytes=16 << 20
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
