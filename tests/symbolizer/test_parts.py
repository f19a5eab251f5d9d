"""The symbolizer's parts: each exports its own counters (under the names dashboards and
docs/operations.md use), and capturing a process never reads its perf map."""

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from podflame.symbolizer import Symbolizer
from tests.symbolizer.test_perfmap import fake_process

# Every symbolizer counter the agent has always served (podflame_agent_symbolizer_*).
COUNTERS = {
    "frames_resolved",
    "frames_unresolved",
    "jit_frames",
    "elf_errors",
    "binaries_too_large",
    "binaries_unreadable",
    "binaries_loaded",
    "binaries_evicted",
    "disk_cache_hits",
    "disk_cache_writes",
    "disk_cache_errors",
    "debug_files",
    "debug_files_unchecked",
    "perf_maps_truncated",
    "perf_maps_evicted",
    "processes_gone",
    "mapping_cache_hits",
    "maps_errors",
}
JIT_START = 0x7F0000000000


def scrape(symbolizer: Symbolizer) -> dict[str, float]:
    # auto_describe: two parts exporting one name would fail here.
    registry = CollectorRegistry(auto_describe=True)
    for collector in symbolizer.collectors("podflame_agent_"):
        registry.register(collector)
    lines = generate_latest(registry).decode().splitlines()
    samples = [line.split(" ") for line in lines if line and not line.startswith("#")]
    return {name: float(value) for name, value in samples if not name.endswith("_created")}


def test_the_parts_export_every_counter_under_its_old_name(tmp_path: Path) -> None:
    symbolizer = Symbolizer(proc=tmp_path)  # no processes: every pid is gone
    assert symbolizer.user(4321, [0x1000, 0x2000]) == ["[unknown]", "[unknown]"]

    values = scrape(symbolizer)

    assert set(values) == {f"podflame_agent_symbolizer_{name}_total" for name in COUNTERS}
    assert values["podflame_agent_symbolizer_processes_gone_total"] == 1
    assert values["podflame_agent_symbolizer_frames_unresolved_total"] == 2
    assert symbolizer.stats.frames_unresolved == 2  # the snapshot of all parts agrees


def jit_process(proc: Path, pid: int) -> Path:
    """A /proc/PID whose only executable mapping is anonymous (JIT code); its tmp."""
    tmp = fake_process(proc, pid, nspid=[pid])
    maps = f"{JIT_START:x}-{JIT_START + 0x10000:x} r-xp 00000000 00:00 0 \n"
    (proc / str(pid) / "maps").write_text(maps)
    return tmp


def test_a_capture_leaves_the_perf_map_to_be_read_later(tmp_path: Path) -> None:
    tmp = jit_process(tmp_path, 77)
    (tmp / "perf-77.map").write_text(f"{JIT_START:x} 40 first_jitted\n")
    symbolizer = Symbolizer(proc=tmp_path)

    image = symbolizer.image(77, eager=True)

    assert image is not None and image.jit is None and image.jit_due  # not read yet
    assert symbolizer.read_opened(image)  # the announcer's read, off the agent's lock
    assert not image.jit_due and not symbolizer.read_opened(image)
    assert symbolizer.resolve(image, [JIT_START + 8]) == ["first_jitted"]


def test_the_resolver_reads_what_a_jit_appended_and_an_ended_process_keeps_its_map(
    tmp_path: Path,
) -> None:
    tmp = jit_process(tmp_path, 78)
    perf_map = tmp / "perf-78.map"
    perf_map.write_text(f"{JIT_START:x} 40 first_jitted\n")
    symbolizer = Symbolizer(proc=tmp_path)
    image = symbolizer.image(78, eager=True)
    assert image is not None and symbolizer.read_opened(image)

    with perf_map.open("a") as appended:
        appended.write(f"{JIT_START + 0x40:x} 40 later_jitted\n")
    assert symbolizer.resolve(image, [JIT_START + 0x48]) == ["later_jitted"]

    (tmp_path / "78" / "stat").unlink()  # the process ended: its map as last read
    perf_map.unlink()
    assert symbolizer.resolve(image, [JIT_START, JIT_START + 0x48]) == [
        "first_jitted",
        "later_jitted",
    ]
