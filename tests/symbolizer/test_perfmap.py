"""Perf map files: parsing, overlaps, the per-process cache, and real JIT processes."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from podflame.symbolizer.perfmap import PerfMap, PerfMaps, namespaced_pid, start_time

# --- PerfMap -----------------------------------------------------------------


def test_parse_and_lookup_over_the_whole_range() -> None:
    perf_map = PerfMap.parse(b"1000 10 LazyCompile:*hot /app/x.js:3\n2000 0x20 Builtin:Call\n")

    assert perf_map.lookup(0x1000) == "LazyCompile:*hot /app/x.js:3"
    assert perf_map.lookup(0x100F) == "LazyCompile:*hot /app/x.js:3"
    assert perf_map.lookup(0x1010) is None
    assert perf_map.lookup(0xFFF) is None
    assert perf_map.lookup(0x201F) == "Builtin:Call"
    assert perf_map.lookup(0x2020) is None
    assert len(perf_map) == 2
    assert perf_map.malformed == 0


def test_malformed_lines_are_skipped_and_counted() -> None:
    data = b"\n".join(
        [
            b"1000 10 good",
            b"zzzz 10 bad start",
            b"2000 qq bad size",
            b"3000 10",  # no name
            b"3000 10 ",  # blank name
            b"4000\t10\ttabs",
            b"",  # blank lines are not counted
            b"   ",
            b"ffffffffffffffff 10 past the end of the address space",
            b"5000 0 zero-sized: fine, but holds nothing",
            b"6000 8 caf\xc3\xa9 \xff",
            b"7000 8 no newline at the end",
        ]
    )

    perf_map = PerfMap.parse(data)

    assert perf_map.malformed == 6
    assert perf_map.lookup(0x1000) == "good"
    assert perf_map.lookup(0x5000) is None
    assert perf_map.lookup(0x6000) == "caf\u00e9 \\xff"  # escaped (symbolizer.text)
    assert perf_map.lookup(0x7007) == "no newline at the end"


def test_later_lines_win_where_ranges_overlap() -> None:
    perf_map = PerfMap.parse(
        b"1000 100 old\n"  # [0x1000, 0x1100)
        b"1040 20 inner\n"  # splits `old` in two
        b"10f0 20 straddle\n"  # cuts the tail of `old`, reaches past it
        b"2000 10 same-range-first\n"
        b"2000 10 same-range-second\n"
    )

    assert perf_map.lookup(0x103F) == "old"
    assert perf_map.lookup(0x1040) == "inner"
    assert perf_map.lookup(0x105F) == "inner"
    assert perf_map.lookup(0x1060) == "old"
    assert perf_map.lookup(0x10EF) == "old"
    assert perf_map.lookup(0x10F0) == "straddle"
    assert perf_map.lookup(0x110F) == "straddle"
    assert perf_map.lookup(0x1110) is None
    assert perf_map.lookup(0x2005) == "same-range-second"


def encode(lines: list[tuple[int, int, str]]) -> bytes:
    return b"".join(f"{start:x} {size:x} {name}\n".encode() for start, size, name in lines)


def test_overlaps_match_a_brute_force_model_also_when_applied_in_pieces() -> None:
    rng = random.Random(5)
    for _ in range(500):
        lines = [(rng.randint(0, 60), rng.randint(0, 15), f"f{i}") for i in range(12)]
        model: dict[int, str] = {}
        for start, size, name in lines:
            model.update(dict.fromkeys(range(start, start + size), name))
        cut = rng.randint(0, len(lines))
        perf_map = PerfMap.parse(encode(lines[:cut]))
        for i in range(cut, len(lines), 3):
            perf_map = perf_map.updated(encode(lines[i : i + 3]))

        assert [perf_map.lookup(a) for a in range(80)] == [model.get(a) for a in range(80)]


def test_a_big_map_parses_and_updates_quickly() -> None:
    base = 0x7F0000000000
    lines = [f"{base + i * 0x800:x} 400 JS:*fn{i} /app/x.js:{i}\n" for i in range(100_000)]
    random.Random(1).shuffle(lines)
    started = time.monotonic()
    perf_map = PerfMap.parse("".join(lines).encode())
    parsed = time.monotonic()
    updated = perf_map.updated(f"{base + 0x10:x} 8 JS:*rejit\n".encode())
    done = time.monotonic()

    assert perf_map.lookup(base + 7 * 0x800 + 0x3FF) == "JS:*fn7 /app/x.js:7"
    assert updated.lookup(base + 0x10) == "JS:*rejit"
    assert updated.lookup(base + 0x18) == "JS:*fn0 /app/x.js:0"
    assert parsed - started < 5
    assert done - parsed < 0.5


# --- /proc helpers ----------------------------------------------------------------


def test_namespaced_pid_and_start_time_of_this_process() -> None:
    assert namespaced_pid(os.getpid()) == os.getpid()
    started = start_time(os.getpid())
    assert started is not None and started > 0
    assert start_time(os.getpid()) == started


def fake_process(
    proc: Path,
    pid: int,
    *,
    nspid: list[int] | None,
    started: int = 4242,
    comm: str = "node",
) -> Path:
    """A /proc/PID with status, stat and a root/tmp directory; returns that tmp."""
    directory = proc / str(pid)
    directory.mkdir(parents=True, exist_ok=True)
    status = f"Name:\t{comm}\nPid:\t{pid}\n"
    if nspid is not None:
        status += "NSpid:\t" + "\t".join(map(str, nspid)) + "\n"
    (directory / "status").write_text(status + "PPid:\t1\n")
    fields = ["S", *["0"] * 18, str(started), "0"]  # fields 3..23; field 22 is the start
    (directory / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
    tmp = directory / "root" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


def test_namespaced_pid_reads_the_innermost_entry(tmp_path: Path) -> None:
    fake_process(tmp_path, 500, nspid=[500, 42, 7])
    fake_process(tmp_path, 501, nspid=[501])
    fake_process(tmp_path, 502, nspid=None)  # kernels before 4.1

    assert namespaced_pid(500, tmp_path) == 7
    assert namespaced_pid(501, tmp_path) == 501
    assert namespaced_pid(502, tmp_path) == 502
    assert namespaced_pid(503, tmp_path) is None


def test_start_time_survives_a_hostile_command_name(tmp_path: Path) -> None:
    fake_process(tmp_path, 500, nspid=[500], comm="a) (b c) 1 2 3", started=987)

    assert start_time(500, tmp_path) == 987
    assert start_time(501, tmp_path) is None


# --- PerfMaps on a fake /proc ---------------------------------------------------------


def test_the_map_is_read_through_the_process_root_with_its_namespaced_pid(
    tmp_path: Path,
) -> None:
    tmp = fake_process(tmp_path, 500, nspid=[500, 7])
    (tmp / "perf-7.map").write_bytes(b"1000 10 inside\n")
    (tmp / "perf-500.map").write_bytes(b"1000 10 wrong pid\n")

    assert PerfMaps().lookup(500, [0x1004, 0x2000], tmp_path) == ["inside", None]


def test_the_map_is_reread_when_it_grows_and_a_partial_line_waits(tmp_path: Path) -> None:
    path = fake_process(tmp_path, 500, nspid=[500]) / "perf-500.map"
    path.write_bytes(b"1000 10 first\n2000 1")
    maps = PerfMaps()

    assert maps.lookup(500, [0x1000, 0x2000], tmp_path) == ["first", None]

    with path.open("ab") as stream:
        stream.write(b"0 second\n3000 10 third\n1000 8 first-rejit\n")
    assert maps.lookup(500, [0x1000, 0x1008, 0x2000, 0x3000], tmp_path) == [
        "first-rejit",
        "first",
        "second",
        "third",
    ]


def test_a_replaced_file_is_read_from_scratch(tmp_path: Path) -> None:
    tmp = fake_process(tmp_path, 500, nspid=[500])
    (tmp / "perf-500.map").write_bytes(b"1000 10 old\n2000 10 gone\n")
    maps = PerfMaps()
    assert maps.lookup(500, [0x1000, 0x2000], tmp_path) == ["old", "gone"]

    (tmp / "new.map").write_bytes(b"1000 10 new\n")
    (tmp / "new.map").replace(tmp / "perf-500.map")

    assert maps.lookup(500, [0x1000, 0x2000], tmp_path) == ["new", None]


def test_an_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    tmp = fake_process(tmp_path, 500, nspid=[500])
    (tmp / "perf-500.map").write_bytes(b"1000 10 f\n")
    maps = PerfMaps()
    first = maps.get(500, tmp_path)

    assert maps.get(500, tmp_path) is first


def test_a_reused_pid_does_not_get_the_old_process_names(tmp_path: Path) -> None:
    tmp = fake_process(tmp_path, 500, nspid=[500, 7], started=100)
    (tmp / "perf-7.map").write_bytes(b"1000 10 old-process\n")
    maps = PerfMaps()
    assert maps.lookup(500, [0x1000], tmp_path) == ["old-process"]

    # Same pid, later start, another namespace pid and no map of its own.
    fake_process(tmp_path, 500, nspid=[500, 9], started=200)

    assert maps.lookup(500, [0x1000], tmp_path) == [None]


def test_a_missing_map_or_process_gives_none(tmp_path: Path) -> None:
    fake_process(tmp_path, 500, nspid=[500])
    maps = PerfMaps()

    assert maps.lookup(500, [1, 2], tmp_path) == [None, None]
    assert maps.lookup(501, [1], tmp_path) == [None]
    assert maps.lookup(501, [], tmp_path) == []


def test_a_map_that_appears_later_is_found(tmp_path: Path) -> None:
    tmp = fake_process(tmp_path, 500, nspid=[500])
    maps = PerfMaps()
    assert maps.lookup(500, [0x1000], tmp_path) == [None]

    (tmp / "perf-500.map").write_bytes(b"1000 10 late\n")

    assert maps.lookup(500, [0x1000], tmp_path) == ["late"]


def test_symlinks_and_fifos_are_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"1000 10 host file\n")
    (fake_process(tmp_path, 500, nspid=[500]) / "perf-500.map").symlink_to(secret)
    os.mkfifo(fake_process(tmp_path, 501, nspid=[501]) / "perf-501.map")
    maps = PerfMaps()

    assert maps.lookup(500, [0x1000], tmp_path) == [None]
    assert maps.lookup(501, [0x1000], tmp_path) == [None]  # and it did not block


def test_the_cache_is_bounded_and_forgets(tmp_path: Path) -> None:
    for pid in (500, 501, 502):
        tmp = fake_process(tmp_path, pid, nspid=[pid])
        (tmp / f"perf-{pid}.map").write_bytes(f"1000 10 f{pid}\n".encode())
    maps = PerfMaps(max_processes=2)

    for pid in (500, 501, 502):
        assert maps.lookup(pid, [0x1000], tmp_path) == [f"f{pid}"]
    assert len(maps) == 2
    maps.forget(502)
    maps.forget(12345)
    assert len(maps) == 1
    with pytest.raises(ValueError):
        PerfMaps(max_processes=0)


def test_read_is_capped(tmp_path: Path) -> None:
    tmp = fake_process(tmp_path, 500, nspid=[500])
    (tmp / "perf-500.map").write_bytes(b"1000 10 first\n2000 10 second\n")
    maps = PerfMaps(max_bytes=20)

    assert maps.lookup(500, [0x1000, 0x2000], tmp_path) == ["first", None]


# --- Real processes -----------------------------------------------------------

HOT_JS = """
function hotLoop(n) {
    let s = 0;
    for (let i = 0; i < n; i++) s += Math.sqrt(i) % 7;
    return s;
}
let total = 0;
const ready = Date.now() + 300;
let announced = false;
const end = Date.now() + 60000;
while (Date.now() < end) {
    total += hotLoop(100000);
    if (!announced && Date.now() > ready) {
        announced = true;
        process.stdout.write("ready\\n");
    }
}
console.log(total);
"""


@pytest.fixture
def stop_later() -> Iterator[Callable[[subprocess.Popen[str]], None]]:
    started: list[subprocess.Popen[str]] = []
    yield started.append
    for process in started:
        process.kill()
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def wait_for_line(process: subprocess.Popen[str], expected: str) -> str:
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != expected:
        stderr = process.stderr.read() if process.stderr else ""
        raise AssertionError(f"expected {expected!r}, got {line!r}: {stderr}")
    return line


def test_node_perf_basic_prof(
    stop_later: Callable[[subprocess.Popen[str]], None], tmp_path: Path
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    process = subprocess.Popen(
        [node, "--perf-basic-prof", "-e", HOT_JS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,  # V8 also writes an isolate-*-v8.log into its working directory
    )
    stop_later(process)
    host_file = Path(f"/tmp/perf-{process.pid}.map")
    try:
        wait_for_line(process, "ready")
        maps = PerfMaps()
        deadline = time.monotonic() + 20
        while True:
            # V8 may still hold the lines in its buffer: poll, which also
            # exercises re-reading a file that grows.
            lines = [ln for ln in host_file.read_text().splitlines() if "hotLoop" in ln]
            if lines or time.monotonic() > deadline:
                break
            maps.lookup(process.pid, [0])
            time.sleep(0.2)
        assert lines, "node wrote no hotLoop entry"
        start_text, size_text, name = lines[-1].split(" ", 2)
        start, size = int(start_text, 16), int(size_text, 16)

        names = maps.lookup(process.pid, [start, start + size - 1, start + size // 2])

        assert names == [name, name, name]
        assert "hotLoop" in name
    finally:
        process.kill()
        process.wait()
        host_file.unlink(missing_ok=True)  # node leaves it behind


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def test_map_in_a_private_pid_and_mount_namespace(
    stop_later: Callable[[subprocess.Popen[str]], None],
) -> None:
    """The JIT'd process writes /tmp/perf-<its pid>.map on a tmpfs only its namespace sees."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    unshare = ["unshare", "--pid", "--mount", "--fork", "--mount-proc", "--kill-child"]
    probe = subprocess.run([*unshare, "true"])
    if probe.returncode:
        pytest.skip("cannot create PID and mount namespaces here")
    # The outer shell is pid 1 of the new namespace; the inner one writes the
    # map under its own (namespaced) pid, then becomes `sleep`.
    inner = (
        'printf "1000 40 jitted_in_namespace\\n" > /tmp/perf-$$.map && '
        "echo $$ && echo ready && exec sleep 60"
    )
    script = f"mount -t tmpfs tmpfs /tmp && sh -c '{inner}'"
    process = subprocess.Popen(
        [*unshare, "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop_later(process)
    assert process.stdout is not None
    inner_pid = int(process.stdout.readline())
    wait_for_line(process, "ready")
    [outer_shell] = _children(process.pid)
    [host_pid] = _children(outer_shell)
    host_view = Path(f"/tmp/perf-{inner_pid}.map")

    assert host_pid != inner_pid
    assert namespaced_pid(host_pid) == inner_pid
    assert not host_view.exists() or b"jitted_in_namespace" not in host_view.read_bytes()
    assert PerfMaps().lookup(host_pid, [0x1000, 0x103F, 0x1040]) == [
        "jitted_in_namespace",
        "jitted_in_namespace",
        None,
    ]


def test_over_the_cap_the_rest_is_ignored_and_counted_once(tmp_path: Path) -> None:
    tmp = fake_process(tmp_path, 500, nspid=[500])
    lines = b"".join(b"%x 10 f%d\n" % (0x1000 + 0x10 * i, i) for i in range(1000))
    (tmp / "perf-500.map").write_bytes(lines)
    maps = PerfMaps(max_bytes=len(lines) // 2)

    names = maps.lookup(500, [0x1000, 0x1000 + 0x10 * 999], tmp_path)
    with (tmp / "perf-500.map").open("ab") as out:
        out.write(b"100000 10 appended\n")
    again = maps.lookup(500, [0x1000, 0x100000], tmp_path)

    assert names == ["f0", None] and again == ["f0", None]
    assert maps.stats.truncated == 1


def test_a_line_with_no_end_stops_the_read(tmp_path: Path) -> None:
    tmp = fake_process(tmp_path, 500, nspid=[500])
    (tmp / "perf-500.map").write_bytes(b"1000 10 first\n" + b"x" * (3 << 20))
    maps = PerfMaps()

    assert maps.lookup(500, [0x1000], tmp_path) == ["first"]
    assert maps.stats.truncated == 1


def test_the_bytes_behind_all_maps_are_capped(tmp_path: Path) -> None:
    """However many processes have big maps, the least recently used go past the total."""
    line = b"1000 10 %s\n" % (b"n" * 80)
    for pid in (500, 501, 502):
        tmp = fake_process(tmp_path, pid, nspid=[pid])
        (tmp / f"perf-{pid}.map").write_bytes(line * 100)
    maps = PerfMaps(max_total_bytes=len(line) * 250)

    for pid in (500, 501, 502):
        assert maps.lookup(pid, [0x1000], tmp_path) == ["n" * 80]

    assert len(maps) == 2 and maps.total_bytes <= len(line) * 250
    assert maps.stats.evicted_for_bytes == 1
