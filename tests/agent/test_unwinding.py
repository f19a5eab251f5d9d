"""Stacks of code without frame pointers, unwound in the kernel with .eh_frame tables,
against `perf record --call-graph dwarf` on the same process in the same window.

The workload (tests/fixtures/omit_fp.c) is built with -O2 -fomit-frame-pointer
and spends its time under main in its own functions and in a callback that
libc's qsort calls. The real sampler, table loader and symbolizer run; perf
copies each sample's stack and unwinds it with DWARF afterwards. Both sample at
499 Hz for 8 s (some 4,000 samples each) so that the 3-point bound on a share
is not sampling noise (at 99 Hz two profilers' shares of a 50 % function are
3 points apart one run in ten).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podflame.agent.sampler import CpuSampler, UnwindSizes
from podflame.agent.unwinding import RowExtents, UnwindLoader
from podflame.symbolizer import Symbolizer
from podflame.symbolizer.procmaps import read_maps
from podflame.symbolizer.unwind_tables import UnwindTables
from tests.accuracy.profiles import Stack, parse_perf_script
from tests.accuracy.workloads import require_tool
from tests.fixtures import FIXTURES

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

FREQUENCY = 499
SECONDS = 8
FUNCTIONS = ("run", "outer", "middle", "spin", "sort_round", "compare")
SIZES = UnwindSizes(rows=1 << 16, processes=64, stacks=1024)


@pytest.fixture(scope="module")
def sampler() -> Iterator[CpuSampler]:
    sampler = CpuSampler(frequency=FREQUENCY, interval=1, kernel_stacks=False, unwind=SIZES)
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.close()


def _build(directory: Path) -> Path:
    require_tool("gcc", "gcc")
    binary = directory / "omit_fp"
    subprocess.run(
        ["gcc", "-O2", "-fomit-frame-pointer", "-o", str(binary), str(FIXTURES / "omit_fp.c")],
        check=True,
    )
    return binary


def _inclusive(stacks: list[Stack], function: str) -> float:
    total = sum(s.samples for s in stacks)
    return sum(s.samples for s in stacks if function in s.frames) / total


def _callers_kept(stacks: list[Stack]) -> float:
    """Of the samples in the callback libc's qsort calls, the share that still reach main."""
    callback = [s for s in stacks if "compare" in s.frames]
    return sum(s.samples for s in callback if "main" in s.frames) / sum(s.samples for s in callback)


