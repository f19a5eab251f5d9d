"""Regressions from fuzzing the symbolizer: files a container controls must not hang,
redirect or stall it.

- A FIFO where a mapped library was: open() blocked forever (and the agent with it).
- A symbolic link there: followed against the agent's root, it named frames from a
  host file.
- A .gnu_debuglink among thousands of sections pyelftools could not build: lost.
- Many aliases of one address sharing a long name: the name comparison took 40 s
  for a 2.4 MB file; it now stops at a budget of compared words linear in the table.
"""

from __future__ import annotations

import io
import os
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from podflame.symbolizer import Symbolizer, elf, functions
from podflame.symbolizer.debuginfo import crc_matches, read_debuglink
from podflame.symbolizer.elf import ElfSymbols
from podflame.symbolizer.files import open_in_root
from podflame.symbolizer.perfmap import PerfMaps
from podflame.symbolizer.symbolizer import fallback_frame
from tests.symbolizer import elfgen
from tests.symbolizer.elfgen import Section, Symbol
from tests.symbolizer.fakeproc import MODULE, PID, START, FakeProc

# How long a call may take before it counts as hung: generous, it should return at once.
HANG_SECONDS = 20


def finishes(call: Callable[[], object], fifo: Path) -> object:
    """Run `call` in a thread; fail (and unblock it through the FIFO) if it hangs."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as error:  # re-raised in the caller's thread
            result.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_SECONDS)
    if thread.is_alive():
        # A writer releases an open() blocked on the FIFO, so the thread can end.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(HANG_SECONDS)
        pytest.fail(f"blocked on the FIFO {fifo}")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def test_a_fifo_where_the_library_was_does_not_block(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path / "proc")
    proc.install(b"placeholder")
    path = proc.in_root(MODULE)
    path.unlink()
    os.mkfifo(path)
    # Even with the mapping's inode (which the file system may well reuse).
    maps = proc.directory / str(PID) / "maps"
    maps.write_text(f"{START:x}-{START + 0x10000:x} r-xp 0 08:01 {path.stat().st_ino} {MODULE}\n")
    symbolizer = Symbolizer(proc=proc.directory)

    names = finishes(lambda: symbolizer.user(PID, [START + 0x1000]), path)

    assert names == [fallback_frame(MODULE, 0x1000)]
    assert symbolizer.stats.binaries_unreadable == 1


def test_debug_file_helpers_refuse_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "lib.debug"
    os.mkfifo(fifo)
    assert finishes(lambda: crc_matches(fifo, 0), fifo) is False
    with pytest.raises(OSError):
        finishes(lambda: ElfSymbols.from_path(fifo), fifo)


def test_a_symlink_where_the_library_was_is_not_followed(tmp_path: Path) -> None:
    """The link points at a host file with the mapping's very inode: still not read."""
    host_file = tmp_path / "host-library.so"
    host_file.write_bytes(elfgen.library().layout().bytes())
    proc = FakeProc(tmp_path / "proc")
    proc.install(b"placeholder")
    path = proc.in_root(MODULE)
    path.unlink()
    path.symlink_to(host_file)
    maps = proc.directory / str(PID) / "maps"
    maps.write_text(
        f"{START:x}-{START + 0x10000:x} r-xp 00000000 08:01 {host_file.stat().st_ino} {MODULE}\n"
    )
    symbolizer = Symbolizer(proc=proc.directory)

    assert symbolizer.user(PID, [START + 0x1000]) == [fallback_frame(MODULE, 0x1000)]
    assert symbolizer.stats.binaries_unreadable == 1


