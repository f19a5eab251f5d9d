"""Many simulated agents against a real `podflame server` subprocess (benchmarks/load.py).

The short run is in the normal suite: no errors and every batch stored exactly
once, counted in storage. The full run (200 agents, 5 minutes) is soak-marked:
no errors and no memory growth trend. Latency is a timing: the benchmark
reports it and checks the p99 goal, tests do not.
"""

from pathlib import Path

import pytest

from benchmarks.load import LoadResult, report, rss_trend_percent, run_load

# Growth trend of the server's RSS over the second half of a run, in % of its
# mean there. chDB's caches fill in the first seconds; after that a leak of
# a few KB per batch would show as a steady rise.
RSS_TREND_MARGIN_PERCENT = 10


def assert_every_batch_stored_once(result: LoadResult) -> None:
    tally, stored = result.tally, result.stored
    assert tally.errors == {}
    assert len(tally.latencies) == tally.sent > 0
    assert stored["cpu_rows"] + stored["net_rows"] == tally.rows
    assert stored["latency_rows"] == tally.latency_rows
    assert stored["peer_rows"] == tally.peer_rows


def test_twenty_agents_for_30_seconds_store_every_batch_once(tmp_path: Path) -> None:
    result = run_load(tmp_path, agents=20, seconds=30, rss_period=1.0)
    print("\n".join(report(result)))
    assert_every_batch_stored_once(result)
    assert rss_trend_percent(result.rss) < RSS_TREND_MARGIN_PERCENT


@pytest.mark.soak
def test_two_hundred_agents_for_ten_minutes(tmp_path: Path) -> None:
    # The load is 200 agents for 5 minutes; the run goes on to 10 because
    # the server's memory is still settling at 5 (chDB's caches and merges): the
    # trend over the second half of a 5-minute run was 7 to 9 %, of the same run
    # taken to 15 minutes 2 to 3 % and flat (docs/operations.md, Server: load).
    result = run_load(tmp_path, agents=200, seconds=600)
    print("\n".join(report(result)))  # the figures, with `pytest -s`
    assert_every_batch_stored_once(result)
    # Bounded memory: no growth trend over the second half (caches full by then).
    assert rss_trend_percent(result.rss) < RSS_TREND_MARGIN_PERCENT


@pytest.mark.soak
def test_five_hundred_agents_answered_within_a_second(tmp_path: Path) -> None:
    # Issue 19: a server for a thousand nodes; 500 agents' batches (wire version 2,
    # marked as first sends, as the agent sends them) with no errors and p99 < 1 s.
    result = run_load(tmp_path, agents=500, seconds=300)
    print("\n".join(report(result)))
    assert result.error_count == 0, result.tally.errors
    assert result.percentile(99) < 1.0
    assert_every_batch_stored_once(result)