def test_without_frame_pointers_stacks_match_perf_dwarf(
    sampler: CpuSampler, tmp_path: Path
) -> None:
    require_tool("perf", "linux-perf")
    binary = _build(tmp_path)
    symbolizer = Symbolizer(max_bytes=64 << 20)
    loader = UnwindLoader(sampler.table, UnwindTables(), symbolizer.open_mapping, SIZES.rows)
    workload = subprocess.Popen([str(binary), "120"], stdout=subprocess.DEVNULL)  # killed below
    try:
        time.sleep(0.2)  # past the loader of the dynamic linker: libc is mapped
        ranges = loader.load(workload.pid)
        assert len(ranges) >= 2  # the program and libc, at least
        image = symbolizer.image(workload.pid)
        before = sampler.unwind_outcomes()
        sampler.drain()  # what was sampled before the tables were there
        perf_data = tmp_path / "perf.data"
        subprocess.run(
            [
                *("perf", "record", "-q", "-F", str(FREQUENCY), "-e", "cpu-clock"),
                *("--call-graph", "dwarf", "-p", str(workload.pid), "-o", str(perf_data)),
                *("--", "sleep", str(SECONDS)),
            ],
            check=True,
            capture_output=True,
        )
        drain = sampler.drain()
        ours = [
            Stack(tuple(symbolizer.resolve(image, s.user_stack)), s.count)
            for s in drain.samples
            if s.process.pid == workload.pid
        ]
    finally:
        workload.kill()
        workload.wait()
    script = subprocess.run(
        ["perf", "script", "-i", str(perf_data), "-F", "comm,pid,ip,sym"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    perf = parse_perf_script(script)
    outcomes = {k: v - before.get(k, 0) for k, v in sampler.unwind_outcomes().items()}
    assert outcomes["tables"] > 0.9 * sum(s.samples for s in ours), outcomes

    report = [f"samples: podflame {sum(s.samples for s in ours)}, perf {len(perf)}"]
    for function in ("main", *FUNCTIONS):
        report.append(
            f"{function}: podflame {_inclusive(ours, function):.1%}, "
            f"perf {_inclusive(perf, function):.1%}"
        )
    report.append(f"callback keeps main: podflame {_callers_kept(ours):.1%}")
    print("\n".join(report))
    assert _inclusive(ours, "main") >= 0.9, report
    assert abs(_inclusive(ours, "main") - _inclusive(perf, "main")) <= 0.05, report
    for function in FUNCTIONS:
        assert abs(_inclusive(ours, function) - _inclusive(perf, function)) <= 0.03, report
    assert _callers_kept(ours) >= 0.9, report


def test_agent_loads_tables_of_the_processes_it_captures(
    module_server: str, tmp_path: Path
) -> None:
    """The whole agent with --unwind-tables: announced, captured, tables loaded on the
    loader's thread, unwound in the kernel, symbolized, shipped, stored; and counted."""
    from tests.agent.test_pipeline import drain_and_ship, folded, running_agent

    binary = _build(tmp_path)
    # CPU stacks only: the network programs have nothing to do with unwinding.
    with running_agent(module_server, unwind_tables=True, interval=600, network=False) as agent:
        workload = subprocess.Popen([str(binary), "120"], stdout=subprocess.DEVNULL)
        try:
            # Processes sampled without tables are loaded first, the busiest first, and
            # a big process's loading gives way after a slice: the busy workload does
            # not wait behind every process announced at the start (it waited over
            # 90 s for Python processes mapping LLVM, numpy and pyarrow to load).
            assert agent.unwinder is not None
            begun = time.monotonic()
            while not agent.unwinder.has_tables(workload.pid):
                assert time.monotonic() < begun + 90, agent.unwinder.stats
                time.sleep(0.1)
            print(f"tables after {time.monotonic() - begun:.1f} s: {agent.unwinder.stats}")
            drain_and_ship(agent)  # what was sampled before
            started = time.time()
            time.sleep(3)
            drain_and_ship(agent)
        finally:
            workload.kill()
            workload.wait()
        metrics = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in agent.registry.collect()
            for sample in family.samples
        }
    stacks = folded(module_server, workload.pid, since=started)
    total = sum(value for _, value in stacks)
    reaching_main = sum(value for stack, value in stacks if "main" in stack)
    walks = {key: value for key, value in metrics.items() if "unwind" in key[0] or "walk" in key[0]}
    assert reaching_main >= 0.9 * total, (stacks[:3], walks)
    assert metrics[("podflame_agent_user_stacks_total", (("walk", "tables"),))] > 0
    assert metrics[("podflame_agent_unwind_rows", ())] > 0
    assert metrics[("podflame_agent_unwind_loader_processes_loaded_total", ())] >= 1


def test_debian_bzip2_reaches_bz2_bzwrite_as_perf_does(sampler: CpuSampler, tmp_path: Path) -> None:
    """Debian's own bzip2 -9 (stripped executable, libbz2 without frame pointers): the share
    of samples reaching BZ2_bzWrite (in .dynsym) and each named libbz2 function, as perf's."""
    if not Path("/usr/bin/bzip2").exists():
        pytest.skip("bzip2 is not installed")
    require_tool("perf", "linux-perf")
    data = tmp_path / "input.txt"
    words = [f"w{(i * 7919) % 5003:x}" for i in range(5003)]
    data.write_text(" ".join(words[(i * i) % 5003] for i in range(12_000_000)))
    loop = f"while true; do bzip2 -9 -c {data} > /dev/null; done"
    shell = subprocess.Popen(["sh", "-c", loop])
    symbolizer = Symbolizer(max_bytes=64 << 20)
    loader = UnwindLoader(sampler.table, UnwindTables(), symbolizer.open_mapping, SIZES.rows)
    try:
        time.sleep(0.5)
        found = subprocess.run(["pgrep", "-P", str(shell.pid)], capture_output=True, text=True)
        pid = int(found.stdout.split()[0])
        assert loader.load(pid)
        image = symbolizer.image(pid, eager=True)
        assert image is not None
        while symbolizer.read_opened(image):
            pass
        sampler.drain()
        perf_data = tmp_path / "perf.data"
        subprocess.run(
            [
                *("perf", "record", "-q", "-F", str(FREQUENCY), "-e", "cpu-clock"),
                *("--call-graph", "dwarf", "-p", str(pid), "-o", str(perf_data)),
                *("--", "sleep", "6"),
            ],
            check=True,
            capture_output=True,
        )
        ours = [
            Stack(tuple(symbolizer.resolve(image, s.user_stack)), s.count)
            for s in sampler.drain().samples
            if s.process.pid == pid
        ]
    finally:
        shell.kill()
        subprocess.run(["pkill", "-P", str(shell.pid)], check=False)
        shell.wait()
    script = subprocess.run(
        ["perf", "script", "-i", str(perf_data), "-F", "comm,pid,ip,sym"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    perf = parse_perf_script(script)
    report = [
        f"{f}: podflame {_inclusive(ours, f):.1%}, perf {_inclusive(perf, f):.1%}"
        for f in ("BZ2_bzWrite", "BZ2_bzCompress", "BZ2_compressBlock", "BZ2_blockSort")
    ]
    print("\n".join(report))
    assert _inclusive(ours, "BZ2_bzWrite") >= 0.9, report
    assert abs(_inclusive(ours, "BZ2_bzWrite") - _inclusive(perf, "BZ2_bzWrite")) <= 0.05, report
    for function in ("BZ2_bzCompress", "BZ2_compressBlock", "BZ2_blockSort"):
        assert abs(_inclusive(ours, function) - _inclusive(perf, function)) <= 0.03, report


def test_row_extents_reuse_freed_rows_and_merge_neighbours() -> None:
    extents = RowExtents(100)
    assert [extents.take(30), extents.take(30), extents.take(30)] == [0, 30, 60]
    assert extents.take(20) is None  # 10 rows left, not 20
    extents.give_back(0, 30)
    extents.give_back(60, 30)
    assert extents.take(45) is None  # 30 + 40 free (60-90 merged with 90-100), not 45 in a row
    extents.give_back(30, 30)  # the middle: all one extent again
    assert extents.free_rows == 100
    assert extents.take(100) == 0


def _busy_binary(directory: Path, seed: int) -> Path:
    """A program of its own build-id (the seed is in its code) that spins until killed."""
    require_tool("gcc", "gcc")
    source = f"volatile unsigned long x; int main(void) {{ for (;;) x = x * {seed}UL + 1; }}"
    binary = directory / f"busy{seed}"
    subprocess.run(
        ["gcc", "-O2", "-fomit-frame-pointer", "-x", "c", "-o", str(binary), "-"],
        input=source,
        text=True,
        check=True,
    )
    return binary


def _rows(path: Path) -> int:
    with path.open("rb") as stream:
        found = UnwindTables().read(stream)
    assert found is not None
    return len(found.table)


def _libraries(pid: int, binary: Path) -> set[Path]:
    """The files `pid` maps besides its program (libc, the dynamic linker)."""
    return {Path(m.path) for m in read_maps(pid) if m.is_file and Path(m.path) != binary}


def test_tables_of_processes_that_come_and_go_are_freed(
    sampler: CpuSampler, tmp_path: Path
) -> None:
    """Processes of ever new binaries come and go in an array that holds libc and two of
    their tables: each one's tables are placed, because those of the gone are freed."""
    binaries = [_busy_binary(tmp_path, seed) for seed in (3, 5, 7, 11, 13, 17)]
    keeper = subprocess.Popen([str(binaries[0])])  # killed below; holds libc throughout
    try:
        time.sleep(0.2)  # past the dynamic linker
        libraries = _libraries(keeper.pid, binaries[0])
        capacity = sum(map(_rows, libraries)) + 2 * max(map(_rows, binaries))
        loader = UnwindLoader(
            sampler.table, UnwindTables(), Symbolizer(max_bytes=16 << 20).open_mapping, capacity
        )
        assert len(loader.load(keeper.pid)) >= 2
        for binary in binaries[1:]:
            process = subprocess.Popen([str(binary)])
            try:
                time.sleep(0.2)
                assert len(loader.load(process.pid)) >= 2, loader.stats
            finally:
                process.kill()
                process.wait()
            loader.sweep()
            assert not loader.has_tables(process.pid)
        assert loader.stats.tables_not_placed == 0
        assert loader.stats.processes_unloaded == len(binaries) - 1
        assert loader.stats.tables_freed == len(binaries) - 1  # each one's own; libc stays
    finally:
        keeper.kill()
        keeper.wait()
    loader.sweep()
    assert loader.rows_used == 0 and loader.processes_held == 0
    # And now the keeper's and its libraries'.
    assert loader.stats.tables_freed == len(binaries) + len(libraries)


def test_sampled_process_evicts_announced_ones_when_rows_run_out(
    sampler: CpuSampler, tmp_path: Path
) -> None:
    """An array with room for one process's tables: a process loaded because it was
    announced gives way to one the kernel sampled without tables, not the other way."""
    first, second = _busy_binary(tmp_path, 19), _busy_binary(tmp_path, 23)
    processes = [subprocess.Popen([str(b)]) for b in (first, second)]
    try:
        time.sleep(0.2)
        libraries = _libraries(processes[0].pid, first)
        capacity = sum(map(_rows, libraries)) + max(_rows(first), _rows(second))
        loader = UnwindLoader(
            sampler.table, UnwindTables(), Symbolizer(max_bytes=16 << 20).open_mapping, capacity
        )
        assert len(loader.load(processes[0].pid)) >= 2
        # Announced: its libraries only (placed already), no eviction.
        assert len(loader.load(processes[1].pid)) == len(libraries)
        assert loader.stats.tables_not_placed == 1
        assert len(loader.load(processes[1].pid, sampled=True)) >= 2, loader.stats
        assert loader.stats.processes_evicted == 1
        assert not loader.has_tables(processes[0].pid)
        assert loader.has_tables(processes[1].pid)
    finally:
        for process in processes:
            process.kill()
            process.wait()


def test_processes_sampled_without_tables_are_counted_for_the_loader(
    sampler: CpuSampler, tmp_path: Path
) -> None:
    """The kernel counts samples of processes without tables: a busy one has many, an idle
    one (sampled at most while it started) few, so the loader takes the busy one first."""
    busy = subprocess.Popen([str(_busy_binary(tmp_path, 29))])
    idle = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(1)
        wanted = sampler.table("unwind_wanted")
        counts = {int(key.value): int(value.value) for key, value in wanted.items()}
        assert counts.get(busy.pid, 0) >= 20, counts
        assert counts.get(busy.pid, 0) > 5 * counts.get(idle.pid, 0), counts
    finally:
        for process in (busy, idle):
            process.kill()
            process.wait()


def test_samples_taken_in_system_calls_are_unwound_from_the_user_registers(
    sampler: CpuSampler, tmp_path: Path
) -> None:
    """A program without frame pointers that spends its time in read(2): its samples are
    taken in the kernel, and their user stacks still reach main (from the registers the
    kernel saved on entry), not frame pointers' guess."""
    binary = tmp_path / "syscall_loop"
    subprocess.run(
        ["gcc", "-O2", "-fomit-frame-pointer", "-o", str(binary), str(FIXTURES / "syscall_loop.c")],
        check=True,
    )
    symbolizer = Symbolizer(max_bytes=16 << 20)
    loader = UnwindLoader(sampler.table, UnwindTables(), symbolizer.open_mapping, SIZES.rows)
    workload = subprocess.Popen([str(binary), "30"])  # killed below
    try:
        time.sleep(0.2)
        assert len(loader.load(workload.pid)) >= 2
        image = symbolizer.image(workload.pid)
        sampler.drain()
        before = sampler.unwind_outcomes()
        time.sleep(2)
        drain = sampler.drain()
        outcomes = {k: v - before.get(k, 0) for k, v in sampler.unwind_outcomes().items()}
        ours = [
            Stack(tuple(symbolizer.resolve(image, s.user_stack)), s.count)
            for s in drain.samples
            if s.process.pid == workload.pid
        ]
    finally:
        workload.kill()
        workload.wait()
    assert _inclusive(ours, "read") >= 0.5, (ours[:3], outcomes)  # sampled in read(2)
    assert outcomes["kernel_mode"] == 0, outcomes
    assert _inclusive(ours, "main") >= 0.9, (ours[:3], outcomes)
    assert _inclusive(ours, "read_zeros") >= 0.9, (ours[:3], outcomes)
