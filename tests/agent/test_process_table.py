"""The process table's bounds: a hard cap on records, the oldest evicted first,
and the counters and gauges that show it at /metrics."""

import io
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podflame.agent.agent import read_one_opened
from podflame.agent.captures import ProcessCaptures
from podflame.agent.metrics import CacheEntries, registry_of
from podflame.agent.processes import ProcessRecord, ProcessTable
from podflame.agent.programs import ProcessGeneration
from podflame.agent.stats import AgentStats, AgentStatsCollector, ProcessTableCollector, TableCounts
from podflame.symbolizer import Symbolizer
from tests.conftest import compile_c
from tests.fixtures import FIXTURES


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
    counts = {"cpu": TableCounts(5, from_parent=2, evicted=1, refreshed=4, refreshes_skipped=9)}
    registry = registry_of(
        [
            AgentStatsCollector(AgentStats(announce_backlog={"cpu": 7})),
            ProcessTableCollector(lambda: counts, lambda: 3),
            CacheEntries([lambda: {"processes_cpu": 3}, lambda: {"symbol_tables": 2}]),
        ]
    )

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value("podflame_agent_" + name, labels)

    assert value("cache_entries", cache="processes_cpu") == 3
    assert value("cache_entries", cache="symbol_tables") == 2
    assert value("announce_backlog", table="cpu") == 7
    assert value("processes") == 3
    assert value("processes_gone_at_capture_total", table="cpu") == 5
    assert value("processes_evicted_total", table="cpu") == 1
    assert value("processes_named_from_parent_total", table="cpu") == 2
    assert value("maps_refreshed_total", table="cpu") == 4
    assert value("maps_refreshes_skipped_total", table="cpu") == 9


def live_table() -> ProcessTable:
    proc = Path("/proc")
    return ProcessTable(ProcessCaptures(Symbolizer(proc=proc), proc=proc))


