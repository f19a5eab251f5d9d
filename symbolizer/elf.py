"""Function symbols, load segments and build-id of one ELF file.

pyelftools identifies the file (class, byte order) and decodes the ELF,
program and section headers. Its higher-level section and segment objects are
avoided on purpose: building them parses .hash/.gnu.hash tables entry by entry
(over a second for libLLVM), and its per-symbol dicts manage about 20 000
symbols a second. Symbol entries are decoded with `struct.iter_unpack`
instead (some twenty times faster), and the build-id note by hand, with every
range checked against the file size first.

The result is kept as parallel sorted arrays, not objects, because an agent
may hold hundreds of binaries with tens of thousands of symbols each.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from elftools.common.utils import struct_parse
from elftools.elf.elffile import ELFFile

_T = TypeVar("_T")

_FUNC_TYPES = (2, 10)  # STT_FUNC, STT_GNU_IFUNC
_SHN_LORESERVE = 0xFF00
_PN_XNUM = 0xFFFF
_NT_GNU_BUILD_ID = 3
# Binding rank among aliases at one address (lower wins): an exported name is
# what a user recognises and what other tools show.
_BIND_RANK = {1: 0, 2: 1, 0: 2}  # GLOBAL, WEAK, LOCAL
_UNKNOWN_BIND_RANK = 3


class ElfError(Exception):
    """The file is not an ELF file, or is truncated or corrupted.

    The only exception `ElfSymbols.from_file` and `ElfSymbols.read_build_id`
    raise: whatever went wrong underneath is chained as ``__cause__``.
    """


@dataclass(frozen=True, slots=True)
class LoadSegment:
    """A PT_LOAD program header: file bytes [offset, offset+filesz) load at vaddr."""

    offset: int
    vaddr: int
    filesz: int


@dataclass(frozen=True, slots=True)
class _SectionHeader:
    name: str
    kind: str | int  # sh_type as pyelftools names it ("SHT_SYMTAB"); int if unknown
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


# A function symbol before deduplication. The field order makes plain tuple
# order the preference order among aliases at one address: sized first, then
# fewer leading underscores (glibc's public `getpid` is a weak alias of the
# global `__getpid`), then global before weak before local, then by name.
# (start, unsized, leading underscores, bind rank, name, size, section end)
_Candidate = tuple[int, bool, int, int, bytes, int, int]

# struct format and field positions (info, shndx, value, size) of one symbol
# entry; the name offset is always first.
# Elf64_Sym: name, info, other, shndx, value, size.
# Elf32_Sym: name, value, size, info, other, shndx.
_SYM64 = ("IBBHQQ", 1, 3, 4, 5)
_SYM32 = ("IIIBBH", 3, 5, 1, 2)


def _guarded(parse: Callable[[BinaryIO], _T], stream: BinaryIO) -> _T:
    """Run `parse`, turning every failure into `ElfError`.

    pyelftools' failure modes on hostile input are not enumerable
    (struct.error, IndexError, its ELFError and construct errors, a
    ZeroDivisionError on a zero entry size, ...), and a corrupted binary must
    never take the agent down, so everything but ElfError itself is wrapped.
    """
    try:
        return parse(stream)
    except ElfError:
        raise
    except Exception as exc:
        raise ElfError(f"{type(exc).__name__}: {exc}") from exc


class ElfSymbols:
    """Function symbols of one ELF file, addressed by link-time virtual address.

    Build with `from_file`. The arrays hold one symbol per start address, and
    sizes are effective ones (a zero-sized symbol gets the distance to the
    next symbol or to the end of its section), so a lookup is one bisection.
    """

    def __init__(
        self,
        *,
        build_id: str | None,
        segments: tuple[LoadSegment, ...],
        starts: array[int],
        sizes: array[int],
        names: list[str],
        source: str,
    ) -> None:
        self.build_id = build_id
        self.segments = segments
        self.source = source  # ".symtab", ".dynsym" or "" when there are no symbols
        self._starts = starts
        self._sizes = sizes
        self._names = names

    @classmethod
    def from_file(cls, stream: BinaryIO) -> ElfSymbols:
        """Parse an open, seekable ELF file; raises only `ElfError`."""
        return _guarded(cls._parse, stream)

    @classmethod
    def from_path(cls, path: Path | str) -> ElfSymbols:
        """Open and parse `path`: OSError propagates, bad content is `ElfError`."""
        with open(path, "rb") as stream:
            return cls.from_file(stream)

    @staticmethod
    def read_build_id(stream: BinaryIO) -> str | None:
        """Only the build-id, much cheaper than `from_file`; raises only `ElfError`.

        Lets a cache keyed by build-id skip the symbol table of a binary it
        already holds (the same image in another container, say).
        """
        return _guarded(lambda s: _build_id(_Elf(s)), stream)

    @classmethod
    def _parse(cls, stream: BinaryIO) -> ElfSymbols:
        elf = _Elf(stream)
        # The first table with functions: .dynsym only if .symtab is absent
        # (stripped) or has no functions left (stripped down to a few symbols).
        found: list[_Candidate] = []
        source = ""
        for table in elf.symbol_tables():
            found, source = elf.functions(table), table.name
            if found:
                break
        starts, sizes, names = _build_arrays(found)
        return cls(
            build_id=_build_id(elf),
            segments=elf.load_segments(),
            starts=starts,
            sizes=sizes,
            names=names,
            source=source if found else "",
        )

    def file_offset_to_vaddr(self, offset: int) -> int | None:
        """The link-time address of the byte at file `offset`, if it is loaded.

        Going through the PT_LOAD segment that holds the offset is right for
        executables, PIE executables and shared libraries alike, with no load
        bias to compute from the mapping.
        """
        for segment in self.segments:
            if segment.offset <= offset < segment.offset + segment.filesz:
                return offset - segment.offset + segment.vaddr
        return None

    def lookup(self, vaddr: int) -> str | None:
        """The function containing link-time address `vaddr`, or None."""
        i = bisect_right(self._starts, vaddr) - 1
        if i >= 0 and vaddr < self._starts[i] + self._sizes[i]:
            return self._names[i]
        return None

    def __len__(self) -> int:
        return len(self._names)


class _Elf:
    """Bounds-checked access to one ELF file's headers, sections and symbols."""

    def __init__(self, stream: BinaryIO) -> None:
        self.file = ELFFile(stream)
        self.stream = stream
        self.size = self.file.stream_len
        self.sections = self._section_headers()

    def check(self, offset: int, size: int) -> None:
        """Refuse a range past the end of the file before touching it.

        So a garbage size cannot make us allocate gigabytes, and truncation is
        an error rather than a silently shorter table.
        """
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ElfError(f"{size} bytes at offset {offset} lie past the end of the file")

    def read(self, offset: int, size: int) -> bytes:
        """Exactly `size` bytes at `offset`, or ElfError."""
        self.check(offset, size)
        self.stream.seek(offset)
        return self.stream.read(size)

    def _table(self, struct_: Any, offset: int, entsize: int, count: int) -> list[Any]:
        """`count` header entries at `offset` (0: there is no table), decoded by pyelftools."""
        if not offset:
            return []
        if count and entsize != struct_.sizeof():
            raise ElfError(f"unexpected header entry size {entsize}")
        self.check(offset, count * entsize)
        return [struct_parse(struct_, self.stream, offset + i * entsize) for i in range(count)]

    def _section_headers(self) -> list[_SectionHeader]:
        f = self.file
        raw = self._table(f.structs.Elf_Shdr, f["e_shoff"], f["e_shentsize"], f.num_sections())
        names = b""
        if raw:
            strtab = raw[f.get_shstrndx()]
            names = self.read(strtab["sh_offset"], strtab["sh_size"])
        return [
            _SectionHeader(
                name=_string_at(names, h["sh_name"]).decode("utf-8", "replace"),
                kind=h["sh_type"],
                addr=h["sh_addr"],
                offset=h["sh_offset"],
                size=h["sh_size"],
                link=h["sh_link"],
                entsize=h["sh_entsize"],
            )
            for h in raw
        ]

    def program_headers(self) -> list[Any]:
        """Decoded program headers (PN_XNUM: the real count is in section 0)."""
        f = self.file
        count = f["e_phnum"]
        if count == _PN_XNUM and self.sections:
            count = struct_parse(f.structs.Elf_Shdr, self.stream, f["e_shoff"])["sh_info"]
        return self._table(f.structs.Elf_Phdr, f["e_phoff"], f["e_phentsize"], count)

    def load_segments(self) -> tuple[LoadSegment, ...]:
        return tuple(
            LoadSegment(h["p_offset"], h["p_vaddr"], h["p_filesz"])
            for h in self.program_headers()
            if h["p_type"] == "PT_LOAD"
        )

    def note_ranges(self) -> list[tuple[int, int]]:
        """(offset, size) of the notes: from sections, or PT_NOTE if stripped of those."""
        ranges = [(s.offset, s.size) for s in self.sections if s.kind == "SHT_NOTE"]
        if not ranges:
            headers = self.program_headers()
            ranges = [(h["p_offset"], h["p_filesz"]) for h in headers if h["p_type"] == "PT_NOTE"]
        return ranges

    def symbol_tables(self) -> list[_SectionHeader]:
        """.symtab (all functions) first, then .dynsym (exported ones only)."""
        order = {"SHT_SYMTAB": 0, "SHT_DYNSYM": 1}
        tables = [s for s in self.sections if s.kind in order]
        return sorted(tables, key=lambda s: order[str(s.kind)])

    def _entries(self, table: _SectionHeader) -> tuple[Iterator[tuple[int, ...]], tuple[int, ...]]:
        """Raw entries of a symbol table and the positions of (info, shndx, value, size)."""
        fmt, *positions = _SYM64 if self.file.elfclass == 64 else _SYM32
        fmt = ("<" if self.file.little_endian else ">") + fmt
        if table.entsize != struct.calcsize(fmt):
            raise ElfError(f"{table.name}: unexpected entry size {table.entsize}")
        data = self.read(table.offset, table.size - table.size % table.entsize)
        return struct.iter_unpack(fmt, data), tuple(positions)

    def functions(self, table: _SectionHeader) -> list[_Candidate]:
        """The defined function symbols of `table`.

        Zero-sized symbols (assembly entry points, `_init`) are kept from
        .symtab only. .dynsym lists exported functions alone: stretching one
        to the next symbol would swallow unexported code and name it wrongly.
        Hot loop: runs once per symbol, so it stays flat.
        """
        if not 0 < table.link < len(self.sections):
            raise ElfError(f"{table.name}: bad string table index {table.link}")
        strtab_header = self.sections[table.link]
        strtab = self.read(strtab_header.offset, strtab_header.size)
        ends = [s.addr + s.size for s in self.sections]
        # Index 0 is SHN_UNDEF (imported); from SHN_LORESERVE on, absolute or special.
        max_shndx = min(len(ends), _SHN_LORESERVE)
        keep_unsized = table.kind == "SHT_SYMTAB"
        entries, (i_info, i_shndx, i_value, i_size) = self._entries(table)
        found: list[_Candidate] = []
        for e in entries:
            info, shndx, value, size = e[i_info], e[i_shndx], e[i_value], e[i_size]
            if (info & 0xF) not in _FUNC_TYPES or not value or not 0 < shndx < max_shndx:
                continue
            if size or keep_unsized:
                name = _string_at(strtab, e[0])
                if name:
                    bind = _BIND_RANK.get(info >> 4, _UNKNOWN_BIND_RANK)
                    under = len(name) - len(name.lstrip(b"_"))
                    found.append((value, not size, under, bind, name, size, ends[shndx]))
        return found


