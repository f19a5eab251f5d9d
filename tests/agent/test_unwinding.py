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
from podflame.agent.unwinding import UnwindLoader
from podflame.symbolizer import Symbolizer
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
            # Tables load in announcement order: at the start, those of every process
            # already running, so the workload may wait its turn.
            assert agent.unwinder is not None
            deadline = time.monotonic() + 90
            while not agent.unwinder.has_tables(workload.pid):
                assert time.monotonic() < deadline, agent.unwinder.stats
                time.sleep(0.1)
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
