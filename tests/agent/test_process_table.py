"""The process table's bounds: a hard cap on records, the oldest evicted first,
and the counters and gauges that show it at /metrics."""

from pathlib import Path

from podflame.agent.captures import ProcessCaptures
from podflame.agent.processes import ProcessTable
from podflame.agent.sampler import ProcessGeneration
from podflame.agent.stats import AgentStats, collect
from podflame.symbolizer import Symbolizer


def gone_table(proc: Path, max_records: int) -> ProcessTable:
    # An empty directory as /proc: every process announced has already exited,
    # as most children do under heavy process churn.
    return ProcessTable(ProcessCaptures(Symbolizer(proc=proc), proc=proc), max_records=max_records)


def test_records_past_the_cap_evict_the_oldest_first(tmp_path: Path) -> None:
    table = gone_table(tmp_path, max_records=3)
    for pid in range(100, 105):
        table.announce(ProcessGeneration(pid, 1))
    assert len(table) == 3
    assert table.pids() == {102, 103, 104}
    assert (table.evicted, table.gone_at_capture) == (2, 5)


def test_announcing_again_makes_a_record_the_newest(tmp_path: Path) -> None:
    table = gone_table(tmp_path, max_records=2)
    table.announce(ProcessGeneration(100, 1))
    table.announce(ProcessGeneration(101, 1))
    table.announce(ProcessGeneration(100, 1))  # seen again: 101 is now the oldest
    table.announce(ProcessGeneration(102, 1))
    assert table.pids() == {100, 102}
    assert table.evicted == 1


def test_ended_processes_are_dropped_at_the_end_of_a_drain(tmp_path: Path) -> None:
    table = gone_table(tmp_path, max_records=100)
    for pid in range(100, 110):
        table.announce(ProcessGeneration(pid, 1))
    table.end_drain(set())
    assert len(table) == 10  # kept one drain more: samples may still be in flight
    table.end_drain(set())
    assert len(table) == 0
    assert table.evicted == 0  # dropped for having ended, not by the cap


def test_cache_sizes_and_table_counters_are_exported() -> None:
    samples = collect(
        AgentStats(announce_backlog={"cpu": 7}),
        {},
        3,
        {"processes_cpu": 3, "symbol_tables": 2},
        {"cpu": (5, 1)},
    )
    found = {(s.name, s.labels): s.value for s in samples}
    assert found["podflame_agent_cache_entries", (("cache", "processes_cpu"),)] == 3
    assert found["podflame_agent_cache_entries", (("cache", "symbol_tables"),)] == 2
    assert found["podflame_agent_announce_backlog", (("table", "cpu"),)] == 7
    assert found["podflame_agent_processes_gone_at_capture_total", (("table", "cpu"),)] == 5
    assert found["podflame_agent_processes_evicted_total", (("table", "cpu"),)] == 1
