"""Call-frame information (.eh_frame, .debug_frame) to a compact unwind table (x86-64).

For every address the table says how to find the caller's frame: the
canonical frame address (CFA) is rsp or rbp plus an offset (or the PLT
expression), the return address is at CFA-8, and rbp is either unchanged or
saved at CFA plus an offset. Rows are sorted by address; a row holds from its
address to the next row's. That is what the BPF unwinder (bpf/unwind.h) looks
up; anything it cannot follow is a row of kind UNSUPPORTED (the walk stops)
and an address no FDE covers is a row of kind NONE (the walk takes a frame
pointer step there).

Why a decoder of our own rather than pyelftools: pyelftools decoded libc's
150 KB .eh_frame in 1.4 s (about 9.5 s per MB), a 400 MB library in 511 s,
and raised on single FDEs it could not format. This one reads only what the
table needs, runs a CIE's initial instructions once, and is bounded for
hostile input (a binary's CFI comes from a container): every count and
length is checked against the section, loops are bounded by the bytes they
consume, and a table is cut at MAX_ROWS. What went wrong is counted in the
table (`problems`), never raised.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

# Row kinds, as in bpf/unwind.h.
NONE = 0  # no CFI covers the address: a frame-pointer step
CFA_RSP = 1  # CFA = rsp + cfa_offset
CFA_RBP = 2  # CFA = rbp + cfa_offset
CFA_PLT = 3  # CFA = rsp + 8, + 8 more if (rip & 15) >= cfa_offset (the PLT expression)
OUTERMOST = 4  # the return address is undefined: the stack ends here
UNSUPPORTED = 5  # a rule the unwinder cannot follow: the walk stops
# rbp rules.
RBP_UNCHANGED = 0
RBP_AT_CFA = 1  # saved at CFA + rbp_offset

ROW_DTYPE = np.dtype(
    [("pc", "<u8"), ("cfa_offset", "<i4"), ("rbp_offset", "<i2"), ("kind", "u1"), ("rbp", "u1")]
)
assert ROW_DTYPE.itemsize == 16  # struct unwind_row in bpf/unwind.h

MAX_ROWS = 1 << 20  # per table; past it the table is cut (truncated)
MAX_INSTRUCTIONS = 1 << 16  # per FDE (real ones have a few dozen)
MAX_STATE_STACK = 64  # DW_CFA_remember_state nesting

_RBP, _RSP, _RA = 6, 7, 16  # DWARF register numbers on x86-64
# DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_lit<N>; DW_OP_ge;
# DW_OP_lit3; DW_OP_shl; DW_OP_plus: the CFA of a PLT entry, N 10 or 11.
_PLT_HEAD = bytes([0x77, 0x08, 0x80, 0x00, 0x3F, 0x1A])
_PLT_TAIL = bytes([0x2A, 0x33, 0x24, 0x22])
_DW_OP_LIT0 = 0x30


class CfiError(Exception):
    """Malformed CFI: the entry being read is dropped (counted, never raised out)."""


@dataclass
class UnwindTable:
    """Rows sorted by pc (link-time addresses), adjacent equal rules merged."""

    rows: npt.NDArray[np.void]
    fdes: int = 0  # FDEs read
    problems: int = 0  # entries dropped as malformed, overlapping or unsupported
    truncated: bool = False  # cut at MAX_ROWS or at a malformed entry header

    @property
    def nbytes(self) -> int:
        return int(self.rows.nbytes)

    def __len__(self) -> int:
        return len(self.rows)

    def row_at(self, pc: int) -> tuple[int, int, int, int] | None:
        """(kind, cfa_offset, rbp rule, rbp_offset) at `pc`; None before the first row."""
        index = int(np.searchsorted(self.rows["pc"], np.uint64(pc), side="right")) - 1
        if index < 0:
            return None
        row = self.rows[index]
        return int(row["kind"]), int(row["cfa_offset"]), int(row["rbp"]), int(row["rbp_offset"])


@dataclass(frozen=True)
class _Rules:
    """The rules in force at one address (the parts the table keeps)."""

    kind: int
    cfa_offset: int
    rbp: int = RBP_UNCHANGED
    rbp_offset: int = 0


@dataclass
class _State:
    cfa_reg: int = _RSP
    cfa_offset: int = 0
    cfa_kind: int = CFA_RSP  # CFA_PLT, UNSUPPORTED (another register or expression)
    rbp: int = RBP_UNCHANGED
    rbp_offset: int = 0
    ra_ok: bool = True  # the return address is at CFA-8
    ra_undefined: bool = False

    def copy(self) -> _State:
        return _State(**vars(self))

    def rules(self) -> _Rules:
        if self.ra_undefined:
            return _Rules(OUTERMOST, 0)
        if not self.ra_ok or self.cfa_kind == UNSUPPORTED:
            return _Rules(UNSUPPORTED, 0)
        rbp_offset = self.rbp_offset if self.rbp == RBP_AT_CFA else 0
        if not (-(1 << 31) <= self.cfa_offset < 1 << 31 and -(1 << 15) <= rbp_offset < 1 << 15):
            return _Rules(UNSUPPORTED, 0)
        if self.cfa_kind == CFA_PLT:
            return _Rules(CFA_PLT, self.cfa_offset)
        kind = {_RSP: CFA_RSP, _RBP: CFA_RBP}.get(self.cfa_reg, UNSUPPORTED)
        return _Rules(kind, self.cfa_offset, self.rbp, rbp_offset)


@dataclass
class _Cie:
    code_align: int
    data_align: int
    ra_register: int
    fde_encoding: int
    has_augmentation_data: bool
    initial: _State
    address_size: int = 8


class _Reader:
    """A cursor over bytes that raises CfiError at the end instead of reading past it."""

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > self.end:
            raise CfiError("read past the end of the entry")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u8(self) -> int:
        if self.pos >= self.end:
            raise CfiError("read past the end of the entry")
        self.pos += 1
        return self.data[self.pos - 1]

    def unpack(self, fmt: str) -> int:
        return int(struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0])

    def uleb(self) -> int:
        result = shift = 0
        while True:
            byte = self.u8()
            if shift < 64:  # longer encodings are legal but the high bits are dropped
                result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result & ((1 << 64) - 1)

    def sleb(self) -> int:
        result = shift = 0
        while True:
            byte = self.u8()
            if shift < 64:
                result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        result &= (1 << 64) - 1
        if shift < 64 and byte & 0x40:
            result |= -(1 << shift) & ((1 << 64) - 1)
        return result - (1 << 64) if result >= 1 << 63 else result

    def cstring(self) -> bytes:
        nul = self.data.find(b"\0", self.pos, self.end)
        if nul < 0:
            raise CfiError("unterminated string")
        text = self.data[self.pos : nul]
        self.pos = nul + 1
        return text

    def pointer(self, encoding: int, section_addr: int) -> int:
        """A pointer in DW_EH_PE `encoding` (pcrel relative to its own address)."""
        if encoding == 0xFF:
            raise CfiError("omitted pointer")
        here = section_addr + self.pos
        fmt = {0x00: "<Q", 0x02: "<H", 0x03: "<I", 0x04: "<Q", 0x0A: "<h", 0x0B: "<i"}
        fmt.update({0x0C: "<q"})
        low = encoding & 0x0F
        if low == 0x01:
            value = self.uleb()
        elif low == 0x09:
            value = self.sleb()
        elif low in fmt:
            value = self.unpack(fmt[low])
        else:
            raise CfiError(f"pointer encoding {encoding:#x}")
        application = encoding & 0x70
        if application == 0x10:
            value += here
        elif application not in (0x00,):
            raise CfiError(f"pointer application {application:#x}")  # textrel, datarel: not ELF
        return value & ((1 << 64) - 1)


@dataclass
class _Parse:
    """One section's walk: CIEs by offset, the FDEs' rows, what went wrong."""

    data: bytes
    section_addr: int
    debug_frame: bool
    cies: dict[int, _Cie | None] = field(default_factory=dict)
    problems: int = 0
    truncated: bool = False
    fdes: int = 0


def decode(
    data: bytes, section_addr: int, *, debug_frame: bool = False, max_rows: int = MAX_ROWS
) -> UnwindTable:
    """The unwind table of one .eh_frame (or .debug_frame) section's bytes.

    `section_addr` is the section's link-time address (pc-relative pointers are
    relative to it). Never raises on bad input: see the module's docstring.
    """
    parse = _Parse(data, section_addr, debug_frame)
    ranges: list[tuple[int, int, list[tuple[int, _Rules]]]] = []
    rows = 0
    for begin, end, fde_rows in _fdes(parse):
        ranges.append((begin, end, fde_rows))
        rows += len(fde_rows) + 1
        if rows > max_rows:
            parse.truncated = True
            break
    table = _table(ranges, parse)
    table.truncated = table.truncated or parse.truncated
    return table


def merge(primary: UnwindTable, secondary: UnwindTable) -> UnwindTable:
    """`primary`, with `secondary`'s rows where `primary` has none (NONE rows and gaps).

    For .debug_frame beside .eh_frame: .eh_frame wins wherever it covers an address.
    """
    if len(secondary) == 0:
        return primary
    if len(primary) == 0:
        return secondary
    covered = _covered_ranges(primary.rows)
    keep = []
    for begin, end in _covered_ranges(secondary.rows):
        if not any(b < end and begin < e for b, e in covered):
            keep.append((begin, end))
    extra = [r for r in secondary.rows if any(b <= int(r["pc"]) < e for b, e in keep)]
    ends = [np.array([(e, 0, 0, NONE, 0)], dtype=ROW_DTYPE) for _, e in keep]
    rows = np.concatenate([primary.rows, np.array(extra, dtype=ROW_DTYPE), *ends])
    rows = rows[np.argsort(rows["pc"], kind="stable")]
    return UnwindTable(
        _merged(rows),
        fdes=primary.fdes + secondary.fdes,
        problems=primary.problems + secondary.problems,
        truncated=primary.truncated or secondary.truncated,
    )


def _covered_ranges(rows: npt.NDArray[np.void]) -> list[tuple[int, int]]:
    """[begin, end) ranges of rows that are not NONE."""
    ranges = []
    start = None
    for row in rows:
        pc, covered = int(row["pc"]), int(row["kind"]) != NONE
        if covered and start is None:
            start = pc
        elif not covered and start is not None:
            ranges.append((start, pc))
            start = None
    return ranges


def _fdes(parse: _Parse) -> Iterator[tuple[int, int, list[tuple[int, _Rules]]]]:
    """(begin, end, rows) of every well-formed FDE, in section order."""
    data, pos = parse.data, 0
    while pos + 4 <= len(data):
        start = pos
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if length == 0:
            if parse.debug_frame:
                continue
            return  # .eh_frame's terminator
        if length == 0xFFFFFFFF:
            if pos + 8 > len(data):
                break
            (length,) = struct.unpack_from("<Q", data, pos)
            pos += 8
            id_size = 8
        else:
            id_size = 4
        end = pos + length
        if length < id_size or end > len(data):
            parse.truncated = True  # the rest cannot be found: stop here
            return
        try:
            fde = _entry(parse, start, pos, end, id_size)
        except CfiError:
            parse.problems += 1
            fde = None
        if fde is not None:
            yield fde
        pos = end
    if pos != len(data):
        parse.truncated = True


def _entry(
    parse: _Parse, start: int, pos: int, end: int, id_size: int
) -> tuple[int, int, list[tuple[int, _Rules]]] | None:
    """An FDE's range and rows; None for a CIE (read when an FDE refers to it)."""
    reader = _Reader(parse.data, pos, end)
    cie_id = reader.unpack("<Q" if id_size == 8 else "<I")
    if parse.debug_frame:
        if cie_id == (1 << (8 * id_size)) - 1:
            return None
        cie_offset = cie_id
    else:
        if cie_id == 0:
            return None
        cie_offset = pos - cie_id
    cie = _cie(parse, cie_offset)
    if cie is None:
        raise CfiError("an FDE without a readable CIE")
    if parse.debug_frame:
        begin = reader.unpack("<Q" if cie.address_size == 8 else "<I")
        size = reader.unpack("<Q" if cie.address_size == 8 else "<I")
    else:
        begin = reader.pointer(cie.fde_encoding, parse.section_addr)
        size = reader.pointer(cie.fde_encoding & 0x0F, parse.section_addr)
        if cie.has_augmentation_data:
            reader.take(reader.uleb())
    parse.fdes += 1
    if size == 0 or begin + size >= 1 << 64:
        raise CfiError("empty or wrapping range")
    rows = _run(reader, cie, begin, begin + size, parse)
    return begin, begin + size, rows


