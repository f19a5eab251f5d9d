"""Symbolizer.user() against live processes of freshly compiled programs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from podflame.symbolizer import Symbolizer
from podflame.symbolizer.procmaps import read_maps

if TYPE_CHECKING:
    from tests.symbolizer.conftest import Binaries, Live

    Spawn = Callable[..., Live]
    ModuleOffset = Callable[[int, int], str]

NAMES = ["burn_a", "burn_b", "burn_static", "lib_burn", "lib_static", "getpid"]


def frames(live: Live, names: list[str]) -> list[int]:
    """Each function's entry address and an address 5 bytes into it."""
    return [a for name in names for a in (live.addresses[name], live.addresses[name] + 5)]


@pytest.mark.parametrize("program", ["pie", "nopie"])
def test_names_functions_in_executable_library_and_libc(
    binaries: Binaries, spawn: Spawn, program: str
) -> None:
    live = spawn(getattr(binaries, program))
    symbolizer = Symbolizer()

    names = symbolizer.user(live.pid, frames(live, NAMES))

    assert names == [n for n in NAMES for _ in range(2)]
    assert symbolizer.stats.frames_resolved == 12
    assert symbolizer.stats.frames_unresolved == 0
    assert symbolizer.stats.binaries_loaded == 3  # target, libburn.so, libc
    assert symbolizer.stats.elf_errors == 0


def test_stripped_binaries_give_module_offset_or_dynsym_names(
    binaries: Binaries, spawn: Spawn, module_offset: ModuleOffset
) -> None:
    live = spawn(binaries.stripped_dir / "target_pie")
    addresses = frames(live, ["burn_a", "burn_static", "lib_burn", "lib_static"])

    names = Symbolizer().user(live.pid, addresses)

    expected = [module_offset(live.pid, a) for a in addresses]
    expected[4:6] = ["lib_burn", "lib_burn"]  # exported: still in .dynsym
    assert names == expected
    assert expected[0].startswith("target_pie+0x")
    assert expected[6].startswith("libburn.so+0x")


def test_deleted_library_resolves_through_map_files(
    binaries: Binaries, spawn: Spawn, tmp_path: Path
) -> None:
    copy = tmp_path / "libgone.so"
    shutil.copy(binaries.lib, copy)
    live = spawn(binaries.mapper, "dlopen", copy, "lib_burn")
    copy.unlink()
    address = live.addresses["lib_burn"]
    mapping = next(m for m in read_maps(live.pid) if m.start <= address < m.end)
    assert mapping.deleted and mapping.path == str(copy)

    assert Symbolizer().user(live.pid, [address, address + 5]) == ["lib_burn", "lib_burn"]


