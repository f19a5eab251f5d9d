"""Kernel text symbols from /proc/kallsyms.

kallsyms lists well over 100 000 symbols and has no sizes, so the table is
kept as two parallel sorted arrays (an ``array('Q')`` of addresses and a list
of names) and an address resolves to the closest symbol at or below it.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_right
from collections.abc import Iterable
from pathlib import Path

# Text symbols only: a kernel stack never points into data. The rank breaks
# ties between aliases at one address: global before weak before local, so
# `_text`-style local aliases do not hide the exported name.
_TEXT_RANK = {"T": 0, "W": 1, "t": 2, "w": 3}


def parse_kallsyms(lines: Iterable[str]) -> tuple[array[int], list[str]]:
    """Sorted (addresses, names) of the text symbols in kallsyms `lines`.

    Lines look like ``ffffffff81000000 T _stext`` or, for modules and BPF
    programs, ``ffffffffc0a01000 t ext4_fill_super\\t[ext4]``; the module tag
    is dropped. If every address is zero (kptr_restrict hides them from us)
    the table is empty, so that no address resolves to a wrong name.
    """
    entries: list[tuple[int, int, str]] = []
    any_nonzero = False
    for line in lines:
        fields = line.split()
        if len(fields) < 3 or fields[1] not in _TEXT_RANK:
            continue
        try:
            address = int(fields[0], 16)
        except ValueError:
            continue
        any_nonzero = any_nonzero or address != 0
        entries.append((address, _TEXT_RANK[fields[1]], fields[2]))
    if not any_nonzero:
        return array("Q"), []
    return _dedupe_sorted(entries)


def _dedupe_sorted(entries: list[tuple[int, int, str]]) -> tuple[array[int], list[str]]:
    """Sort by address, keeping one name per address (best rank, then file order)."""
    entries.sort(key=lambda e: (e[0], e[1]))  # stable: file order within a rank
    addresses: array[int] = array("Q")
    names: list[str] = []
    for address, _rank, name in entries:
        if addresses and addresses[-1] == address:
            continue
        addresses.append(address)
        names.append(name)
    return addresses, names


def _modules_fingerprint(path: Path) -> bytes:
    """A hash of the loaded modules' names and load addresses.

    Only those two columns are hashed: the others (reference counts, state)
    change all the time without the symbol table changing. procfs reports a
    size of 0 and a fresh mtime for every file, so stat() cannot serve here.
    A kernel without module support has no /proc/modules: that is a constant.
    """
    try:
        text = path.read_text(errors="replace")
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
        self._addresses: array[int] = array("Q")
        self._names: list[str] = []
        self._fingerprint = b""
        self.reloads = 0
        self._load()

    def _load(self) -> None:
        # Fingerprint first: a module loaded while we read kallsyms then shows
        # up as a change at the next refresh() instead of being missed.
        self._fingerprint = _modules_fingerprint(self._modules_path)
        with self._kallsyms_path.open(errors="replace") as lines:
            self._addresses, self._names = parse_kallsyms(lines)

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
        i = bisect_right(self._addresses, address) - 1
        return self._names[i] if i >= 0 else None

    def __len__(self) -> int:
        return len(self._names)