def _cie(parse: _Parse, offset: int) -> _Cie | None:
    """The CIE at `offset` (cached, None if malformed or not a CIE)."""
    if offset in parse.cies:
        return parse.cies[offset]
    parse.cies[offset] = None  # a CIE that refers to itself fails once
    try:
        cie = _read_cie(parse, offset)
    except CfiError:
        parse.problems += 1
        cie = None
    parse.cies[offset] = cie
    return cie


def _read_cie(parse: _Parse, offset: int) -> _Cie:
    data = parse.data
    if not 0 <= offset <= len(data) - 8:
        raise CfiError("CIE pointer outside the section")
    (length,) = struct.unpack_from("<I", data, offset)
    pos, id_size = offset + 4, 4
    if length == 0xFFFFFFFF:
        (length,) = struct.unpack_from("<Q", data, pos) if pos + 8 <= len(data) else (0,)
        pos, id_size = pos + 8, 8
    end = pos + length
    if length < id_size or end > len(data):
        raise CfiError("CIE length")
    reader = _Reader(data, pos, end)
    cie_id = reader.unpack("<Q" if id_size == 8 else "<I")
    expected = (1 << (8 * id_size)) - 1 if parse.debug_frame else 0
    if cie_id != expected:
        raise CfiError("not a CIE")
    version = reader.u8()
    augmentation = reader.cstring()
    address_size = 8
    if version >= 4:
        address_size = reader.u8()
        reader.u8()  # segment selector size
        if address_size not in (4, 8):
            raise CfiError("address size")
    if augmentation.startswith(b"eh"):
        reader.take(8)
    code_align, data_align = reader.uleb(), reader.sleb()
    ra_register = reader.u8() if version == 1 else reader.uleb()
    fde_encoding, has_data = 0x00, False
    if augmentation.startswith(b"z"):
        has_data = True
        size = reader.uleb()
        aug = _Reader(data, reader.pos, reader.pos + size)
        reader.take(size)
        for letter in augmentation[1:]:
            if letter == ord("R"):
                fde_encoding = aug.u8()
            elif letter == ord("L"):
                aug.u8()
            elif letter == ord("P"):
                aug.pointer(aug.u8() & 0x7F, parse.section_addr)  # indirect: the address only
            elif letter not in b"SB":
                break  # unknown: the augmentation data's length lets us skip the rest
    elif augmentation not in (b"", b"eh"):
        raise CfiError("augmentation without a length")
    cie = _Cie(code_align, data_align, ra_register, fde_encoding, has_data, _State(), address_size)
    cie.initial = _initial_state(reader, cie, parse)
    return cie