@pytest.fixture
def sleeper() -> Iterator[int]:
    """The pid of a running `sleep`, its memory map settled."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        wait_until_exec(child.pid, "sleep")
        yield child.pid
    finally:
        child.kill()
        child.wait()


def wait_until_exec(pid: int, comm: str) -> None:
    """Until `pid` runs `comm` with its libraries loaded (its memory map settled)."""
    deadline = time.monotonic() + 10
    proc = Path(f"/proc/{pid}")
    while (proc / "comm").read_text().strip() != comm or "libc" not in (proc / "maps").read_text():
        assert time.monotonic() < deadline, f"{pid} never became {comm}"
        time.sleep(0.01)


def unused_pid() -> int:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    return next(pid for pid in range(pid_max - 1, 1, -1) if not Path(f"/proc/{pid}").exists())


def test_files_a_capture_opened_are_read_one_per_call(sleeper: int) -> None:
    table = live_table()
    process = ProcessGeneration(sleeper, 1)
    table.announce(process)
    table.announce(process)  # announced again (a restarted ring buffer): queued once
    image = table.lookup(process).image
    assert image is not None and image.opened, "an eager capture opens the files it maps"
    waiting = len(image.opened)
    reads = 0
    while table.read_opened():
        reads += 1
    assert reads == waiting and not image.opened
    unread = [m.path for m, symbols in image.tables.items() if symbols is None]
    assert not unread, unread  # sleep, libc, ld.so: all ELF


def test_a_forked_child_gone_before_capture_gets_its_parents_image(sleeper: int) -> None:
    table = live_table()
    gone = unused_pid()
    # A parent never sampled is captured when its child is announced.
    table.announce(ProcessGeneration(gone, 1), parent=ProcessGeneration(sleeper, 0))
    child = table.lookup(ProcessGeneration(gone, 1))
    assert child.image is not None and child.comm == "sleep"
    assert child.start_ticks is None  # still gone: dropped once drained
    sampled = ProcessGeneration(sleeper, 5)
    table.announce(sampled)
    table.announce(ProcessGeneration(gone, 2), parent=sampled)
    assert table.lookup(ProcessGeneration(gone, 2)).image is table.lookup(sampled).image
    # A parent that exec'd since the fork no longer has the child's image.
    table.announce(ProcessGeneration(sleeper, 7))
    table.announce(ProcessGeneration(gone, 3), parent=ProcessGeneration(sleeper, 6))
    assert table.lookup(ProcessGeneration(gone, 3)).image is None
    assert (table.gone_at_capture, table.from_parent) == (3, 2)


def test_reading_a_map_again_for_nothing_backs_off(sleeper: int) -> None:
    """Addresses outside every mapping (a frame-pointer walk through code built
    without frame pointers reads such garbage) must not cost a read of
    /proc/PID/maps at every drain."""
    table = live_table()
    process = ProcessGeneration(sleeper, 1)
    table.announce(process)
    record = table.lookup(process)
    read_in = drains_with_reads(table, record, process, 12)
    assert read_in == [0, 2, 5, 10], read_in  # skipping 1, 2, 4 drains, then 8
    assert table.refreshes_skipped == 12 - len(read_in)


def test_a_child_whose_parent_is_gone_too_has_no_image(tmp_path: Path) -> None:
    table = gone_table(tmp_path, max_records=10)
    table.announce(ProcessGeneration(200, 1), parent=ProcessGeneration(100, 0))
    assert table.lookup(ProcessGeneration(200, 1)).image is None
    assert (table.gone_at_capture, table.from_parent) == (1, 0)


def test_a_read_that_finds_a_new_library_ends_the_back_off(tmp_path: Path) -> None:
    library = compile_c(
        FIXTURES / "symbolizer" / "libburn.c", tmp_path / "libburn.so", "-shared", "-fPIC"
    )
    program = compile_c(FIXTURES / "dlopen_later.c", tmp_path / "dlopen_later", "-ldl")
    table = live_table()
    child = subprocess.Popen([str(program), str(library), "0.5", "30"])
    try:
        wait_until_exec(child.pid, "dlopen_later")
        process = ProcessGeneration(child.pid, 1)
        table.announce(process)
        record = table.lookup(process)
        assert drains_with_reads(table, record, process, 3) == [0, 2]  # nothing new: backs off
        deadline = time.monotonic() + 10
        while "libburn" not in Path(f"/proc/{child.pid}/maps").read_text():
            assert time.monotonic() < deadline, "the library was never loaded"
            time.sleep(0.05)
        # The next read due (after skipping 2 drains) finds it, and the one after follows.
        assert drains_with_reads(table, record, process, 4) == [2, 3]
        assert record.image is not None
        assert any(m.path.endswith("libburn.so") for m in record.image.mappings.mappings)
    finally:
        child.kill()
        child.wait()


def drains_with_reads(
    table: ProcessTable, record: ProcessRecord, process: ProcessGeneration, drains: int
) -> list[int]:
    """Offer a refresh at each of `drains` drains; the ones (counted from 0) that read."""
    read_in = []
    for drain in range(drains):
        before = table.refreshed
        table.refresh(record)
        if table.refreshed > before:
            read_in.append(drain)
        table.end_drain({process})
    return read_in


class SlowFile(io.BufferedReader):
    """A mapped file as slow to read as a test wants: every read waits for `release`
    (a huge binary, without making one)."""

    def __init__(self, raw: io.RawIOBase, entered: threading.Event, release: threading.Event):
        super().__init__(raw)
        self.entered, self.release = entered, release

    def read(self, size: int | None = -1, /) -> bytes:
        self.entered.set()
        self.release.wait(60)
        return super().read(size)


def test_a_drain_takes_the_lock_while_the_announcer_parses(sleeper: int) -> None:
    """The announcer reads a captured file's symbols without the agent's lock: while it
    is inside a read, the drain (here: this thread) gets the lock."""
    table = live_table()
    process = ProcessGeneration(sleeper, 1)
    table.announce(process)
    image = table.lookup(process).image
    assert image is not None and image.opened
    mapping, opened = next(iter(image.opened.items()))
    entered, release = threading.Event(), threading.Event()
    assert isinstance(opened, io.BufferedReader)
    image.opened[mapping] = SlowFile(opened.detach(), entered, release)
    lock = threading.Lock()
    announcer = threading.Thread(target=read_one_opened, args=(lock, table), daemon=True)

    announcer.start()
    try:
        assert entered.wait(30), "the announcer never read the file"
        drained = lock.acquire(timeout=10)  # the drain's turn, mid-parse
        if drained:
            lock.release()
    finally:
        release.set()
        announcer.join(30)

    assert drained, "the announcer held the lock across the read"
    assert not announcer.is_alive()
    assert image.tables[mapping] is not None  # parsed, and attached afterwards
