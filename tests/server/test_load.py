"""Many simulated agents against a real `podflame server` subprocess (benchmarks/load.py).

The short run is in the normal suite: no errors and every batch stored exactly
once, counted in storage. The full run (200 agents, 5 minutes) is soak-marked:
no errors and no memory growth trend. Latency is a timing: the benchmark
reports it and checks the p99 goal, tests do not.
"""

from pathlib import Path

import pytest

from benchmarks.load import LoadResult, rss_trend_percent, run_load


def assert_every_batch_stored_once(result: LoadResult) -> None:
    tally, stored = result.tally, result.stored
    assert tally.errors == {}
    assert len(tally.latencies) == tally.sent > 0
    assert stored["cpu_rows"] + stored["net_rows"] == tally.rows
    assert stored["latency_rows"] == tally.latency_rows
    assert stored["peer_rows"] == tally.peer_rows


def test_twenty_agents_for_25_seconds_store_every_batch_once(tmp_path: Path) -> None:
    result = run_load(tmp_path, agents=20, seconds=25)
    assert_every_batch_stored_once(result)


@pytest.mark.soak
def test_two_hundred_agents_for_five_minutes(tmp_path: Path) -> None:
    result = run_load(tmp_path, agents=200, seconds=300)
    assert_every_batch_stored_once(result)
    # Bounded memory: no growth trend over the second half (caches full by then).
    assert rss_trend_percent(result.rss) < 10
