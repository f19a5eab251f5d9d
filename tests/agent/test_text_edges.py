"""Text from /proc, ELF and kallsyms symbols, perf maps and the API server becomes valid
Unicode where it is read (symbolizer.text), and a process whose data still breaks a
stage costs only its own stacks (issue 16).

The bytes b"pfbar_\\xff\\xfe" are not UTF-8; everywhere they must come out as the
14 characters ``pfbar_\\xff\\xfe``, which the wire format accepts.
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podflame.agent.batch import BatchBuilder
from podflame.agent.captures import ProcessCaptures
from podflame.agent.cgroups import CgroupResolver
from podflame.agent.kubeapi import valid_text
from podflame.agent.labels import CgroupLabels, CombinedLabels, HostLabels, ProcessIdentity
from podflame.agent.lifetimes import ProcessLifetimes
from podflame.agent.pods import PodMatch, parse_pod
from podflame.agent.processes import ProcessTable
from podflame.agent.procfs import read_comm, read_stat
from podflame.agent.programs import ProcessGeneration
from podflame.agent.sampler import Drain, SampleCount
from podflame.model import Batch, Series, StackValue
from podflame.symbolizer import Symbolizer
from podflame.symbolizer.kallsyms import parse_kallsyms
from podflame.symbolizer.procmaps import parse_maps
from podflame.symbolizer.symbolizer import fallback_frame
from podflame.symbolizer.text import decode, display
from tests.agent.drainlib import drain_batch, lifetimes_of

RAW = b"pfbar_\xff\xfe"
SHOWN = r"pfbar_\xff\xfe"
PID = 4242
START = 0x5555_0000_0000


def test_undecodable_bytes_and_lone_surrogates_are_escaped() -> None:
    assert decode(RAW) == SHOWN
    assert display(RAW.decode("utf-8", "surrogateescape")) == SHOWN  # as maps are read
    assert display("a\ud800b") == r"a\ud800b"  # a surrogate no byte stands for
    assert display("café ✓") == "café ✓"  # valid text is left alone
    assert decode("café".encode()) == "café"
    for text in (decode(RAW), display("\udcff\ud800")):
        text.encode("utf-8")  # never raises


def test_a_mapped_file_name_is_kept_raw_to_open_and_escaped_to_show() -> None:
    line = f"{START:x}-{START + 0x1000:x} r-xp 00000000 08:01 7 /tmp/".encode() + RAW
    (mapping,) = parse_maps(line.decode("utf-8", "surrogateescape"))
    assert mapping.path.encode("utf-8", "surrogateescape") == b"/tmp/" + RAW
    assert fallback_frame(mapping.path, 0x11B1) == SHOWN + "+0x11b1"
    # A NUL is in no file name: not a line the kernel wrote.
    assert parse_maps(line.decode("utf-8", "surrogateescape") + "\0x") == []


def fake_process(proc: Path, files: dict[str, bytes]) -> None:
    directory = proc / str(PID)
    (directory / "root").mkdir(parents=True)
    for name, content in files.items():
        (directory / name).write_bytes(content)


def stat_of(comm: bytes) -> bytes:
    return b"%d (%s) S " % (PID, comm) + b" ".join(b"%d" % (100 + i) for i in range(50))


def test_a_stripped_binary_with_an_odd_name_symbolizes_to_its_escaped_name(
    tmp_path: Path,
) -> None:
    maps = f"{START:x}-{START + 0x1000:x} r-xp 00000000 08:01 7 /usr/bin/".encode() + RAW
    fake_process(tmp_path, {"maps": maps + b"\n"})
    assert Symbolizer(proc=tmp_path).user(PID, [START + 0x1B1]) == [SHOWN + "+0x1b1"]


def test_kernel_and_elf_symbol_names_are_escaped() -> None:
    table = parse_kallsyms(b"ffffffff81000000 T " + RAW + b"\n")
    assert table.lookup(0xFFFFFFFF81000000) == SHOWN


def test_proc_stat_comm_and_cgroup_texts_are_escaped(tmp_path: Path) -> None:
    cgroup = b"0::/system.slice/" + RAW + b".service\n"
    fake_process(tmp_path, {"stat": stat_of(RAW), "comm": RAW + b"\n", "cgroup": cgroup})
    stat = read_stat(PID, tmp_path)
    assert stat is not None and stat.comm == SHOWN
    assert read_comm(PID, tmp_path) == SHOWN
    identity = CgroupResolver(tmp_path).read(PID, stat.start_ticks, verify=False)
    assert identity is not None and identity.unit == SHOWN + ".service"


def test_pod_text_from_json_escapes_is_escaped() -> None:
    raw = json.loads(
        '{"metadata": {"uid": "u1", "name": "web-\\udcff", "namespace": "ns",'
        ' "labels": {"app": "a\\ud800"}}, "spec": {}, "status": {}}'
    )
    pod = parse_pod(valid_text(raw), {"app": "app"})
    assert pod is not None
    assert (pod.name, pod.labels) == (r"web-\xff", {"app": r"a\ud800"})


class OddLabels:
    """A provider handing out what no edge should let through: the last guard's case."""

    def labels(self, process: ProcessIdentity) -> dict[str, str]:
        return {"odd": "\udcff" + "x" * 5000}