def _initial_state(reader: _Reader, cie: _Cie, parse: _Parse) -> _State:
    """The state the CIE's initial instructions leave (they cannot advance the address)."""
    rows: list[tuple[int, _Rules]] = []
    state = _State(ra_ok=False)  # the return address must be given a rule
    _execute(reader, cie, state, _State(ra_ok=False), 0, 1 << 64, rows, parse)
    return state


def _run(
    reader: _Reader, cie: _Cie, begin: int, end: int, parse: _Parse
) -> list[tuple[int, _Rules]]:
    state = cie.initial.copy()
    rows: list[tuple[int, _Rules]] = []
    loc = _execute(reader, cie, state, cie.initial, begin, end, rows, parse)
    rows.append((loc, state.rules()))
    return [(pc, rules) for pc, rules in rows if begin <= pc < end]


def _execute(
    reader: _Reader,
    cie: _Cie,
    state: _State,
    initial: _State,
    loc: int,
    end: int,
    rows: list[tuple[int, _Rules]],
    parse: _Parse,
) -> int:
    """Run CFA instructions to the entry's end, appending (address, rules) at each advance."""
    saved: list[_State] = []
    for _ in range(MAX_INSTRUCTIONS):
        if reader.pos >= reader.end:
            return loc
        op = reader.u8()
        high, low = op & 0xC0, op & 0x3F
        if high == 0x40 or op in (0x01, 0x02, 0x03, 0x04):
            if high == 0x40:
                delta = low * cie.code_align
            elif op == 0x01:
                new = reader.pointer(cie.fde_encoding, parse.section_addr)
                delta = new - loc
            else:
                delta = reader.unpack({0x02: "<B", 0x03: "<H", 0x04: "<I"}[op]) * cie.code_align
            if delta < 0:
                raise CfiError("DW_CFA_set_loc backwards")
            rows.append((loc, state.rules()))
            loc += delta
            if loc >= end:
                return loc
        elif high == 0x80:
            _set_offset(state, cie, low, reader.uleb() * cie.data_align)
        elif high == 0xC0:
            _restore(state, initial, low)
        else:
            _other(op, reader, cie, state, initial, saved)
    raise CfiError("too many instructions")


