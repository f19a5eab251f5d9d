"""Code byte offset to source line, for each of CPython's line table formats.

All three are the interpreter's bytes, read from a process we do not trust: decoding
stops at the end of the table or at a truncated entry and answers None, never raises.
"""

from __future__ import annotations

from .layouts import LineTable

_NO_LINE_310 = -128  # 3.10: a line delta of -128 marks a range without a line


def line_for(kind: LineTable, table: bytes, firstlineno: int, offset: int) -> int | None:
    """The line of the instruction at code byte `offset`, or None if the table has none."""
    if kind is LineTable.LNOTAB:
        return _lnotab(table, firstlineno, offset)
    if kind is LineTable.LINETABLE_310:
        return _linetable_310(table, firstlineno, offset)
    return _locations(table, firstlineno, offset)


def _signed_byte(value: int) -> int:
    return value - 256 if value >= 128 else value


def _lnotab(table: bytes, line: int, offset: int) -> int:
    """3.6-3.9: (address increment, signed line increment) byte pairs from the first line."""
    address = 0
    for i in range(0, len(table) - 1, 2):
        address += table[i]
        if address > offset:
            break
        line += _signed_byte(table[i + 1])
    return line


def _linetable_310(table: bytes, line: int, offset: int) -> int | None:
    """3.10: (range length in bytes, signed line delta) pairs; each range starts where the
    previous ended."""
    end = 0
    for i in range(0, len(table) - 1, 2):
        start, delta = end, _signed_byte(table[i + 1])
        end = start + table[i]
        if delta != _NO_LINE_310:
            line += delta
        if start <= offset < end:
            return None if delta == _NO_LINE_310 else line
    return None


def _locations(table: bytes, line: int, offset: int) -> int | None:
    """3.11+: entries of a first byte (bit 7 set; a 4-bit code; length - 1 in code units)
    and code-dependent fields: 15 no location, 14 long form (signed line delta and three
    varints), 13 line delta only, 10-12 line delta code - 10 and two column bytes, 0-9
    same line and one column byte."""
    reader = _Varints(table)
    end = 0
    while reader.pos < len(table):
        first = table[reader.pos]
        reader.pos += 1
        if not first & 0x80:
            return None  # out of step: not a location table
        code, start = (first >> 3) & 0x0F, end
        end += ((first & 0x07) + 1) * 2
        has_line = True
        if code == 15:
            has_line = False
        elif code == 14:
            line += reader.signed()
            reader.skip(3)
        elif code == 13:
            line += reader.signed()
        elif code >= 10:
            line += code - 10
            reader.pos += 2
        else:
            reader.pos += 1
        if reader.pos > len(table):
            return None
        if start <= offset < end:
            return line if has_line else None
    return None


class _Varints:
    """Variable-length integers of the location table: 6 bits per byte, low bits first,
    bit 6 set while more follow."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def unsigned(self) -> int:
        value = shift = 0
        while self.pos < len(self.data) and shift < 64:
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x3F) << shift
            shift += 6
            if not byte & 0x40:
                return value
        self.pos = len(self.data) + 1  # truncated: the caller sees pos past the end
        return 0

    def signed(self) -> int:
        value = self.unsigned()
        return -(value >> 1) if value & 1 else value >> 1

    def skip(self, count: int) -> None:
        for _ in range(count):
            self.unsigned()