def test_aliases_sharing_a_long_name_cost_a_bounded_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100,000 aliases over 100 addresses, all named by one 9,000-byte name: before the
    budget, every round compared every alias, 1024 rounds (about 10**8 words); now the
    work is linear in the size of the table."""
    compared = [0]
    name_words = functions._name_words

    def counting(text: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        compared[0] += len(at)
        return name_words(text, at)

    monkeypatch.setattr(functions, "_name_words", counting)
    lib = elfgen.library()
    lib.section(".strtab").data = b"\0" + b"a" * 9000 + b"\0"
    aliases = [Symbol(1, 0x1000 + (i // 1000) * 0x10, 0x10, 2) for i in range(100_000)]
    lib.section(".symtab").data = elfgen.symtab(aliases)
    layout = lib.layout()
    symbols = ElfSymbols.from_file(io.BytesIO(layout.bytes()))

    assert 0 < compared[0] <= functions.compared_words_budget(100_000)
    assert len(symbols) == 100
    assert symbols.lookup(0x1000 + 0x10 * 42) == "a" * 9000


@pytest.mark.parametrize("kind", [elfgen.SHT_SYMTAB, 6, 0x6FFFFFF6])  # SYMTAB, DYNAMIC, GNU_HASH
def test_debuglink_is_found_among_thousands_of_odd_sections(kind: int) -> None:
    """pyelftools built an object per section to find one by name (seconds here) and
    gave up on the first it could not build: the link was lost."""
    lib = elfgen.library(link=elfgen.debuglink(b"x.debug", 7))
    lib.sections += [Section(f".s{i}", kind, bytes(64), entsize=24, link=3) for i in range(5000)]
    assert read_debuglink(io.BytesIO(lib.layout().bytes())) == ("x.debug", 7)


# --- Paths inside a container root (openat2 RESOLVE_IN_ROOT, or the walk) -------------


@pytest.fixture(params=[True, False], ids=["openat2", "walk"])
def use_openat2(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def container_root(tmp_path: Path) -> tuple[Path, Path]:
    """A container-like root, and a host directory beside it holding files it must not
    reach: /etc/secret (also as the perf map of pid 7) and a perf map in host/tmp."""
    root, host = tmp_path / "root", tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "inside").write_bytes(b"inside")
    (host / "tmp").mkdir(parents=True)
    (host / "etc").mkdir()
    (host / "etc" / "secret").write_bytes(b"host secret")
    (host / "tmp" / "perf-7.map").write_bytes(b"1000 10 host_function\n")
    return root, host


def test_a_tmp_symlinked_to_a_host_directory_is_resolved_inside(
    tmp_path: Path, use_openat2: bool
) -> None:
    root, host = container_root(tmp_path)
    (root / "tmp").symlink_to(host / "tmp")  # absolute: the host's path

    with pytest.raises(OSError):
        open_in_root(root, "/tmp/perf-7.map", use_openat2=use_openat2)


@pytest.mark.parametrize(
    "target",
    ["/", "/../../../..", "../../../../../../../../..", "etc/../../../.."],
)
def test_absolute_and_dotdot_links_stay_inside(
    tmp_path: Path, use_openat2: bool, target: str
) -> None:
    """Every way up ends at the container's root: <root>/etc/inside, never the host's."""
    root, host = container_root(tmp_path)
    (root / "up").symlink_to(target)
    (host / "etc" / "inside").write_bytes(b"host")  # what leaving the root would find

    for path in ("/up/etc/inside", "up/../../../etc/inside", "/../../etc/inside"):
        with open_in_root(root, path, use_openat2=use_openat2) as stream:
            assert stream.read() == b"inside"


def test_links_loops_and_non_files_are_refused(tmp_path: Path, use_openat2: bool) -> None:
    root, _ = container_root(tmp_path)
    (root / "loop").symlink_to("loop")
    os.mkfifo(root / "fifo")
    (root / "etc" / "link").symlink_to("inside")  # a link inside the root is followed

    for path in ("/loop", "/fifo", "/etc", "/", "", "/missing", "/etc/inside/x"):
        with pytest.raises(OSError):
            open_in_root(root, path, use_openat2=use_openat2)
    with open_in_root(root, "/etc/link", use_openat2=use_openat2) as stream:
        assert stream.read() == b"inside"


def test_a_perf_map_behind_a_symlinked_tmp_is_not_read(tmp_path: Path) -> None:
    """The perf map path /proc/PID/root/tmp/perf-N.map, with the container's /tmp a
    link to a host directory holding such a file: nothing outside the root is read."""
    proc = tmp_path / "proc"
    process = proc / "7"
    process.mkdir(parents=True)
    (process / "status").write_text("Name:\tnode\nNSpid:\t7\n")
    (process / "stat").write_text("7 (node) S " + "0 " * 18 + "4242 0\n")
    _, host = container_root(tmp_path)
    (process / "root").mkdir()
    (process / "root" / "tmp").symlink_to(host / "tmp")
    maps = PerfMaps()

    assert maps.lookup(7, [0x1000], proc) == [None]

    # The same file inside the root is read (the setup itself is right).
    (process / "root" / "tmp").unlink()
    (process / "root" / "tmp").mkdir()
    (process / "root" / "tmp" / "perf-7.map").write_bytes(b"1000 10 container_function\n")
    assert maps.lookup(7, [0x1000], proc) == ["container_function"]


# --- A forged build-id ------------------------------------------------------------------


def pod(proc: Path, pid: int, binary: bytes) -> None:
    """Process `pid` of a pod whose root holds `binary` at MODULE, mapped."""
    path = proc / str(pid) / "root" / MODULE.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_bytes(binary)
    inode = path.stat().st_ino
    maps = f"{START:x}-{START + 0x10000:x} r-xp 00000000 08:01 {inode} {MODULE}\n"
    (proc / str(pid) / "maps").write_text(maps)


def test_a_forged_build_id_cannot_name_another_pods_frames(tmp_path: Path) -> None:
    """An attacker's library carries the build-id of the genuine one and its own names.
    Each pod's frames get their own file's names, in either order, also from the disk
    cache of a restarted symbolizer."""
    genuine = elfgen.library().layout().bytes()
    forged = genuine.replace(b"alpha\0", b"EVIL!\0")
    assert forged != genuine
    with io.BytesIO(genuine) as a, io.BytesIO(forged) as b:
        assert ElfSymbols.read_build_id(a) == ElfSymbols.read_build_id(b) is not None
    proc, cache = tmp_path / "proc", tmp_path / "cache"
    pod(proc, 100, genuine)
    pod(proc, 666, forged)
    alpha = [START + elfgen.TEXT_VADDR]  # the first function: offset 0x1000 is vaddr 0x1000

    for order in ((666, 100), (100, 666), (666, 100)):  # the last: all from the disk cache
        symbolizer = Symbolizer(proc=proc, cache_dir=cache)
        names = {pid: symbolizer.user(pid, alpha) for pid in order}
        assert names == {100: ["alpha"], 666: ["EVIL!"]}
    assert symbolizer.stats.binaries_loaded == 0 and symbolizer.stats.disk_cache_hits == 2


def test_a_forged_debug_file_cannot_name_another_pods_frames(tmp_path: Path) -> None:
    """The same stripped library in two pods; one pod also holds a forged debug file
    at the build-id path. The other pod's frames keep the library's own names."""
    debug = elfgen.library().layout().bytes().replace(b"alpha\0", b"EVIL!\0")
    library = elfgen.library()
    library.section(".symtab").kind = elfgen.SHT_PROGBITS  # stripped: no symbol table
    stripped = library.layout().bytes()
    build_id = bytes(range(20)).hex()
    proc = tmp_path / "proc"
    pod(proc, 100, stripped)
    pod(proc, 666, stripped)
    debug_path = proc / "666" / "root" / f"usr/lib/debug/.build-id/{build_id[:2]}"
    debug_path.mkdir(parents=True)
    (debug_path / f"{build_id[2:]}.debug").write_bytes(debug)
    alpha = [START + elfgen.TEXT_VADDR]

    symbolizer = Symbolizer(proc=proc)
    assert symbolizer.user(666, alpha) == ["EVIL!"]  # the attacker names its own frames
    assert symbolizer.user(100, alpha) == [fallback_frame(MODULE, elfgen.TEXT_VADDR)]


# --- Byte budget ----------------------------------------------------------------------


def test_a_sparse_file_claiming_a_4_gb_symtab_costs_at_most_the_budget(tmp_path: Path) -> None:
    """The size check alone passes it (the file is that big, sparsely): the budget
    refuses it before a byte of the table is read."""
    library = elfgen.library()
    library.section(".symtab").size_override = 4 << 30
    proc = FakeProc(tmp_path / "proc")
    proc.install(library.layout().bytes())
    os.truncate(proc.in_root(MODULE), 5 << 30)  # sparse: costs the attacker nothing
    symbolizer = Symbolizer(proc=proc.directory)

    tracemalloc.start()
    try:
        names = symbolizer.user(PID, [START + elfgen.TEXT_VADDR])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert names == [fallback_frame(MODULE, elfgen.TEXT_VADDR)]
    assert symbolizer.stats.binaries_too_large == 1
    assert peak < elf.MAX_READ_BYTES
    with pytest.raises(elf.ElfTooLarge), proc.in_root(MODULE).open("rb") as stream:
        ElfSymbols.from_file(stream)


def test_tables_read_on_another_thread_while_frames_resolve(tmp_path: Path) -> None:
    """The agent parses opened files without its lock while the drain resolves frames:
    the Symbolizer's caches stay consistent (small caps, so eviction races too)."""
    proc = tmp_path / "proc"
    pids = list(range(100, 124))
    for i, pid in enumerate(pids):
        pod(proc, pid, elfgen.library(build_id=bytes([i + 1]) * 20).layout().bytes())
    symbolizer = Symbolizer(proc=proc, max_binaries=4)
    images = [symbolizer.image(pid, eager=True) for pid in pids]
    pending = [symbolizer.take_opened(image) for image in images if image is not None]
    assert len(pending) == len(pids) and all(p is not None for p in pending)
    read: list[object] = []

    def reader() -> None:
        read.extend(symbolizer.read_pending(p) for p in pending if p is not None)

    thread = threading.Thread(target=reader)
    thread.start()
    resolved = [symbolizer.user(pid, [START + elfgen.TEXT_VADDR]) for pid in pids * 3]
    thread.join(HANG_SECONDS)

    assert resolved == [["alpha"]] * len(resolved)
    assert len(read) == len(pids) and all(table is not None for table in read)
    assert symbolizer.cache_sizes()["symbol_tables"] <= 4