def _other(
    op: int, reader: _Reader, cie: _Cie, state: _State, initial: _State, saved: list[_State]
) -> None:
    if op == 0x00:  # nop
        return
    if op in (0x05, 0x11, 0x14, 0x15):  # offset_extended(_sf), val_offset(_sf)
        reg = reader.uleb()
        value = reader.uleb() if op in (0x05, 0x14) else reader.sleb()
        if op in (0x14, 0x15):
            _set_other(state, reg)  # a value rule: not a saved register
        else:
            _set_offset(state, cie, reg, value * cie.data_align)
    elif op == 0x06:
        _restore(state, initial, reader.uleb())
    elif op in (0x07, 0x08):  # undefined, same_value
        reg = reader.uleb()
        if reg == cie.ra_register:
            state.ra_undefined, state.ra_ok = op == 0x07, op != 0x07 and state.ra_ok
        elif reg == _RBP:
            state.rbp = RBP_UNCHANGED
    elif op == 0x09:  # register
        _set_other(state, reader.uleb())
        reader.uleb()
    elif op == 0x0A:
        if len(saved) >= MAX_STATE_STACK:
            raise CfiError("remember_state nested too deep")
        saved.append(state.copy())
    elif op == 0x0B:
        if not saved:
            raise CfiError("restore_state without remember_state")
        vars(state).update(vars(saved.pop()))
    elif op in (0x0C, 0x12):  # def_cfa, def_cfa_sf
        state.cfa_reg = reader.uleb()
        offset = reader.uleb() if op == 0x0C else reader.sleb() * cie.data_align
        state.cfa_offset, state.cfa_kind = offset, CFA_RSP
    elif op == 0x0D:
        state.cfa_reg, state.cfa_kind = reader.uleb(), CFA_RSP
    elif op in (0x0E, 0x13):
        state.cfa_offset = reader.uleb() if op == 0x0E else reader.sleb() * cie.data_align
    elif op == 0x0F:  # def_cfa_expression
        _cfa_expression(state, reader.take(reader.uleb()))
    elif op in (0x10, 0x16):  # expression, val_expression
        _set_other(state, reader.uleb())
        reader.take(reader.uleb())
    elif op == 0x2E:  # GNU_args_size
        reader.uleb()
    elif op == 0x2F:  # GNU_negative_offset_extended
        reg = reader.uleb()
        _set_offset(state, cie, reg, -reader.uleb() * cie.data_align)
    else:
        raise CfiError(f"unknown CFA instruction {op:#x}")


