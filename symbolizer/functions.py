"""Which function symbol names each address of an ELF file, decided for a whole table at once.

Symbol tables run to hundreds of thousands of entries (libLLVM), so the rules
are numpy operations over all entries rather than a loop per symbol:

- only defined functions count (STT_FUNC, STT_GNU_IFUNC; a real section index;
  a non-zero address; a non-empty name);
- among aliases at one address the preferred name wins: sized first, then
  fewer leading underscores (glibc's public `getpid` is a weak alias of the
  global `__getpid`), then global before weak before local, then by name;
- a zero-sized symbol reaches to the next symbol, but never past the end of
  its section.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .symtab import MAX_ADDRESS, U64, SymbolTable

Entries = npt.NDArray[np.void]  # structured: name, info, shndx, value, size (elf.sym_dtype)

_STT_FUNC, _STT_GNU_IFUNC = 2, 10
_SHN_LORESERVE = 0xFF00  # from here on, absolute or special: not in a section
_UNDERSCORE = ord("_")
# Counting stops here, so that a hostile string table of underscores cannot
# make the count quadratic; real names have a handful at most.
_MAX_UNDERSCORES = 32
# Aliases are compared by name up to this many 8-byte words (8 KiB), for the
# same reason; past that they count as equal and size and order decide.
_MAX_NAME_WORDS = 1024
# Words compared over all groups of one table: this many per candidate symbol
# (and at least _MIN_COMPARED_WORDS), so the work stays linear in the table's
# size. libLLVM's 35,000 exported functions need some 14,000 words in all; a
# table built to be slow would take billions.
_COMPARED_WORDS_PER_SYMBOL = 16
_MIN_COMPARED_WORDS = 1 << 16
# Binding rank (lower wins): an exported name is what a user recognises and
# what other tools show. GLOBAL, WEAK, LOCAL; anything else last.
_BIND_RANK = np.full(16, 3, np.uint16)
_BIND_RANK[[1, 2, 0]] = [0, 1, 2]


class _Found(NamedTuple):
    """The candidate symbols, one contiguous array per field (faster than records)."""

    name: npt.NDArray[np.int64]  # offset into the string table
    bind: npt.NDArray[np.uint8]
    shndx: npt.NDArray[np.intp]
    value: U64
    size: U64

    def take(self, index: npt.NDArray[np.intp]) -> _Found:
        return _Found(
            self.name[index],
            self.bind[index],
            self.shndx[index],
            self.value[index],
            self.size[index],
        )


def select_functions(
    entries: Entries, strtab: bytes, section_ends: U64, *, keep_unsized: bool
) -> SymbolTable:
    """One function per start address, from the raw entries of one symbol table.

    `section_ends[i]` is the end address of section i. Zero-sized symbols are
    kept only if `keep_unsized` (.symtab): .dynsym lists exported functions
    alone, and stretching one to the next would name unexported code wrongly.
    """
    text = np.frombuffer(strtab, np.uint8)
    found = _candidates(entries, text, len(section_ends), keep_unsized)
    if not len(found.value):
        return SymbolTable.empty()
    key = _preference_key(found, text)
    winners = _winners(found, key, text, section_ends)
    return _table(found.take(winners), strtab, section_ends)


def has_functions(entries: Entries, strtab: bytes, sections: int, *, keep_unsized: bool) -> bool:
    """Whether `select_functions` has a candidate in this table: cheap (no sorting), so
    that the table to use is chosen before, and without, building it."""
    text = np.frombuffer(strtab, np.uint8)
    return len(_candidates(entries, text, sections, keep_unsized).value) > 0


def _candidates(
    entries: Entries, text: npt.NDArray[np.uint8], sections: int, unsized: bool
) -> _Found:
    """The entries that are defined, named functions."""
    info = entries["info"]
    kind = info & 0xF
    shndx = entries["shndx"]
    name = entries["name"]
    keep = (kind == _STT_FUNC) | (kind == _STT_GNU_IFUNC)
    keep &= (entries["value"] != 0) & (shndx > 0) & (shndx < min(sections, _SHN_LORESERVE))
    keep &= name < len(text)
    if not unsized:
        keep &= entries["size"] != 0
    index = np.flatnonzero(keep)
    offsets = name[index].astype(np.int64)
    named = text[offsets] != 0
    index, offsets = index[named], offsets[named]
    return _Found(
        name=offsets,
        bind=info[index] >> 4,
        shndx=shndx[index].astype(np.intp),
        value=entries["value"][index].astype(np.uint64),
        size=entries["size"][index].astype(np.uint64),
    )


def _preference_key(found: _Found, text: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint16]:
    """Lower is better among aliases: (unsized, leading underscores, bind rank) packed."""
    unsized = (found.size == 0).astype(np.uint16)
    under = _leading_underscores(text, found.name).astype(np.uint16)
    key: npt.NDArray[np.uint16] = (unsized << 8) | (under << 2) | _BIND_RANK[found.bind]
    return key


def _leading_underscores(
    text: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]
) -> npt.NDArray[np.uint8]:
    """How many `_` each string starts with (capped), one pass per underscore depth."""
    count = np.zeros(len(offsets), np.uint8)
    active = np.arange(len(offsets))
    for depth in range(_MAX_UNDERSCORES):
        at = offsets[active] + depth
        inside = at < len(text)
        active = active[inside][text[at[inside]] == _UNDERSCORE]
        if not len(active):
            break
        count[active] += 1
    return count


def _winners(
    found: _Found, key: npt.NDArray[np.uint16], text: npt.NDArray[np.uint8], section_ends: U64
) -> npt.NDArray[np.intp]:
    """Index into `found` of the preferred symbol at each address, in address order."""
    order = _by_address_then_key(found.value, key)
    value, ordered_key = found.value[order], key[order]
    first = np.ones(len(order), bool)
    first[1:] = value[1:] != value[:-1]
    winners = order[first]
    # Aliases equal to the first of their address on every key: the name decides.
    group = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    tied = ~first & (ordered_key == ordered_key[group])
    if tied.any():
        slot = np.cumsum(first) - 1  # position in `order` -> index into winners
        starts, counts = np.unique(group[tied], return_counts=True)
        winners[slot[starts]] = _by_name(found, order, starts, counts, text, section_ends)
    return winners


def _by_address_then_key(value: U64, key: npt.NDArray[np.uint16]) -> npt.NDArray[np.intp]:
    """Sort order by (address, key); the order among equal pairs does not matter.

    (Ties on both are settled by name in `_by_name`.) One sort on the two
    packed into a word when addresses fit in 48 bits, as user-space ones do.
    """
    if int(value.max()) < 1 << 48:
        return np.argsort((value << np.uint64(16)) | key.astype(np.uint64))
    return np.lexsort((key, value))


def _by_name(
    found: _Found,
    order: npt.NDArray[np.intp],
    starts: npt.NDArray[np.intp],
    counts: npt.NDArray[np.intp],
    text: npt.NDArray[np.uint8],
    section_ends: U64,
) -> npt.NDArray[np.intp]:
    """For each group of tied aliases (order[start : start + count + 1]), the one
    that sorts first by (name, size, section end, index).

    Thousands of groups in C++ code (the complete and base object constructors
    C1/C2 at one address), so the names are compared 8 bytes at a time as
    big-endian words, all groups at once, keeping in each group those equal
    to its smallest word, until one is left or their names have ended. Each
    round works only on the members still contending, and all rounds together
    compare at most `compared_words_budget` words: a hostile table of many
    aliases sharing one long name would otherwise cost minutes. Past the
    budget the names count as equal.
    """
    sizes = counts + 1
    positions = np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
    members = order[positions]
    group = np.repeat(np.arange(len(starts)), sizes)  # non-decreasing
    at = found.name[members]  # where each name's next 8 bytes start
    alive = np.ones(len(members), bool)
    contending = np.arange(len(members))  # alive, name not ended, group not decided
    budget = compared_words_budget(len(found.value))
    for _ in range(_MAX_NAME_WORDS):
        contending = contending[_in_groups_of_several(group[contending])]
        budget -= len(contending)
        if not len(contending) or budget < 0:
            break
        word, finished = _name_words(text, at[contending])
        keep = word == _group_minimum(word, group[contending])
        alive[contending[~keep]] = False
        at[contending] += 8
        contending = contending[keep & ~finished]
    return _first_of_equal_names(found, members[alive], group[alive], section_ends)


def _first_of_equal_names(
    found: _Found, members: npt.NDArray[np.intp], group: npt.NDArray[np.intp], section_ends: U64
) -> npt.NDArray[np.intp]:
    """Per group of aliases whose names are equal: the smaller size, then section end,
    then table order."""
    limits = section_ends[found.shndx[members]]
    best = np.lexsort((members, limits, found.size[members], group))
    first = np.ones(len(best), bool)
    first[1:] = group[best][1:] != group[best][:-1]
    chosen: npt.NDArray[np.intp] = members[best[first]]
    return chosen


def compared_words_budget(candidates: int) -> int:
    """How many 8-byte name words `_by_name` may compare for a table of `candidates`."""
    return max(_MIN_COMPARED_WORDS, _COMPARED_WORDS_PER_SYMBOL * candidates)


def _runs(group: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Start and length of each run of equal values in a sorted array."""
    change = np.ones(len(group), bool)
    change[1:] = group[1:] != group[:-1]
    bounds = np.flatnonzero(change)
    return bounds, np.diff(np.append(bounds, len(group)))


