"""Kernel text symbols from /proc/kallsyms.

kallsyms lists well over 100 000 symbols and has no sizes: an address
resolves to the closest text symbol at or below it. The file is parsed in one
vectorized pass over its bytes, which the kernel's fixed line format allows
(``%px %c %s``: a zero-padded address, a type letter, a name and for modules
a tab and ``[module]``); a line that does not follow it is skipped.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from .symtab import Addresses, SymbolTable
from .text import decode

_NEWLINE, _SPACE = ord("\n"), ord(" ")
# Text symbols only: a kernel stack never points into data. The rank breaks
# ties between aliases at one address: global before weak before local, so
# `_text`-style local aliases do not hide the exported name. 255: not text.
_TEXT_RANK = np.full(256, 255, np.uint8)
_TEXT_RANK[[ord(c) for c in "TWtw"]] = [0, 1, 2, 3]


def parse_kallsyms(data: bytes) -> SymbolTable:
    """The text symbols of a kallsyms file, one per address.

    Names are kept in a copy of the file with whitespace turned into NULs, so
    each ends where its line or its field does, and are decoded on lookup.
    The module tag is dropped. If every address is zero (kptr_restrict hides
    them from us) the table is empty, so that no address resolves to a wrong
    name.
    """
    raw = np.frombuffer(data, np.uint8)
    width = data.find(b" ")  # hex digits of an address, from the first line
    if not 0 < width <= 16:
        return SymbolTable.empty()
    line = _text_lines(raw, width)
    addresses, valid = _hex_addresses(raw, line, width)
    line = line[valid]
    addresses = addresses[valid]
    if not addresses.any():
        return SymbolTable.empty()
    # By address, then rank; lexsort is stable, so file order breaks the rest.
    order = np.lexsort((_TEXT_RANK[raw[line + width + 1]], addresses))
    addresses = addresses[order]
    first = np.ones(len(order), bool)
    first[1:] = addresses[1:] != addresses[:-1]
    names = (line[order] + width + 3)[first]
    strings = np.where(_is_space(raw), np.uint8(0), raw)
    offsets = names.astype(np.uint32) if len(data) < 1 << 32 else names.astype(np.uint64)
    return SymbolTable(addresses[first], None, offsets, strings.tobytes())


def _text_lines(raw: npt.NDArray[np.uint8], width: int) -> npt.NDArray[np.int64]:
    """Start offsets of the well-formed lines that name a text symbol."""
    newlines = np.flatnonzero(raw == _NEWLINE)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(raw)]))
    # Address, space, type, space and at least one character of name.
    starts = starts[ends - starts >= width + 4]
    starts = starts[(raw[starts + width] == _SPACE) & (raw[starts + width + 2] == _SPACE)]
    starts = starts[_TEXT_RANK[raw[starts + width + 1]] != 255]
    named: npt.NDArray[np.int64] = starts[~_is_space(raw[starts + width + 3])]
    return named


def _hex_addresses(
    raw: npt.NDArray[np.uint8], line: npt.NDArray[np.int64], width: int
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    """The address at the start of each line, and whether it was valid hex.

    Pairs of digits become bytes, and 8 bytes one big-endian word: no loop
    over the digits. A short address is left-padded with zero digits.
    """
    text = np.full((len(line), 16), ord("0"), np.uint8)
    text[:, 16 - width :] = sliding_window_view(raw, width)[line]
    lower = text | 0x20  # ASCII: "A" -> "a"; digits keep their value
    valid = ((text >= ord("0")) & (text <= ord("9"))) | ((lower >= ord("a")) & (lower <= ord("f")))
    digits = (text & 0xF) + 9 * (text >> 6)  # "0"-"9" -> 0-9, "a"-"f" and "A"-"F" -> 10-15
    packed = (digits[:, 0::2] << 4) | digits[:, 1::2]
    every_digit: npt.NDArray[np.bool_] = np.logical_and.reduce(valid, axis=1)
    return packed.view(">u8").ravel().astype(np.uint64), every_digit


def _is_space(values: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Whitespace as str.split() sees it in ASCII: space, and tab to carriage return."""
    space: npt.NDArray[np.bool_] = (values == _SPACE) | (
        (values >= ord("\t")) & (values <= ord("\r"))
    )
    return space


def _modules_fingerprint(path: Path) -> bytes:
    """A hash of the loaded modules' names and load addresses.

    Only those two columns are hashed: the others (reference counts, state)
    change all the time without the symbol table changing. procfs reports a
    size of 0 and a fresh mtime for every file, so stat() cannot serve here.
    A kernel without module support has no /proc/modules: that is a constant.
    """
    try:
        text = decode(path.read_bytes())
    except OSError:
        return b""
    digest = hashlib.blake2b(digest_size=16)
    for line in text.splitlines():
        fields = line.split()
        if fields:
            digest.update(f"{fields[0]} {fields[-1]}\n".encode())
    return digest.digest()


class KernelSymbols:
    """Resolves kernel text addresses to symbol names.

    Loading reads the whole kallsyms file (an OSError propagates). Call
    `refresh()` from time to time: it reloads only if the set of loaded
    modules changed.
    """

    def __init__(
        self,
        kallsyms: Path = Path("/proc/kallsyms"),
        modules: Path = Path("/proc/modules"),
    ) -> None:
        self._kallsyms_path = kallsyms
        self._modules_path = modules
        self._table = SymbolTable.empty()
        self._fingerprint = b""
        self.reloads = 0
        self._load()

    def _load(self) -> None:
        # Fingerprint first: a module loaded while we read kallsyms then shows
        # up as a change at the next refresh() instead of being missed.
        self._fingerprint = _modules_fingerprint(self._modules_path)
        self._table = parse_kallsyms(self._kallsyms_path.read_bytes())

    def refresh(self) -> bool:
        """Reload if the loaded modules changed; True if it reloaded."""
        if _modules_fingerprint(self._modules_path) == self._fingerprint:
            return False
        self._load()
        self.reloads += 1
        return True

    def lookup(self, address: int) -> str | None:
        """The name of the text symbol at or below `address`, if any.

        kallsyms has no sizes, so an address resolves to the closest symbol
        below it; a kernel stack only holds text addresses, where that is
        right. Addresses below the first symbol (user space, for instance)
        resolve to None.
        """
        return self._table.lookup(address)

    def lookup_many(self, addresses: Addresses) -> list[str | None]:
        """`lookup` of each address, in order, with one vectorized search."""
        return self._table.lookup_many(addresses)

    @property
    def table(self) -> SymbolTable:
        """The current table (replaced, not changed, by a reload)."""
        return self._table

    @property
    def nbytes(self) -> int:
        """Approximate memory held by the table."""
        return self._table.nbytes

    def __len__(self) -> int:
        return len(self._table)