def test_binary_only_in_the_process_mount_namespace(
    binaries: Binaries, spawn: Spawn, tmp_path: Path
) -> None:
    """The program runs from a tmpfs mounted in its own mount namespace only.

    At the same path on the host sits a different binary (the non-PIE build):
    reading the host's file would give wrong names or none.
    """
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    script = f"mount -t tmpfs tmpfs {hidden} && cp {binaries.pie} {binaries.lib} {hidden}/ "
    script += f"&& exec {hidden}/target_pie"
    if subprocess.run(["unshare", "--mount", "--propagation", "private", "true"]).returncode:
        pytest.skip("cannot create a mount namespace here")
    live = spawn("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
    shutil.copy(binaries.nopie, hidden / "target_pie")  # the decoy, host side
    shutil.copy(binaries.nopie, hidden / "libburn.so")

    symbolizer = Symbolizer()
    names = symbolizer.user(live.pid, frames(live, ["burn_a", "burn_static", "lib_burn"]))

    assert names == ["burn_a", "burn_a", "burn_static", "burn_static", "lib_burn", "lib_burn"]
    assert symbolizer.stats.elf_errors == 0


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not-elf"])
def test_corrupted_elf_in_a_mapping_gives_module_offset(
    binaries: Binaries, spawn: Spawn, module_offset: ModuleOffset, tmp_path: Path, damage: str
) -> None:
    data = bytearray(binaries.lib.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data[0:64] = b"\xa5" * 64  # ELF header gone, code bytes intact
    else:
        data = bytearray(b"just some text, mapped executable\n" * 200)
    broken = tmp_path / "broken.so"
    broken.write_bytes(bytes(data))
    live = spawn(binaries.mapper, "mmap", broken)
    addresses = [live.addresses["base"] + 0x1000, live.addresses["base"] + 0x1005]
    symbolizer = Symbolizer()

    names = symbolizer.user(live.pid, addresses)
    again = symbolizer.user(live.pid, addresses)

    assert names == again == [module_offset(live.pid, a) for a in addresses]
    assert names[0] == "broken.so+0x1000"
    assert symbolizer.stats.elf_errors == 1  # remembered, not re-parsed and re-counted
    assert symbolizer.stats.frames_unresolved == 4


def test_process_that_does_not_exist_gives_unknown() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    reaped = subprocess.Popen(["true"])
    reaped.wait()
    symbolizer = Symbolizer()

    assert symbolizer.user(pid_max + 1, [0x401000, 0x401005]) == ["[unknown]"] * 2
    assert symbolizer.user(reaped.pid, [0x401000]) == ["[unknown]"]
    assert symbolizer.stats.processes_gone == 2
    assert symbolizer.stats.frames_unresolved == 3


def test_unmapped_address_and_vdso(binaries: Binaries, spawn: Spawn) -> None:
    live = spawn(binaries.pie)
    vdso = next((m for m in read_maps(live.pid) if m.path == "[vdso]"), None)
    addresses = [0x10, 0xFFFF_FFFF_FFFF]
    if vdso is not None:
        addresses.append(vdso.start + 0x10)

    names = Symbolizer().user(live.pid, addresses)

    assert names == ["[unknown]", "[unknown]", "[vdso]"][: len(addresses)]


def test_lru_evicts_beyond_the_cap_and_still_names_correctly(
    binaries: Binaries, spawn: Spawn
) -> None:
    live = spawn(binaries.pie)
    symbolizer = Symbolizer(max_binaries=1)
    a, lib = live.addresses["burn_a"], live.addresses["lib_burn"]

    assert symbolizer.user(live.pid, [a, lib, a]) == ["burn_a", "lib_burn", "burn_a"]
    # One call loads each binary once (per-call memo); the second evicts the first.
    assert (symbolizer.stats.binaries_loaded, symbolizer.stats.binaries_evicted) == (2, 1)
    assert symbolizer.user(live.pid, [a]) == ["burn_a"]
    assert (symbolizer.stats.binaries_loaded, symbolizer.stats.binaries_evicted) == (3, 2)
    assert symbolizer.user(live.pid, [a]) == ["burn_a"]  # now cached: no load
    assert symbolizer.stats.binaries_loaded == 3


def test_cache_is_shared_between_processes_of_one_binary(binaries: Binaries, spawn: Spawn) -> None:
    first, second = spawn(binaries.pie), spawn(binaries.pie)
    symbolizer = Symbolizer()

    symbolizer.user(first.pid, frames(first, NAMES))
    loaded = symbolizer.stats.binaries_loaded
    names = symbolizer.user(second.pid, frames(second, NAMES))

    assert names == [n for n in NAMES for _ in range(2)]
    assert symbolizer.stats.binaries_loaded == loaded == 3


def test_exited_process_is_named_from_the_files_another_process_mapped(
    binaries: Binaries, spawn: Spawn
) -> None:
    """Under process churn a child is often gone before its files can be opened: the
    tables of the same files (path, device, inode) opened for its parent name it."""
    parent, child = spawn(binaries.pie), spawn(binaries.pie)
    symbolizer = Symbolizer()
    symbolizer.user(parent.pid, frames(parent, NAMES))
    image = symbolizer.image(child.pid)  # mappings only: nothing opened yet
    child.process.kill()
    child.process.wait()

    names = symbolizer.resolve(image, frames(child, NAMES))

    assert names == [n for n in NAMES for _ in range(2)]
    assert symbolizer.stats.binaries_unreadable == 0
    assert symbolizer.stats.mapping_cache_hits == 3  # target, libburn.so, libc


def test_an_eager_capture_opens_files_and_reads_their_tables_later(
    binaries: Binaries, spawn: Spawn
) -> None:
    """A capture parses nothing (another process's announcement must not wait for it):
    it opens the mapped files, whose tables are read after the process has gone, one
    file per read_opened() call and the rest when a frame needs them."""
    live = spawn(binaries.pie)
    symbolizer = Symbolizer()
    image = symbolizer.image(live.pid, eager=True)
    assert image is not None
    assert symbolizer.stats.binaries_loaded == 0
    assert len(image.opened) >= 3  # target, libburn.so, libc (and the loader)
    live.process.kill()
    live.process.wait()

    assert symbolizer.read_opened(image)
    assert symbolizer.stats.binaries_loaded == 1
    names = symbolizer.resolve(image, frames(live, NAMES))

    assert names == [n for n in NAMES for _ in range(2)]
    assert symbolizer.stats.binaries_loaded == 3
    assert symbolizer.stats.binaries_unreadable == 0
    image.close()
    assert not image.opened


def test_mapped_file_index_is_bounded(binaries: Binaries, spawn: Spawn) -> None:
    symbolizer = Symbolizer(max_binaries=1)
    for program in (binaries.pie, binaries.nopie):
        live = spawn(program)
        symbolizer.user(live.pid, frames(live, NAMES))

    sizes = symbolizer.cache_sizes()
    assert sizes["symbol_tables"] == 1
    assert 1 <= sizes["mapped_files"] <= 4  # 4 x max_binaries


def test_forked_processes_share_one_mapping_index() -> None:
    child = os.fork()
    if child == 0:  # the same executable mappings as its parent, at the same addresses
        time.sleep(60)
        os._exit(0)
    try:
        symbolizer = Symbolizer()
        parent_image = symbolizer.image(os.getpid())
        child_image = symbolizer.image(child)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)

    assert parent_image is not None and child_image is not None
    assert child_image.mappings is parent_image.mappings
    assert child_image.pid == child
    assert symbolizer.cache_sizes()["layouts"] == 1
