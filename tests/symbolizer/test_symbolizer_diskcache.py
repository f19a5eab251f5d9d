"""The on-disk symbol cache: round trip, damage, size cap; and the in-memory byte cap."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from podflame.symbolizer import Symbolizer
from podflame.symbolizer.diskcache import DiskCache
from podflame.symbolizer.elf import ElfSymbols

if TYPE_CHECKING:
    from tests.symbolizer.conftest import Binaries, Live

    Spawn = Callable[..., Live]

NAMES = ["burn_a", "burn_b", "burn_static", "lib_burn", "lib_static", "getpid"]


def frames(live: Live) -> list[int]:
    return [a for name in NAMES for a in (live.addresses[name], live.addresses[name] + 5)]


def key_of(path: Path) -> str:
    """The cache key the Symbolizer gives the file's table."""
    with path.open("rb") as stream:
        return ElfSymbols.identify(stream).key()


def cache_files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def test_restarted_symbolizer_reads_tables_from_disk(
    binaries: Binaries, spawn: Spawn, tmp_path: Path
) -> None:
    live = spawn(binaries.pie)
    first = Symbolizer(cache_dir=tmp_path)
    names = first.user(live.pid, frames(live))
    assert names == [n for n in NAMES for _ in range(2)]
    assert (first.stats.binaries_loaded, first.stats.disk_cache_writes) == (3, 3)

    restarted = Symbolizer(cache_dir=tmp_path)
    assert restarted.user(live.pid, frames(live)) == names
    assert restarted.stats.binaries_loaded == 0  # nothing parsed
    assert restarted.stats.disk_cache_hits == 3
    assert restarted.stats.disk_cache_errors == 0
    assert not [p for p in cache_files(tmp_path) if p.name.startswith(".tmp-")]


def test_round_trip_gives_identical_tables(binaries: Binaries, tmp_path: Path) -> None:
    paths = [binaries.lib, binaries.pie, binaries.unsized, binaries.stripped_dir / "libburn.so"]
    paths += [p for p in [Path("/usr/lib/x86_64-linux-gnu/libc.so.6")] if p.exists()]
    cache = DiskCache(tmp_path, 1 << 30)
    for path in paths:
        parsed, key = ElfSymbols.from_path(path), key_of(path)
        assert parsed.build_id is not None
        assert cache.store(key, parsed)

        loaded = cache.load(key)

        assert loaded is not None
        assert (loaded.build_id, loaded.source, loaded.segments) == (
            parsed.build_id,
            parsed.source,
            parsed.segments,
        )
        starts = parsed.table.starts.tolist()
        assert loaded.table.starts.tolist() == starts
        assert loaded.lookup_many(starts) == parsed.lookup_many(starts)
        assert loaded.nbytes == parsed.nbytes
    assert cache.stats.hits == len(paths)


