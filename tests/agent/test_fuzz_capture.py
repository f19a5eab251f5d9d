"""Random bytes as /proc texts, perf maps and file names through capture, symbolization,
labels and the batch: nothing raises, nothing is caught, and the batch goes on the wire.

A fake /proc (laid out as tests/symbolizer/fakeproc.py lays one out) holds a few
processes whose stat, status, cgroup and maps files, perf map and mapped file
names are random bytes, mostly inside the lines' structure so that the parsers
get past their first field. The agent's own classes read it: ProcessCaptures,
ProcessTable, the Symbolizer, CgroupResolver and the label providers as
build_agent composes them (Kubernetes aside), and BatchBuilder. Every batch
must validate as the server validates it and encode as the shipper encodes it.
`make soak` runs twenty times the examples.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podflame.agent.batch import BatchBuilder
from podflame.agent.captures import ProcessCaptures
from podflame.agent.cgroups import CgroupResolver
from podflame.agent.failures import PROCESS_STAGES, CaughtErrors
from podflame.agent.labels import CgroupLabels, CombinedLabels, HostLabels
from podflame.agent.lifetimes import ProcessLifetimes
from podflame.agent.processes import ProcessTable
from podflame.agent.programs import ProcessGeneration
from podflame.agent.sampler import Drain, SampleCount
from podflame.agent.shipper import encode
from podflame.model import Batch
from podflame.symbolizer import Symbolizer
from podflame.symbolizer.text import decode
from tests.agent.drainlib import drain_batch, lifetimes_of

EXAMPLES = 30
SCALES = [1, pytest.param(20, marks=pytest.mark.soak, id="soak")]
PIDS = (40001, 40002, 40003)
FILE_START, ANON_START, SPAN = 0x5555_0000_0000, 0x7F00_0000_0000, 0x10000
NSPID = 7

# A name in a line: any bytes but the line's end.
names = st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b"") or b"x")
junk = st.binary(max_size=200)


@st.composite
def stat_texts(draw: st.DrawFn, pid: int) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(junk)
    # 50 fields after the name; field 22 (start time) and 28 (start of the stack) set.
    fields = [str(100 + i).encode() for i in range(50)]
    return b"%d (%s) S " % (pid, draw(names)) + b" ".join(fields) + b"\n"


@st.composite
def maps_texts(draw: st.DrawFn, file_name: bytes) -> bytes:
    lines = [
        b"%x-%x r-xp 00000000 08:01 %d /usr/lib/%s"
        % (FILE_START, FILE_START + SPAN, draw(st.integers(1, 2**20)), file_name),
        b"%x-%x r-xp 00000000 00:00 0" % (ANON_START, ANON_START + SPAN),
    ]
    lines += draw(st.lists(junk, max_size=3))
    return b"\n".join(draw(st.permutations(lines))) + b"\n"


@st.composite
def perf_maps(draw: st.DrawFn) -> bytes:
    lines = [
        b"%x %x %s" % (ANON_START + draw(st.integers(0, SPAN)), draw(st.integers(1, 256)), name)
        for name in draw(st.lists(names, max_size=5))
    ]
    return b"\n".join(lines + draw(st.lists(junk, max_size=2)))


@st.composite
def processes(draw: st.DrawFn, pid: int) -> dict[str, bytes]:
    file_name = draw(names)
    return {
        "stat": draw(stat_texts(pid)),
        "comm": draw(names) + b"\n",
        "status": b"Name:\t%s\nNSpid:\t%d\t%d\n%s" % (draw(names), pid, NSPID, draw(junk)),
        "cgroup": draw(st.sampled_from([b"0::/kubepods/pod", b"0::/system.slice/", b""]))
        + draw(junk),
        "maps": draw(maps_texts(file_name)),
        "perf_map": draw(perf_maps()),
        "file_name": file_name,
        "file": draw(junk),
        "sampled_comm": draw(names),
    }


def lay_out(proc: Path, pid: int, texts: dict[str, bytes]) -> None:
    directory = proc / str(pid)
    (directory / "root" / "tmp").mkdir(parents=True)
    (directory / "root" / "usr" / "lib").mkdir(parents=True)
    for name in ("stat", "comm", "status", "cgroup", "maps"):
        (directory / name).write_bytes(texts[name])
    (directory / "root" / "tmp" / f"perf-{NSPID}.map").write_bytes(texts["perf_map"])
    name = texts["file_name"]
    if b"/" not in name and b"\0" not in name and name not in (b".", b".."):
        lib = os.fsencode(directory / "root" / "usr" / "lib")
        with open(os.path.join(lib, name), "wb") as file:
            file.write(texts["file"])


def pipeline(proc: Path) -> tuple[ProcessTable, ProcessLifetimes, BatchBuilder]:
    symbolizer = Symbolizer(proc=proc)
    cgroups = CgroupResolver(proc)
    table = ProcessTable(ProcessCaptures(symbolizer, proc=proc, cgroups=cgroups))
    labels = CombinedLabels([HostLabels("node-a"), CgroupLabels(cgroups)])
    errors = CaughtErrors.of("process", PROCESS_STAGES)
    builder = BatchBuilder(symbolizer, labels, period_ns=1, errors=errors)
    return table, lifetimes_of(table, builder), builder


def drain_of(pid: int, texts: dict[str, bytes], offsets: list[int]) -> list[SampleCount]:
    stack = tuple(start + offset for offset in offsets for start in (FILE_START, ANON_START))
    # The sampler decodes the kernel's comm bytes so (sampler.py).
    comm = decode(texts["sampled_comm"])
    return [SampleCount(ProcessGeneration(pid, 1), comm, stack, (), 3)]


@pytest.fixture
def proc_root(tmp_path: Path) -> Iterator[Path]:
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path) as directory:
        yield Path(directory)


@pytest.mark.parametrize("scale", SCALES)
def test_random_proc_texts_never_fail_the_drain(proc_root: Path, scale: int) -> None:
    @settings(
        max_examples=EXAMPLES * scale,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        texts=st.tuples(*(processes(pid) for pid in PIDS)),
        offsets=st.lists(st.integers(0, SPAN - 1), min_size=1, max_size=4),
    )
    def case(texts: tuple[dict[str, bytes], ...], offsets: list[int]) -> None:
        with tempfile.TemporaryDirectory(dir=proc_root) as directory:
            proc = Path(directory)
            table, lifetimes, builder = pipeline(proc)
            samples = []
            for pid, process in zip(PIDS, texts, strict=True):
                lay_out(proc, pid, process)
                table.announce(ProcessGeneration(pid, 1))
                samples += drain_of(pid, process, offsets)
            while table.read_opened():
                pass
            batch = drain_batch(lifetimes, builder, Drain(start_ns=0, end_ns=1, samples=samples))
            table.close()
        assert builder.errors.counts == dict.fromkeys(PROCESS_STAGES, 0)
        assert len(batch.series) == len(PIDS)
        # As the server reads it, from the bytes the shipper sends.
        assert Batch.model_validate_json(batch.model_dump_json()) == batch
        assert encode(batch)

    case()