def _string_at(strtab: bytes, offset: int) -> bytes:
    """The NUL-terminated string at `offset` (empty if the offset is bogus)."""
    end = strtab.find(b"\0", offset)
    return strtab[offset : end if end >= 0 else len(strtab)]


def _build_arrays(found: list[_Candidate]) -> tuple[array[int], array[int], list[str]]:
    """One symbol per address (the first in tuple order wins), with effective sizes."""
    found.sort()
    unique = [c for i, c in enumerate(found) if i == 0 or found[i - 1][0] != c[0]]
    starts: array[int] = array("Q")
    sizes: array[int] = array("Q")
    names: list[str] = []
    for i, (start, _unsized, _under, _bind, name, size, limit) in enumerate(unique):
        if size == 0:
            # "Until the next symbol", but never past the end of its section.
            next_start = unique[i + 1][0] if i + 1 < len(unique) else limit
            size = min(next_start, limit) - start
            if size <= 0:
                continue
        starts.append(start)
        sizes.append(size)
        names.append(name.decode("utf-8", "replace"))
    return starts, sizes, names


def _build_id(elf: _Elf) -> str | None:
    """The GNU build-id as lowercase hex, if the file has one."""
    for offset, size in elf.note_ranges():
        found = _find_build_id(elf.read(offset, size), "<" if elf.file.little_endian else ">")
        if found is not None:
            return found
    return None


def _find_build_id(notes: bytes, order: str) -> str | None:
    """Walk the notes (4-byte aligned name and descriptor) for NT_GNU_BUILD_ID.

    Decoded here rather than by pyelftools so that a garbage descriptor size
    is checked against the bytes at hand before anything is read.
    """
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from(order + "III", notes, pos)
        name_start = pos + 12
        desc_start = name_start + (namesz + 3) // 4 * 4
        desc_end = desc_start + descsz
        if desc_end > len(notes):
            return None
        if kind == _NT_GNU_BUILD_ID and notes[name_start : name_start + namesz] == b"GNU\0":
            return notes[desc_start:desc_end].hex() or None
        pos = desc_start + (descsz + 3) // 4 * 4
    return None
