"""The drain's steps after the kernel maps are read (issue 18): attribute owns the
process table's changes, symbolize gives typed frames, to_batch is a function of
its input. Real symbolizer and process table over a /proc laid out in a directory."""

from collections import Counter
from pathlib import Path

from podflame.agent.batch import BatchBuilder, Window
from podflame.agent.captures import ProcessCaptures
from podflame.agent.cgroups import CgroupResolver
from podflame.agent.labels import CgroupLabels, CombinedLabels, HostLabels
from podflame.agent.lifetimes import by_process
from podflame.agent.processes import ProcessTable
from podflame.agent.programs import ProcessGeneration
from podflame.agent.sampler import Drain, SampleCount
from podflame.model.frames import Frame, FrameKind
from podflame.symbolizer import Symbolizer
from tests.agent.drainlib import lifetimes_of
from tests.agent.test_text_edges import PID, START, fake_process, stat_of

PROCESS = ProcessGeneration(PID, 1)
OUTSIDE = START + 0x10_0000  # in no mapping: the map may have changed since the capture


def steps(proc: Path) -> tuple[ProcessTable, BatchBuilder]:
    maps = f"{START:x}-{START + 0x1000:x} r-xp 00000000 08:01 7 /usr/bin/app\n".encode()
    fake_process(proc, {"maps": maps, "stat": stat_of(b"app")})
    symbolizer = Symbolizer(proc=proc)
    table = ProcessTable(ProcessCaptures(symbolizer, proc=proc, cgroups=CgroupResolver(proc)))
    labels = CombinedLabels([HostLabels("node-a"), CgroupLabels(CgroupResolver(proc))])
    return table, BatchBuilder(symbolizer, labels, period_ns=10)


def drain(*user: tuple[int, ...]) -> Drain:
    return Drain(0, 1, [SampleCount(PROCESS, "app", stack, (), 2) for stack in user])


def test_symbolize_gives_typed_frames_and_changes_no_record(tmp_path: Path) -> None:
    table, builder = steps(tmp_path)
    lifetimes = lifetimes_of(table, builder)
    processes = lifetimes.attribute(by_process(drain((START + 0x1B1,), (OUTSIDE,)).samples))
    assert table.refreshed == 1  # the address outside the map: read again, here
    before = (table.refreshed, len(table), processes[0].record)
    stacks = builder.symbolize(processes)
    labels = builder.label(processes)
    assert (table.refreshed, len(table), processes[0].record) == before
    unnamed = Frame(FrameKind.NATIVE, "app+0x1b1", module="app", offset=0x1B1, resolved=False)
    unknown = Frame(FrameKind.NATIVE, "[unknown]", resolved=False)
    assert stacks == {PROCESS: Counter({(unnamed,): 2, (unknown,): 2})}
    assert labels[PROCESS]["comm"] == "app"


def test_to_batch_is_a_function_of_its_input(tmp_path: Path) -> None:
    table, builder = steps(tmp_path)
    processes = lifetimes_of(table, builder).attribute(by_process(drain((START + 1,)).samples))
    stacks, labels = builder.symbolize(processes), builder.label(processes)
    first, second = (
        builder.to_batch(Window(0, 1), stacks, labels, {"samples": 2}) for _ in range(2)
    )
    assert first.model_dump(exclude={"batch_id"}) == second.model_dump(exclude={"batch_id"})
    assert first.version == 2 and first.counters == {"samples": 2}
    assert first.typed_stacks() == list(stacks[PROCESS])
    assert first.series[0].samples[0].value == 2 * 10


def test_the_drain_ends_only_when_the_loop_says_so(tmp_path: Path) -> None:
    table, builder = steps(tmp_path)
    lifetimes = lifetimes_of(table, builder)
    gone = ProcessGeneration(PID + 1, 1)  # no /proc entry: gone at capture, dropped at an end
    groups = by_process(drain((START + 1,)).samples) | {gone: []}
    processes = lifetimes.attribute(groups)
    for _ in range(3):
        builder.build(Window(0, 1), processes, {})
    assert gone in {p.process for p in processes} and len(table) == 2
    for _ in range(2):
        lifetimes.end({PROCESS})
    assert len(table) == 1  # the gone process, not drained for two drains
