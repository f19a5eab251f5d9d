"""Header escape hatches for files with very many sections or segments.

When counts overflow the ELF header, e_shnum is 0, e_shstrndx is SHN_XINDEX
and e_phnum is PN_XNUM, and the real values sit in section header 0
(sh_size, sh_link, sh_info). Rewriting a small binary that way must not
change what it resolves.
"""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING

import pytest

from podflame.symbolizer.elf import ElfError, ElfSymbols

if TYPE_CHECKING:
    from tests.symbolizer.conftest import Binaries

# Elf64_Ehdr offsets and Elf64_Shdr field offsets (little-endian x86-64).
E_SHOFF, E_PHNUM, E_SHNUM, E_SHSTRNDX = 0x28, 0x38, 0x3C, 0x3E
SH_SIZE, SH_LINK, SH_INFO = 0x20, 0x28, 0x2C


def extended(data: bytes) -> bytes:
    out = bytearray(data)
    shoff = struct.unpack_from("<Q", out, E_SHOFF)[0]
    (phnum,), (shnum,), (shstrndx,) = (
        struct.unpack_from("<H", out, at) for at in (E_PHNUM, E_SHNUM, E_SHSTRNDX)
    )
    for at, value in ((E_PHNUM, 0xFFFF), (E_SHNUM, 0), (E_SHSTRNDX, 0xFFFF)):
        struct.pack_into("<H", out, at, value)
    struct.pack_into("<Q", out, shoff + SH_SIZE, shnum)
    struct.pack_into("<II", out, shoff + SH_LINK, shstrndx, phnum)
    return bytes(out)


def test_counts_in_section_zero_give_the_same_table(binaries: Binaries) -> None:
    data = binaries.lib.read_bytes()
    plain = ElfSymbols.from_file(io.BytesIO(data))
    rewritten = ElfSymbols.from_file(io.BytesIO(extended(data)))

    starts = plain.table.starts.tolist()
    assert rewritten.lookup_many(starts) == plain.lookup_many(starts)
    assert "lib_burn" in plain.lookup_many(starts)
    assert (rewritten.segments, rewritten.build_id, rewritten.source) == (
        plain.segments,
        plain.build_id,
        plain.source,
    )


def test_bogus_count_in_section_zero_is_an_elf_error(binaries: Binaries) -> None:
    data = bytearray(extended(binaries.lib.read_bytes()))
    shoff = struct.unpack_from("<Q", data, E_SHOFF)[0]
    struct.pack_into("<Q", data, shoff + SH_SIZE, 1 << 40)
    with pytest.raises(ElfError):
        ElfSymbols.from_file(io.BytesIO(bytes(data)))
