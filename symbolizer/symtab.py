"""Sorted address ranges with lazily decoded names: what ELF and kernel symbols become.

A table is three parallel numpy arrays (start addresses, end addresses, offsets
of the names) plus the NUL-terminated string table the names sit in. Arrays,
not objects, because an agent may hold hundreds of binaries with hundreds of
thousands of symbols each; names stay bytes and are decoded only when a lookup
hits them, since a profile touches a few thousand functions of a binary at most.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .text import decode

U64 = npt.NDArray[np.uint64]
Addresses = Sequence[int] | npt.NDArray[Any]

ADDRESS_LIMIT = 1 << 64
MAX_ADDRESS = ADDRESS_LIMIT - 1
# Below this many addresses one lookup each is faster: a vectorized call costs
# some 50 us in numpy overhead whatever its size, a single lookup under 1 us.
SMALL_BATCH = 64


class SymbolTable:
    """Symbol i covers [starts[i], ends[i]) and is named by the string at name_offsets[i].

    `starts` is strictly increasing. `ends` is None when symbols have no sizes
    (kallsyms): each then reaches up to the next one. The constructor trusts
    its arguments; arrays from outside (the disk cache) go through `checked`.
    """

    __slots__ = ("_views", "ends", "name_offsets", "starts", "strings")

    def __init__(
        self,
        starts: U64,
        ends: U64 | None,
        name_offsets: npt.NDArray[np.unsignedinteger[Any]],
        strings: bytes,
    ) -> None:
        self.starts = np.ascontiguousarray(starts)
        self.ends = None if ends is None else np.ascontiguousarray(ends)
        self.name_offsets = np.ascontiguousarray(name_offsets)
        self.strings = strings
        # Single lookups go through memoryviews, whose items are plain ints:
        # np.searchsorted with one Python int is about 200 times slower than
        # bisect (it converts the scalar the slow way), and indexing an array
        # makes numpy scalars.
        self._views = (
            self.starts.data,
            None if self.ends is None else self.ends.data,
            self.name_offsets.data,
        )

    @classmethod
    def empty(cls) -> SymbolTable:
        none = np.zeros(0, np.uint64)
        return cls(none, none, np.zeros(0, np.uint32), b"")

    @classmethod
    def checked(
        cls,
        starts: npt.NDArray[Any],
        ends: npt.NDArray[Any] | None,
        name_offsets: npt.NDArray[Any],
        strings: bytes,
    ) -> SymbolTable:
        """A table from untrusted arrays; ValueError unless they are consistent."""
        n = len(starts)
        if starts.dtype != np.uint64 or starts.shape != (n,):
            raise ValueError("starts: need a 1-D uint64 array")
        if name_offsets.dtype not in (np.uint32, np.uint64) or name_offsets.shape != (n,):
            raise ValueError("name_offsets: need a 1-D unsigned array as long as starts")
        if n > 1 and not bool(np.all(starts[1:] > starts[:-1])):
            raise ValueError("starts are not strictly increasing")
        if n and int(name_offsets.max()) >= len(strings):
            raise ValueError("a name offset lies past the string table")
        if ends is not None:
            if ends.dtype != np.uint64 or ends.shape != (n,):
                raise ValueError("ends: need a 1-D uint64 array as long as starts")
            if not bool(np.all(ends > starts)):
                raise ValueError("an end is not above its start")
        return cls(starts, ends, name_offsets, strings)

    def lookup(self, address: int) -> str | None:
        """The name of the symbol containing `address`, or None."""
        starts, ends, names = self._views
        i = bisect_right(starts, address) - 1
        if i < 0 or (ends is not None and address >= ends[i]):
            return None
        return self._decode(names[i])

    def lookup_many(self, addresses: Addresses) -> list[str | None]:
        """`lookup` of every address, in order: one vectorized search for all of them.

        The addresses are sorted first: searching sorted keys is several times
        faster (cache-friendly), and equal symbols then come out adjacent, so
        each distinct name is decoded once without another sort.
        """
        keys = None if len(addresses) < SMALL_BATCH else as_addresses(addresses)
        if keys is None:  # few, or some value is no 64-bit address: one by one
            return [self.lookup(int(a)) for a in addresses]
        order = np.argsort(keys)
        index = self.indices(keys[order])
        change = np.ones(len(index), bool)
        change[1:] = index[1:] != index[:-1]
        distinct = index[change]
        names = np.full(len(distinct), None, dtype=object)
        hit = distinct >= 0
        names[hit] = [self._decode(o) for o in self.name_offsets[distinct[hit]].tolist()]
        result = np.empty(len(keys), dtype=object)
        result[order] = names[np.cumsum(change) - 1]
        found: list[str | None] = result.tolist()
        return found

    def indices(self, keys: U64) -> npt.NDArray[np.intp]:
        """For each address, the index of the symbol containing it, or -1."""
        index = np.searchsorted(self.starts, keys, side="right") - 1
        if self.ends is not None and len(self.ends):
            inside = keys < self.ends[np.maximum(index, 0)]
            index[~inside] = -1
        return index

    def _decode(self, offset: int) -> str:
        end = self.strings.find(b"\0", offset)
        return decode(self.strings[offset : end if end >= 0 else None])

    @property
    def nbytes(self) -> int:
        """Approximate memory held: the arrays and the string table."""
        ends = 0 if self.ends is None else self.ends.nbytes
        return self.starts.nbytes + ends + self.name_offsets.nbytes + len(self.strings)

    def __len__(self) -> int:
        return len(self.starts)


def as_addresses(values: Addresses) -> U64 | None:
    """`values` as a uint64 array, or None if one of them is outside [0, 2**64).

    Mixing uint64 with signed integers would make numpy compare in float64,
    which loses the low bits of kernel addresses, so everything is cast first.
    """
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "u" or (values.dtype.kind == "i" and not (values < 0).any()):
            return values.astype(np.uint64, copy=False)
        return None  # casting would wrap negative numbers around silently
    try:
        return np.asarray(values, dtype=np.uint64)  # raises for out-of-range Python ints
    except (OverflowError, TypeError, ValueError):
        return None
