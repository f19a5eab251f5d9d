"""ElfSymbols on compiled binaries, checked against binutils and pyelftools."""

from __future__ import annotations

import io
import random
import re
import struct
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from podflame.symbolizer.elf import ElfError, ElfSymbols

if TYPE_CHECKING:
    from tests.symbolizer.conftest import Binaries


def nm(path: Path) -> dict[str, tuple[int, int]]:
    """name -> (address, size) of the sized text symbols binutils sees."""
    out = subprocess.run(["nm", "-S", str(path)], capture_output=True, text=True, check=True)
    found = {}
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "Tt":
            found[fields[3]] = (int(fields[0], 16), int(fields[1], 16))
    return found


def readelf_build_id(path: Path) -> str:
    out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True, check=True)
    match = re.search(r"Build ID: ([0-9a-f]+)", out.stdout)
    assert match is not None
    return match.group(1)


@pytest.mark.parametrize("name", ["pie", "nopie", "lib"])
def test_every_function_resolves_over_its_whole_extent(binaries: Binaries, name: str) -> None:
    path: Path = getattr(binaries, name)
    symbols = ElfSymbols.from_path(path)
    functions = {n: v for n, v in nm(path).items() if n in {"burn_a", "burn_static", "lib_burn"}}
    assert functions, "the fixture lost its functions"

    for function, (address, size) in functions.items():
        assert symbols.lookup(address) == function
        assert symbols.lookup(address + size - 1) == function
        assert symbols.lookup(address + size) != function
    assert symbols.source == ".symtab"
    assert symbols.build_id == readelf_build_id(path)


def test_exported_name_wins_over_local_alias(binaries: Binaries) -> None:
    address, _ = nm(binaries.lib)["lib_burn_local"]
    assert nm(binaries.lib)["lib_burn"][0] == address
    assert ElfSymbols.from_path(binaries.lib).lookup(address) == "lib_burn"


@pytest.mark.parametrize("name", ["pie", "nopie", "lib"])
def test_file_offset_to_vaddr_matches_pyelftools(binaries: Binaries, name: str) -> None:
    path: Path = getattr(binaries, name)
    symbols = ElfSymbols.from_path(path)
    with path.open("rb") as stream:
        elf = ELFFile(stream)
        for function, (address, _) in nm(path).items():
            if function.startswith(("burn_", "lib_")):
                offset = next(elf.address_offsets(address))
                assert symbols.file_offset_to_vaddr(offset) == address
    assert symbols.file_offset_to_vaddr(path.stat().st_size + 0x10000) is None


def test_stripped_library_falls_back_to_dynsym(binaries: Binaries) -> None:
    symbols = ElfSymbols.from_path(binaries.stripped_dir / "libburn.so")
    full = nm(binaries.lib)

    assert symbols.source == ".dynsym"
    assert symbols.lookup(full["lib_burn"][0] + 3) == "lib_burn"
    assert symbols.lookup(full["lib_static"][0]) is None  # not exported: no name, no guess
    assert symbols.build_id == readelf_build_id(binaries.lib)


def test_stripped_executable_names_nothing_wrongly(binaries: Binaries) -> None:
    symbols = ElfSymbols.from_path(binaries.stripped_dir / "target_pie")
    full = nm(binaries.pie)

    for function in ("burn_a", "burn_b", "burn_static", "main"):
        address, size = full[function]
        assert {symbols.lookup(a) for a in range(address, address + size)} == {None}


def test_zero_sized_symbols_reach_only_to_the_next_symbol(binaries: Binaries) -> None:
    symbols = ElfSymbols.from_path(binaries.unsized)
    table = {}
    with binaries.unsized.open("rb") as stream:
        symtab = ELFFile(stream).get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        for sym in symtab.iter_symbols():
            table[sym.name] = sym["st_value"]
    unsized, sized, after = table["asm_unsized"], table["zz_sized"], table["asm_after"]
    assert table["aa_unsized"] == sized and unsized < sized < after

    assert [symbols.lookup(a) for a in range(unsized, sized)] == ["asm_unsized"] * (sized - unsized)
    assert symbols.lookup(sized) == "zz_sized"  # a sized symbol beats an unsized alias
    assert symbols.lookup(after) == "asm_after"


@pytest.mark.parametrize("keep", [0, 3, 16, 63, 64, 1000, 5000, -1])
def test_truncated_file_raises_elf_error(binaries: Binaries, keep: int) -> None:
    data = binaries.pie.read_bytes()
    with pytest.raises(ElfError):
        ElfSymbols.from_file(io.BytesIO(data[:keep]))


def test_not_elf_raises_elf_error() -> None:
    with pytest.raises(ElfError):
        ElfSymbols.from_file(io.BytesIO(b"#!/bin/sh\necho hello\n" * 100))
    with pytest.raises(ElfError):
        ElfSymbols.read_build_id(io.BytesIO(b""))


def test_bogus_header_fields_raise_elf_error(binaries: Binaries) -> None:
    """Targeted damage: section table far past the end; a zero symbol entry size."""
    data = bytearray(binaries.pie.read_bytes())
    far = bytearray(data)
    struct.pack_into("<Q", far, 0x28, 1 << 40)  # e_shoff
    with pytest.raises(ElfError):
        ElfSymbols.from_file(io.BytesIO(bytes(far)))

    with binaries.pie.open("rb") as stream:
        elf = ELFFile(stream)
        index = elf.get_section_index(".symtab")
        assert index is not None
        header_at = elf["e_shoff"] + index * elf["e_shentsize"]
    struct.pack_into("<Q", data, header_at + 0x38, 0)  # sh_entsize
    with pytest.raises(ElfError):
        ElfSymbols.from_file(io.BytesIO(bytes(data)))


def test_random_damage_raises_nothing_but_elf_error(binaries: Binaries) -> None:
    """Garbage over random parts of a real binary: a table or ElfError, nothing else."""
    original = binaries.lib.read_bytes()
    rng = random.Random(1234)
    outcomes = {"parsed": 0, "ElfError": 0}
    for _ in range(300):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            start = rng.randrange(len(data))
            length = rng.choice([1, 4, 8, 64, 512])
            data[start : start + length] = rng.randbytes(length)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)) :]
        try:
            symbols = ElfSymbols.from_file(io.BytesIO(bytes(data)))
            symbols.lookup(0x1100)
            outcomes["parsed"] += 1
        except ElfError:
            outcomes["ElfError"] += 1
    assert outcomes["parsed"] > 0 and outcomes["ElfError"] > 0, outcomes


def test_system_libc_agrees_with_nm() -> None:
    """Every defined dynamic function of libc resolves to one of its names at that address."""
    path = Path("/usr/lib/x86_64-linux-gnu/libc.so.6")
    if not path.exists():
        pytest.skip(f"no {path}")
    symbols = ElfSymbols.from_path(path)
    out = subprocess.run(["nm", "-D", "-S", "--defined-only", str(path)], capture_output=True)
    aliases: dict[int, set[str]] = {}
    for line in out.stdout.decode().splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "TWi" and int(fields[1], 16) > 0:
            aliases.setdefault(int(fields[0], 16), set()).add(fields[3].split("@")[0])

    assert len(aliases) > 1000
    for address, names in aliases.items():
        assert symbols.lookup(address) in names
    malloc = next(a for a, names in aliases.items() if "malloc" in names)
    assert symbols.lookup(malloc) == "malloc"  # not __libc_malloc
