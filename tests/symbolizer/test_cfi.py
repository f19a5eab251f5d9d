"""The CFI decoder (symbolizer/cfi.py) against pyelftools, by hand-made entries, and fuzzed.

pyelftools is the reference: for every row it decodes in a real library, our
table must give the same CFA rule and rbp rule. Hostile CFI (a container's
binary) must give a table, possibly cut short and counted, never an exception,
a hang or an unbounded one.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from podflame.symbolizer import cfi
from podflame.symbolizer.diskcache import DiskCache
from podflame.symbolizer.files import open_regular
from podflame.symbolizer.unwind_tables import UnwindTables

LIBBZ2 = Path("/lib/x86_64-linux-gnu/libbz2.so.1.0")
SCALES = [1, pytest.param(50, marks=pytest.mark.soak, id="soak")]


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _entry(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


def _cie(instructions: bytes) -> bytes:
    # version 1, "zR", code align 1, data align -8, RA 16, augmentation: pcrel|sdata4
    body = b"\0\0\0\0" + b"\x01zR\0" + b"\x01\x78\x10" + b"\x01\x1b" + instructions
    return _entry(body + b"\0" * (-len(body) % 4))


def _fde(offset: int, cie_offset: int, begin: int, size: int, instructions: bytes) -> bytes:
    """An FDE at `offset` in a section at address 0 (pc-relative begin)."""
    pointer_field = offset + 4
    pc_field = offset + 8
    body = struct.pack("<IiI", pointer_field - cie_offset, begin - pc_field, size) + b"\0"
    return _entry(body + instructions)


# CIE: CFA = rsp+8, RA at CFA-8 (what gcc emits)
CIE_INIT = b"\x0c\x07\x08" + b"\x90\x01"


def _section(fde_instructions: list[tuple[int, int, bytes]]) -> bytes:
    data = _cie(CIE_INIT)
    for begin, size, instructions in fde_instructions:
        data += _fde(len(data), 0, begin, size, instructions)
    return data + b"\0\0\0\0"


def test_push_rbp_frame_gives_rsp_then_rbp_rows() -> None:
    # push rbp; mov rbp, rsp; ...; leave
    instructions = (
        b"\x41" + b"\x0e\x10" + b"\x86\x02"  # +1: CFA rsp+16, rbp at CFA-16
        b"\x43" + b"\x0d\x06"  # +3: CFA rbp+16
        b"\x4a" + b"\x0c\x07\x08"  # +10: CFA rsp+8
    )
    table = cfi.decode(_section([(0x1000, 0x20, instructions)]), 0)
    assert table.problems == 0 and not table.truncated
    assert table.row_at(0x1000) == (cfi.CFA_RSP, 8, cfi.RBP_UNCHANGED, 0)
    assert table.row_at(0x1001) == (cfi.CFA_RSP, 16, cfi.RBP_AT_CFA, -16)
    assert table.row_at(0x1004) == (cfi.CFA_RBP, 16, cfi.RBP_AT_CFA, -16)
    assert table.row_at(0x100E) == (cfi.CFA_RSP, 8, cfi.RBP_AT_CFA, -16)
    assert table.row_at(0x1020)[0] == cfi.NONE  # past the FDE: no CFI
    assert table.row_at(0xFFF) is None


def test_plt_expression_remember_restore_and_outermost() -> None:
    plt = bytes([0x0F, 11, 0x77, 0x08, 0x80, 0x00, 0x3F, 0x1A, 0x3B, 0x2A, 0x33, 0x24, 0x22])
    remember = b"\x41\x0e\x10" + b"\x0a" + b"\x41\x0e\x20" + b"\x41\x0b"
    table = cfi.decode(
        _section([(0x100, 0x10, plt), (0x200, 0x10, remember), (0x300, 0x10, b"\x07\x10")]), 0
    )
    assert table.row_at(0x105)[:2] == (cfi.CFA_PLT, 11)
    assert table.row_at(0x201)[:2] == (cfi.CFA_RSP, 16)
    assert table.row_at(0x202)[:2] == (cfi.CFA_RSP, 32)
    assert table.row_at(0x203)[:2] == (cfi.CFA_RSP, 16)  # restored
    assert table.row_at(0x300)[0] == cfi.OUTERMOST
    assert table.row_at(0x1F0)[0] == cfi.NONE  # the gap between FDEs


def test_overlapping_fde_is_dropped_and_counted() -> None:
    table = cfi.decode(_section([(0x100, 0x40, b""), (0x120, 0x40, b"\x0e\x20")]), 0)
    assert table.problems == 1
    assert table.row_at(0x130)[:2] == (cfi.CFA_RSP, 8)


def test_rows_match_pyelftools_on_libbz2() -> None:
    if not LIBBZ2.exists():
        pytest.skip("Debian's libbz2 is not installed")
    with open_regular(LIBBZ2) as stream:
        found = UnwindTables().read(stream)
    assert found is not None and found.table.problems == 0
    compared = 0
    with LIBBZ2.open("rb") as stream:
        for entry in ELFFile(stream).get_dwarf_info().EH_CFI_entries():
            if "initial_location" not in getattr(entry, "header", {}):
                continue  # a CIE or the terminator
            for line in entry.get_decoded().table:
                kind, offset, rbp, rbp_offset = found.table.row_at(line["pc"]) or (-1, 0, 0, 0)
                rule = line["cfa"]
                if rule.expr is not None:
                    assert kind == cfi.CFA_PLT
                    continue
                assert (kind, offset) == ({7: cfi.CFA_RSP, 6: cfi.CFA_RBP}[rule.reg], rule.offset)
                saved = line.get(6)
                if saved is not None and saved.type == "OFFSET":
                    assert (rbp, rbp_offset) == (cfi.RBP_AT_CFA, saved.arg)
                else:
                    assert rbp == cfi.RBP_UNCHANGED
                compared += 1
    assert compared > 400


def test_table_cached_on_disk_by_content(tmp_path: Path) -> None:
    if not LIBBZ2.exists():
        pytest.skip("Debian's libbz2 is not installed")
    disk = DiskCache(tmp_path, 1 << 30)
    with open_regular(LIBBZ2) as stream:
        first = UnwindTables(disk=disk).read(stream)
    fresh = UnwindTables(disk=disk)  # a restarted agent
    with open_regular(LIBBZ2) as stream:
        again = fresh.read(stream)
    assert first is not None and again is not None
    assert fresh.stats.disk_hits == 1 and fresh.stats.built == 0
    assert np.array_equal(first.table.rows, again.table.rows)
    # A copy with other CFI but the same build-id gets a key, and a table, of its own.
    data = bytearray(LIBBZ2.read_bytes())
    with open_regular(LIBBZ2) as stream:
        section = next(s for s in ELFFile(stream).iter_sections() if s.name == ".eh_frame")
        offset = section["sh_offset"] + 0x40
    data[offset] ^= 0xFF
    forged = tmp_path / "forged.so"
    forged.write_bytes(bytes(data))
    with open_regular(forged) as stream:
        other = fresh.read(stream)
    assert other is not None and other.build_id == first.build_id and other.key != first.key
    assert fresh.stats.built == 1


def _check(table: cfi.UnwindTable) -> None:
    pcs = table.rows["pc"]
    assert len(table) <= cfi.MAX_ROWS + 1
    assert bool(np.all(pcs[1:] > pcs[:-1]))  # sorted, one row per address
    assert set(np.unique(table.rows["kind"]).tolist()) <= set(range(6))


@pytest.mark.parametrize("scale", SCALES)
def test_fuzzed_cfi_gives_a_table_never_an_error(scale: int) -> None:
    """Real CFI (libbz2's) with bytes changed, cut, repeated: a sorted, bounded table."""
    if not LIBBZ2.exists():
        pytest.skip("Debian's libbz2 is not installed")
    with LIBBZ2.open("rb") as stream:
        section = next(s for s in ELFFile(stream).iter_sections() if s.name == ".eh_frame")
        real, addr = section.data(), section["sh_addr"]

    @settings(
        max_examples=200 * scale,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.lists(st.tuples(st.integers(0, len(real) - 1), st.integers(0, 255)), max_size=8),
        st.integers(1, len(real)),
        st.booleans(),
    )
    def case(flips: list[tuple[int, int]], cut: int, debug_frame: bool) -> None:
        data = bytearray(real[:cut])
        for offset, value in flips:
            if offset < len(data):
                data[offset] = value
        _check(cfi.decode(bytes(data), addr, debug_frame=debug_frame))

    case()


@pytest.mark.parametrize("scale", SCALES)
def test_hostile_entries(scale: int) -> None:
    """Generated entries: lengths, CIE pointers and instruction streams of any value."""

    @settings(
        max_examples=200 * scale,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.lists(
            st.tuples(st.integers(0, 1 << 20), st.integers(0, 1 << 16), st.binary(max_size=64)),
            max_size=20,
        ),
        st.integers(-(1 << 31), (1 << 31) - 1),
        st.binary(max_size=16),
    )
    def case(fdes: list[tuple[int, int, bytes]], cie_pointer: int, cie_init: bytes) -> None:
        data = _cie(cie_init)
        for begin, size, instructions in fdes:
            data += _fde(len(data), 0, begin, size, instructions)
        # One FDE whose CIE pointer is anything (itself, past the section, another FDE).
        data += _entry(struct.pack("<iiI", cie_pointer, 0, 16) + b"\0")
        _check(cfi.decode(data, 0))

    case()


def test_huge_row_counts_are_cut() -> None:
    """An FDE of a billion one-byte advances costs at most MAX_INSTRUCTIONS; many FDEs are
    cut at the table's row limit and flagged."""
    many = [(0x1000 + 16 * i, 16, b"\x41\x0e\x10\x41\x0e\x08") for i in range(3000)]
    table = cfi.decode(_section(many), 0, max_rows=1000)
    assert table.truncated and len(table) <= 1001
    endless = b"\x41\x0e\x10\x41\x0e\x08" * 20000
    table = cfi.decode(_section([(0x1000, 1 << 30, endless)]), 0)
    assert table.problems == 1 and len(table) == 0