def _cfa_expression(state: _State, expression: bytes) -> None:
    if (
        len(expression) == 11
        and expression.startswith(_PLT_HEAD)
        and expression.endswith(_PLT_TAIL)
        and _DW_OP_LIT0 <= expression[6] <= _DW_OP_LIT0 + 15
    ):
        state.cfa_kind, state.cfa_offset = CFA_PLT, expression[6] - _DW_OP_LIT0
    else:
        state.cfa_kind = UNSUPPORTED


def _set_offset(state: _State, cie: _Cie, reg: int, offset: int) -> None:
    if reg == cie.ra_register:
        state.ra_ok, state.ra_undefined = offset == -8, False
    elif reg == _RBP:
        state.rbp, state.rbp_offset = RBP_AT_CFA, offset


def _set_other(state: _State, reg: int) -> None:
    """A rule the table cannot express: fatal for the return address, for rbp the
    walk goes on as if unchanged (only a frame-pointer step after it would read it)."""
    if reg == _RA:
        state.ra_ok = False
    elif reg == _RBP:
        state.rbp = RBP_UNCHANGED


def _restore(state: _State, initial: _State, reg: int) -> None:
    if reg == _RA:
        state.ra_ok, state.ra_undefined = initial.ra_ok, initial.ra_undefined
    elif reg == _RBP:
        state.rbp, state.rbp_offset = initial.rbp, initial.rbp_offset


def _table(ranges: list[tuple[int, int, list[tuple[int, _Rules]]]], parse: _Parse) -> UnwindTable:
    """Rows of FDEs sorted by address, overlaps dropped, gaps marked NONE, equal rows merged."""
    ranges.sort(key=lambda r: r[0])
    out: list[tuple[int, int, int, int, int]] = []
    last_end = 0
    for begin, end, rows in ranges:
        if begin < last_end:
            parse.problems += 1  # overlaps the previous FDE: the first one wins
            continue
        for pc, rules in rows:
            out.append((pc, rules.cfa_offset, rules.rbp_offset, rules.kind, rules.rbp))
        out.append((end, 0, 0, NONE, 0))
        last_end = end
    rows_array = np.array(out, dtype=ROW_DTYPE)
    table = UnwindTable(_merged(rows_array), fdes=parse.fdes, problems=parse.problems)
    return table


def _merged(rows: npt.NDArray[np.void]) -> npt.NDArray[np.void]:
    """Rows whose rules differ from the row before (same pc: the last one wins)."""
    if len(rows) == 0:
        return rows
    pcs = rows["pc"]
    last_of_pc = np.ones(len(rows), dtype=bool)
    last_of_pc[:-1] = pcs[1:] != pcs[:-1]
    rows = rows[last_of_pc]
    rules = rows[["cfa_offset", "rbp_offset", "kind", "rbp"]]
    changed = np.ones(len(rows), dtype=bool)
    changed[1:] = rules[1:] != rules[:-1]
    return rows[changed]