def _in_groups_of_several(group: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
    """Which entries (grouped, sorted by group) share their group with another."""
    if not len(group):
        return np.zeros(0, bool)
    _, lengths = _runs(group)
    return np.repeat(lengths > 1, lengths)


def _group_minimum(word: U64, group: npt.NDArray[np.intp]) -> U64:
    """Each entry's group minimum of `word` (entries sorted by group)."""
    bounds, lengths = _runs(group)
    smallest: U64 = np.repeat(np.minimum.reduceat(word, bounds), lengths)
    return smallest


def _name_words(
    text: npt.NDArray[np.uint8], at: npt.NDArray[np.int64]
) -> tuple[U64, npt.NDArray[np.bool_]]:
    """The 8 bytes at each offset as a big-endian word (zero from the string's NUL
    on, and past the table's end), and whether the string ends within them."""
    index = at[:, None] + np.arange(8)
    chunk = text[np.minimum(index, len(text) - 1)]
    chunk[index >= len(text)] = 0
    chunk[np.logical_or.accumulate(chunk == 0, axis=1)] = 0
    words = np.ascontiguousarray(chunk).view(">u8").ravel().astype(np.uint64)
    return words, (chunk == 0).any(axis=1)


def _table(chosen: _Found, strtab: bytes, section_ends: U64) -> SymbolTable:
    """Effective extents of the chosen symbols (already in address order)."""
    starts, sizes = chosen.value, chosen.size
    limits = section_ends[chosen.shndx]
    # A zero-sized symbol: until the next symbol, never past the end of its section.
    following = np.empty_like(starts)
    following[:-1] = starts[1:]
    following[-1:] = limits[-1:]
    sized_ends = starts + sizes
    sized_ends[sized_ends < starts] = MAX_ADDRESS  # wrapped around: hostile, clamp
    ends = np.where(sizes == 0, np.minimum(following, limits), sized_ends)
    keep = ends > starts
    names = chosen.name[keep].astype(np.uint32)
    return SymbolTable(starts[keep], ends[keep], names, strtab)