def damage(data: bytes, how: str) -> bytes:
    if how == "flip":
        flipped = bytearray(data)
        flipped[len(data) * 2 // 3] ^= 0x01
        return bytes(flipped)
    if how == "truncate":
        return data[: len(data) // 2]
    if how == "extend":
        return data + b"\0"
    if how == "empty":
        return b""
    if how == "header":  # a valid-looking length announcing a huge header
        return data[:20] + struct.pack("<I", 0xFFFFFFF0) + data[24:]
    return os.urandom(len(data))


@pytest.mark.parametrize("how", ["flip", "truncate", "extend", "empty", "header", "garbage"])
def test_damaged_cache_file_is_ignored_and_removed(
    binaries: Binaries, spawn: Spawn, tmp_path: Path, how: str
) -> None:
    live = spawn(binaries.pie)
    expected = Symbolizer(cache_dir=tmp_path).user(live.pid, frames(live))
    files = cache_files(tmp_path)
    assert len(files) == 3
    for path in files:
        path.write_bytes(damage(path.read_bytes(), how))

    symbolizer = Symbolizer(cache_dir=tmp_path)
    assert symbolizer.user(live.pid, frames(live)) == expected

    assert symbolizer.stats.disk_cache_errors == 3
    assert symbolizer.stats.disk_cache_hits == 0
    assert symbolizer.stats.binaries_loaded == 3  # parsed again...
    assert symbolizer.stats.disk_cache_writes == 3  # ...and written back whole
    assert Symbolizer(cache_dir=tmp_path).user(live.pid, frames(live)) == expected


def test_file_of_another_key_is_not_trusted(binaries: Binaries, tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, 1 << 30)
    lib = ElfSymbols.from_path(binaries.lib)
    lib_key, pie_key = key_of(binaries.lib), key_of(binaries.pie)
    cache.store(lib_key, lib)
    lib_file, pie_file = cache.path(lib_key), cache.path(pie_key)
    assert lib_file and pie_file
    lib_file.rename(pie_file)

    assert cache.load(pie_key) is None
    assert not pie_file.exists() and cache.stats.errors == 1


def test_disk_cap_removes_least_recently_used(binaries: Binaries, tmp_path: Path) -> None:
    files = (binaries.lib, binaries.pie, binaries.nopie)
    tables = [ElfSymbols.from_path(p) for p in files]
    keys = [key_of(p) for p in files]
    probe = DiskCache(tmp_path / "probe", 1 << 30)
    sizes = []
    for key, table in zip(keys, tables, strict=True):
        probe.store(key, table)
        path = probe.path(key)
        assert path
        sizes.append(path.stat().st_size)
    cache = DiskCache(tmp_path / "capped", sizes[0] + sizes[1] + sizes[2] // 2)

    cache.store(keys[0], tables[0])
    cache.store(keys[1], tables[1])
    for i, path in enumerate(cache_files(cache.directory)):
        os.utime(path, ns=(i * 10**9, i * 10**9))  # distinct, old mtimes
    assert cache.load(keys[0]) is not None  # used: now the most recent
    cache.store(keys[2], tables[2])

    assert cache.stats.evicted == 1
    assert cache.load(keys[1]) is None
    assert cache.load(keys[0]) is not None
    assert cache.load(keys[2]) is not None


def test_no_build_id_or_unwritable_directory_is_no_error(
    binaries: Binaries, tmp_path: Path
) -> None:
    table = ElfSymbols.from_path(binaries.lib)
    anonymous = ElfSymbols(
        build_id=None, segments=table.segments, table=table.table, source=table.source
    )
    key = key_of(binaries.lib)
    assert DiskCache(tmp_path, 1 << 30).store(key, anonymous) is False
    assert list(tmp_path.iterdir()) == []

    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    cache = DiskCache(blocked / "cache", 1 << 30)
    assert cache.store(key, table) is False
    assert cache.stats.errors == 1
    assert cache.load(key) is None


def test_byte_cap_evicts_and_counts(binaries: Binaries, spawn: Spawn) -> None:
    live = spawn(binaries.pie)
    sizes = {p: ElfSymbols.from_path(p).nbytes for p in (binaries.pie, binaries.lib)}
    a, lib = live.addresses["burn_a"], live.addresses["lib_burn"]
    roomy = Symbolizer(max_bytes=sum(sizes.values()))
    assert roomy.user(live.pid, [a, lib]) == ["burn_a", "lib_burn"]
    assert roomy.stats.binaries_evicted == 0
    assert roomy.cached_bytes == sum(sizes.values())

    tight = Symbolizer(max_bytes=max(sizes.values()))
    assert tight.user(live.pid, [a, lib, a]) == ["burn_a", "lib_burn", "burn_a"]
    assert (tight.stats.binaries_loaded, tight.stats.binaries_evicted) == (2, 1)
    assert tight.cached_bytes == sizes[binaries.lib]  # the newest stays
    assert tight.user(live.pid, [a]) == ["burn_a"]
    assert (tight.stats.binaries_loaded, tight.stats.binaries_evicted) == (3, 2)


def test_a_table_larger_than_the_byte_cap_is_still_kept(binaries: Binaries, spawn: Spawn) -> None:
    live = spawn(binaries.pie)
    symbolizer = Symbolizer(max_bytes=1)
    a = live.addresses["burn_a"]

    assert symbolizer.user(live.pid, [a]) == ["burn_a"]
    assert symbolizer.user(live.pid, [a]) == ["burn_a"]
    assert symbolizer.stats.binaries_loaded == 1
    assert symbolizer.stats.binaries_evicted == 0
