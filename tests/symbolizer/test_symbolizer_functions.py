"""select_functions (vectorized) against a plain per-symbol reference, on random tables.

The reference is the earlier implementation's loop: filter each entry, sort
candidate tuples whose order is the preference order, keep the first per
address, stretch zero-sized ones. Random tables are built to hit every rule:
aliases at one address, names differing only in underscores or at the end,
bogus name offsets and section indices, zero sizes, addresses above 2**48.
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from podflame.symbolizer.elf import sym_dtype
from podflame.symbolizer.functions import select_functions
from podflame.symbolizer.symtab import SymbolTable

Entry = tuple[int, int, int, int, int]  # name offset, info, shndx, value, size

NAMES = [b"f", b"_f", b"__f", b"___f", b"g", b"_ZN3fooC1Ev", b"_ZN3fooC2Ev", b"__" * 40 + b"x"]


def reference(
    entries: list[Entry], strtab: bytes, section_ends: list[int], keep_unsized: bool
) -> list[tuple[int, int, str]]:
    """(start, end, name) per address, as the per-symbol implementation computed them."""
    bind_rank = {1: 0, 2: 1, 0: 2}
    found = []
    for name_offset, info, shndx, value, size in entries:
        if (info & 0xF) not in (2, 10) or not value or not 0 < shndx < len(section_ends):
            continue
        if size or keep_unsized:
            end = strtab.find(b"\0", name_offset)
            name = strtab[name_offset : end if end >= 0 else len(strtab)]
            if name:
                under = min(len(name) - len(name.lstrip(b"_")), 32)
                rank = bind_rank.get(info >> 4, 3)
                found.append((value, not size, under, rank, name, size, section_ends[shndx]))
    found.sort()
    unique = [c for i, c in enumerate(found) if i == 0 or found[i - 1][0] != c[0]]
    out = []
    for i, (start, _, _, _, name, size, limit) in enumerate(unique):
        end = start + size
        if size == 0:
            end = min(unique[i + 1][0] if i + 1 < len(unique) else limit, limit)
            if end <= start:
                continue
        out.append((start, min(end, (1 << 64) - 1), name.decode()))
    return out


def random_table(rng: random.Random, high: bool, bits: int) -> tuple[list[Entry], bytes, list[int]]:
    strtab = b"\0"
    offsets = []
    for name in NAMES:
        offsets.append(len(strtab))
        strtab += name + b"\0"
    offsets += [0, len(strtab) + 5, offsets[5] + 4]  # empty, past the end, mid-string (suffix)
    strtab += b"unterminated"
    offsets.append(len(strtab) - 4)
    base = (1 << 50) if high and bits == 64 else 0x1000
    section_ends = [0] + [base + rng.randrange(0x2000) for _ in range(4)]
    addresses = [0] + [base + rng.randrange(0x1000) for _ in range(40)]
    entries = []
    for _ in range(rng.randrange(1, 300)):
        info = rng.choice([0, 1, 2, 10]) | rng.choice([0, 1, 2, 10]) << 4
        shndx = rng.choice([0, 1, 2, 3, 4, 5, 0xFFF1])
        size = rng.choice([0, 0, 1, 16, 0x100])
        entries.append((rng.choice(offsets), info, shndx, rng.choice(addresses), size))
    return entries, strtab, section_ends


def as_table(table: SymbolTable) -> list[tuple[int, int, str]]:
    assert table.ends is not None
    names = [table.lookup(a) for a in table.starts.tolist()]
    return list(zip(table.starts.tolist(), table.ends.tolist(), names, strict=True))


@pytest.mark.parametrize("bits", [64, 32])
@pytest.mark.parametrize("little", [True, False])
@pytest.mark.parametrize("high", [False, True])
def test_matches_the_per_symbol_reference(bits: int, little: bool, high: bool) -> None:
    rng = random.Random(bits * 4 + little * 2 + high)
    dtype = sym_dtype(bits, little)
    for _ in range(200):
        entries, strtab, section_ends = random_table(rng, high, bits)
        keep_unsized = rng.random() < 0.7
        array = np.array([_record(e, dtype) for e in entries], dtype=dtype)
        ends = np.array(section_ends, dtype=np.uint64)

        table = select_functions(array, strtab, ends, keep_unsized=keep_unsized)

        assert as_table(table) == reference(entries, strtab, section_ends, keep_unsized)


def _record(entry: Entry, dtype: np.dtype[np.void]) -> tuple[int, ...]:
    name, info, shndx, value, size = entry
    fields = {"name": name, "info": info, "other": 0, "shndx": shndx, "value": value, "size": size}
    assert dtype.names is not None
    return tuple(fields[f] for f in dtype.names)


def test_aliases_decided_by_name_only_when_everything_else_ties() -> None:
    """C++ constructors C1/C2 at one address: same binding, size, underscores."""
    strtab = b"\0_ZN3fooC2Ev\0_ZN3fooC1Ev\0__ZN3fooC0Ev\0"
    dtype = sym_dtype(64, True)
    global_func = 0x12
    # name, info, other, shndx, value, size; the third has more underscores and
    # loses despite its "0".
    rows = [(name, global_func, 0, 1, 0x1000, 8) for name in (1, 13, 25)]
    entries = np.array(rows, dtype=dtype)
    table = select_functions(entries, strtab, np.array([0, 0x2000], np.uint64), keep_unsized=True)
    assert table.lookup(0x1000) == "_ZN3fooC1Ev"


@pytest.mark.parametrize("fill", [b"a", b"_"])
def test_hostile_string_table_without_nul_finishes_fast(fill: bytes) -> None:
    """Tied aliases into 4 MB without a NUL: name comparison and underscore count are capped."""
    strtab = b"\0" + fill * (4 << 20)
    dtype = sym_dtype(64, True)
    rows = [(offset, 0x12, 0, 1, 0x1000, 8) for offset in (1, 2, 3)] * 50
    entries = np.array(rows, dtype=dtype)
    started = time.perf_counter()

    table = select_functions(entries, strtab, np.array([0, 0x2000], np.uint64), keep_unsized=True)

    assert time.perf_counter() - started < 5
    assert len(table) == 1
    assert table.name_offsets.tolist() == [1]  # equal as far as compared: table order decides