class FailingFor:
    """A provider that raises for one pid, as a provider with a bug would."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def labels(self, process: ProcessIdentity) -> dict[str, str]:
        if process.pid == self.pid:
            raise RuntimeError("a provider's bug")
        return {}


def builder_for(proc: Path, *providers: object) -> tuple[ProcessLifetimes, BatchBuilder]:
    symbolizer = Symbolizer(proc=proc)
    processes = ProcessTable(ProcessCaptures(symbolizer, proc=proc, cgroups=CgroupResolver(proc)))
    labels = CombinedLabels([HostLabels("node-a"), CgroupLabels(CgroupResolver(proc)), *providers])  # type: ignore[list-item]
    builder = BatchBuilder(symbolizer, labels, period_ns=1)
    return lifetimes_of(processes, builder), builder


def samples_of(*pids: int) -> Drain:
    return Drain(
        start_ns=0,
        end_ns=1,
        samples=[SampleCount(ProcessGeneration(p, 1), "x", (START + 0x1B1,), (), 2) for p in pids],
    )


def test_the_last_guard_escapes_and_bounds_label_values(tmp_path: Path) -> None:
    batch = drain_batch(*builder_for(tmp_path, OddLabels()), samples_of(PID))
    value = batch.series[0].labels["odd"]
    assert value.startswith(r"\xffxxx") and len(value) == 4096
    assert Batch.model_validate_json(batch.model_dump_json()) == batch


@pytest.mark.parametrize("stage", ["labels", "symbolize"])
def test_an_error_in_one_process_costs_only_its_stacks(tmp_path: Path, stage: str) -> None:
    maps = f"{START:x}-{START + 0x1000:x} r-xp 00000000 08:01 7 /usr/bin/a\n".encode()
    for pid in (PID, PID + 1):
        directory = tmp_path / str(pid)
        directory.mkdir()
        (directory / "maps").write_bytes(maps)
        (directory / "stat").write_bytes(stat_of(b"a").replace(b"%d" % PID, b"%d" % pid, 1))
    lifetimes, builder = builder_for(
        tmp_path, FailingFor(PID) if stage == "labels" else FailingFor(-1)
    )
    if stage == "symbolize":
        lifetimes.table.announce(ProcessGeneration(PID, 1))
        # No real input is known to break the symbolizer (that is the point): an image
        # whose tables are broken (its mappings are sound: it is not read again).
        record = lifetimes.table.lookup(ProcessGeneration(PID, 1))
        assert record.image is not None
        record.image = replace(record.image, tables="not tables")  # type: ignore[arg-type]
    batch = drain_batch(lifetimes, builder, samples_of(PID, PID + 1))
    assert [s.labels["pid"] for s in batch.series] == [str(PID + 1)]
    assert builder.errors.counts[stage] == 1
    assert sum(builder.errors.counts.values()) == 1


# Any code point, lone surrogates included: what JSON's \uXXXX escapes can decode to.
any_text = st.text(st.characters(categories=["Cs", "Lu", "Ll", "Nd", "Po", "So"]), max_size=20)


@settings(max_examples=50, deadline=None, database=None)
@given(name=any_text, label=any_text, container=any_text, image=any_text)
def test_any_pod_text_labels_a_valid_series(
    name: str, label: str, container: str, image: str
) -> None:
    pod_json = {
        "metadata": {"uid": "u1", "name": name or "p", "namespace": "ns", "labels": {"app": label}},
        "spec": {"containers": [{"name": container, "image": image}]},
        "status": {"containerStatuses": [{"name": container, "containerID": "containerd://c1"}]},
    }
    # As the API server sends it: surrogates as \uXXXX escapes.
    raw = json.loads(json.dumps(pod_json, ensure_ascii=True))
    pod = parse_pod(valid_text(raw), {"app": "app"})
    assert pod is not None
    labels = PodMatch(pod, pod.containers.get("c1")).labels()
    series = Series(labels=labels, samples=[StackValue(stack=0, value=1)])
    assert Series.model_validate_json(series.model_dump_json()) == series
