"""Batch lookups (lookup_many, lookup_offsets) agree with single lookups and with nm."""

from __future__ import annotations

import glob
import random
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from podflame.symbolizer import KernelSymbols
from podflame.symbolizer.elf import ElfSymbols

if TYPE_CHECKING:
    from tests.symbolizer.conftest import Binaries

LIBC = Path("/usr/lib/x86_64-linux-gnu/libc.so.6")
LIBLLVM = sorted(glob.glob("/usr/lib/x86_64-linux-gnu/libLLVM*.so*"))


def nm_functions(path: Path) -> dict[int, tuple[int, set[str]]]:
    """address -> (largest size, names) of the sized functions nm lists (dynamic if stripped)."""
    symbols = ElfSymbols.from_path(path)
    dynamic = ["-D"] if symbols.source == ".dynsym" else []
    out = subprocess.run(
        ["nm", *dynamic, "-S", "--defined-only", str(path)], capture_output=True, check=True
    )
    found: dict[int, tuple[int, set[str]]] = {}
    for line in out.stdout.decode(errors="replace").splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "TtWi" and int(fields[1], 16) > 0:
            address, size = int(fields[0], 16), int(fields[1], 16)
            old_size, names = found.get(address, (0, set()))
            names.add(fields[3].split("@")[0])
            found[address] = (max(size, old_size), names)
    return found


def real_binaries(binaries: Binaries) -> list[Path]:
    paths = [binaries.lib, binaries.pie]
    return paths + [p for p in (LIBC, *LIBLLVM[-1:]) if Path(p).exists()]


def test_lookup_many_equals_lookup_and_nm_on_real_binaries(binaries: Binaries) -> None:
    rng = random.Random(7)
    for path in map(Path, real_binaries(binaries)):
        symbols = ElfSymbols.from_path(path)
        functions = nm_functions(path)
        assert len(functions) > 2, path
        starts = list(functions)
        # Entry points, last bytes, one past the end, and random addresses in the text.
        lastbytes = [a + functions[a][0] - 1 for a in starts]
        low, high = min(starts), max(lastbytes)
        probes = starts + lastbytes + [a + functions[a][0] for a in starts]
        probes += [rng.randrange(low - 64, high + 64) for _ in range(20000)]
        rng.shuffle(probes)

        names = symbols.lookup_many(probes)

        assert names == [symbols.lookup(a) for a in probes], path
        by_address = dict(zip(probes, names, strict=True))
        for address, (_, aliases) in functions.items():
            assert by_address[address] in aliases, (path, hex(address))


@pytest.mark.parametrize("repeat", [1, 40])  # small batches are looked up one by one
def test_lookup_many_accepts_arrays_and_odd_values(binaries: Binaries, repeat: int) -> None:
    symbols = ElfSymbols.from_path(binaries.lib)
    addresses = [int(a) for a in symbols.table.starts] + [0, 1, 0x7FFF_FFFF_FFFF]
    addresses *= repeat
    expected = [symbols.lookup(a) for a in addresses]

    assert symbols.lookup_many(np.array(addresses, dtype=np.int64)) == expected
    assert symbols.lookup_many(np.array(addresses, dtype=np.uint64)) == expected
    assert symbols.lookup_many([]) == []
    odd = [-1, 1 << 64, (1 << 64) - 1] * repeat + addresses
    assert symbols.lookup_many(odd) == [None, None, None] * repeat + expected
    negative = np.array([-1] * repeat + addresses)
    assert symbols.lookup_many(negative) == [None] * repeat + expected


@pytest.mark.parametrize("name", ["lib", "pie", "nopie"])
def test_lookup_offsets_equals_offset_then_lookup(binaries: Binaries, name: str) -> None:
    path: Path = getattr(binaries, name)
    symbols = ElfSymbols.from_path(path)
    offsets = list(range(0, path.stat().st_size + 0x2000, 7))

    expected = []
    for offset in offsets:
        vaddr = symbols.file_offset_to_vaddr(offset)
        expected.append(None if vaddr is None else symbols.lookup(vaddr))

    assert symbols.lookup_offsets(offsets) == expected
    assert symbols.lookup_offsets(offsets[:10]) == expected[:10]  # the one-by-one path
    assert any(expected)
    assert symbols.lookup_offsets([-5, 1 << 70]) == [None, None]
    assert symbols.lookup_offsets([-5, 1 << 70, *offsets]) == [None, None, *expected]


def test_kernel_lookup_many_equals_lookup(tmp_path: Path) -> None:
    (tmp_path / "kallsyms").write_text(
        "ffffffff81000000 T _stext\nffffffff81000100 t helper\nffffffffc0001000 t mod_fn\t[m]\n"
    )
    (tmp_path / "modules").write_text("")
    kernel = KernelSymbols(tmp_path / "kallsyms", tmp_path / "modules")
    addresses = [0, 0xFFFFFFFF80FFFFFF, 0xFFFFFFFF81000000, 0xFFFFFFFF810000FF]
    addresses += [0xFFFFFFFF81000100, 0xFFFFFFFFC0001000, (1 << 64) - 1]

    assert kernel.lookup_many(addresses) == [kernel.lookup(a) for a in addresses]
    assert kernel.lookup_many(addresses)[2:6] == ["_stext", "_stext", "helper", "mod_fn"]
