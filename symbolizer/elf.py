"""Function symbols, load segments and build-id of one ELF file.

pyelftools decodes the ELF header, with its struct definitions built once per
layout (class and byte order): ELFFile rebuilds them for every file, which
took longer than all the rest of loading a small library. The tables of
fixed-size entries that follow are read as numpy structured arrays over their
bytes: program headers, section headers (pyelftools took 0.7 ms for libc's
64, numpy 0.02 ms) and symbol tables, filtered as a whole (functions.py).
pyelftools' section objects are avoided too: they parse .hash/.gnu.hash
tables entry by entry (over a second for libLLVM), and its per-symbol dicts
manage about 20 000 symbols a second. The build-id note is decoded by hand.
Every range is checked against the file size before it is read.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import numpy.typing as npt
from elftools.common.utils import struct_parse
from elftools.elf.structs import ELFStructs

from .files import open_regular
from .functions import Entries, has_functions, select_functions
from .symtab import MAX_ADDRESS, SMALL_BATCH, U64, Addresses, SymbolTable, as_addresses
from .text import decode

_T = TypeVar("_T")

_PN_XNUM = 0xFFFF
_SHN_XINDEX = 0xFFFF
_SHT_SYMTAB, _SHT_NOTE, _SHT_NOBITS, _SHT_DYNSYM = 2, 7, 8, 11
_PT_LOAD, _PT_NOTE = 1, 4
# Layouts of the fixed-size table entries read with numpy, field:type in order.
_SYM64 = "name:u4 info:u1 other:u1 shndx:u2 value:u8 size:u8"
_SYM32 = "name:u4 value:u4 size:u4 info:u1 other:u1 shndx:u2"
_SHDR64 = (
    "name:u4 type:u4 flags:u8 addr:u8 offset:u8 size:u8 link:u4 info:u4 addralign:u8 entsize:u8"
)
_SHDR32 = (
    "name:u4 type:u4 flags:u4 addr:u4 offset:u4 size:u4 link:u4 info:u4 addralign:u4 entsize:u4"
)
_PHDR64 = "type:u4 flags:u4 offset:u8 vaddr:u8 paddr:u8 filesz:u8 memsz:u8 align:u8"
_PHDR32 = "type:u4 offset:u4 vaddr:u4 paddr:u4 filesz:u4 memsz:u4 flags:u4 align:u4"
_NT_GNU_BUILD_ID = 3
_EHDR_SIZE = {32: 52, 64: 64}
_DIGEST_BYTES = 16
# What reading one file may cost, whatever its headers claim (see _Elf.check).
# The largest real tables come from debug files: Chromium's .strtab is some
# 100 MB. Bigger tables are not read; their frames stay module+offset.
MAX_READ_BYTES = 128 << 20
MAX_FILE_BYTES = 256 << 20
# A build-id note is 36 bytes; note sections of real files hold a few hundred.
_MAX_NOTES_BYTES = 64 << 10


class ElfError(Exception):
    """The file is not an ELF file, or is truncated or corrupted.

    The only exception `ElfSymbols.from_file` and `ElfSymbols.read_build_id`
    raise: whatever went wrong underneath is chained as ``__cause__``.
    """


class ElfTooLarge(ElfError):
    """The file's tables are larger than the byte budget (or claim to be)."""


@dataclass(frozen=True, slots=True)
class LoadSegment:
    """A PT_LOAD program header: file bytes [offset, offset+filesz) load at vaddr."""

    offset: int
    vaddr: int
    filesz: int


@dataclass(frozen=True, slots=True)
class _SectionHeader:
    name: str
    kind: int  # sh_type
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


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

    Build with `from_file`. The table holds one symbol per start address, with
    effective extents (a zero-sized symbol reaches to the next symbol or to
    the end of its section), so a lookup is one binary search.
    """

    def __init__(
        self,
        *,
        build_id: str | None,
        segments: tuple[LoadSegment, ...],
        table: SymbolTable,
        source: str,
    ) -> None:
        self.build_id = build_id
        self.segments = segments
        self.source = source  # ".symtab", ".dynsym" or "" when there are no symbols
        self.table = table

    @classmethod
    def from_file(cls, stream: BinaryIO) -> ElfSymbols:
        """Parse an open, seekable ELF file; raises only `ElfError`."""
        return _guarded(cls._parse, stream)

    @classmethod
    def from_path(cls, path: Path | str) -> ElfSymbols:
        """Open and parse `path`: OSError propagates (also for a FIFO or a device, which
        are not read), bad content is `ElfError`."""
        with open_regular(path) as stream:
            return cls.from_file(stream)

    @staticmethod
    def read_build_id(stream: BinaryIO) -> str | None:
        """Only the build-id, much cheaper than `from_file`; raises only `ElfError`.

        Lets a cache keyed by build-id skip the symbol table of a binary it
        already holds (the same image in another container, say).
        """
        return _guarded(lambda s: _build_id(_Elf(s)), stream)

    @staticmethod
    def identify(stream: BinaryIO) -> ElfIdentity:
        """What a cache may key this file's table by (see `ElfIdentity`); raises only
        `ElfError`. Reads what `from_file` reads, without building the table."""
        return _guarded(_identity, stream)

    @classmethod
    def _parse(cls, stream: BinaryIO) -> ElfSymbols:
        elf = _Elf(stream)
        table, source = SymbolTable.empty(), ""
        chosen = _chosen_table(elf)
        if chosen is not None:
            header, entries, strtab = chosen
            keep_unsized = header.kind == _SHT_SYMTAB
            table = select_functions(entries, strtab, elf.section_ends(), keep_unsized=keep_unsized)
            source = header.name
        return cls(
            build_id=_build_id(elf),
            segments=elf.load_segments(),
            table=table,
            source=source,
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
        return self.table.lookup(vaddr)

    def lookup_many(self, vaddrs: Addresses) -> list[str | None]:
        """`lookup` of each link-time address, in order, with one vectorized search."""
        return self.table.lookup_many(vaddrs)

    def lookup_offsets(self, offsets: Addresses) -> list[str | None]:
        """The function at each file offset (as `file_offset_to_vaddr`, then `lookup`)."""
        keys = None if len(offsets) < SMALL_BATCH else as_addresses(offsets)
        if keys is None:  # few, or some value is no 64-bit offset: one by one
            return [self._lookup_offset(int(o)) for o in offsets]
        vaddrs = np.zeros(len(keys), np.uint64)
        loaded = np.zeros(len(keys), bool)
        for segment in self.segments:
            end = min(segment.offset + segment.filesz, MAX_ADDRESS)
            inside = ~loaded & (keys >= segment.offset) & (keys < end)
            vaddrs[inside] = keys[inside] - np.uint64(segment.offset) + np.uint64(segment.vaddr)
            loaded |= inside
        names: list[str | None] = [None] * len(keys)
        where = np.flatnonzero(loaded).tolist()
        for i, name in zip(where, self.table.lookup_many(vaddrs[loaded]), strict=True):
            names[i] = name
        return names

    def _lookup_offset(self, offset: int) -> str | None:
        vaddr = self.file_offset_to_vaddr(offset)
        return None if vaddr is None else self.table.lookup(vaddr)

    @property
    def nbytes(self) -> int:
        """Approximate memory held, for the symbolizer's byte cap."""
        return self.table.nbytes + 64 * len(self.segments) + 512

    def __len__(self) -> int:
        return len(self.table)


@dataclass(frozen=True, slots=True)
class ElfIdentity:
    """A file's build-id, and a digest of every byte its symbol table is built from.

    A build-id is only a claim: a forged file can carry libc's. Keyed by the
    digest too, a cached table serves only files whose headers, symbol and
    string tables, notes and program headers are the very same bytes, which
    give the very same table. Hashing them (SHA-256, cut to 128 bits) costs a
    read and a hash pass, less than building the table.
    """

    build_id: str | None
    digest: str  # hex
    # No .symtab with a defined function: a separate debug file may supply the
    # names, and must then be part of the key (Symbolizer).
    wants_debug_file: bool

    def key(self, debug_file: ElfIdentity | None = None) -> str:
        """The cache key, `debug_file` being the identity of the debug file used."""
        digest = self.digest if debug_file is None else _combined(self.digest, debug_file.digest)
        return f"{self.build_id or 'none'}-{digest}"


def _combined(*digests: str) -> str:
    return hashlib.sha256("-".join(digests).encode()).hexdigest()[: 2 * _DIGEST_BYTES]


def _chosen_table(elf: _Elf) -> tuple[_SectionHeader, Entries, bytes] | None:
    """The symbol table names come from, with its entries and strings: .symtab if it has
    a defined, named function, else .dynsym (exported ones only) if it has one."""
    for header in elf.symbol_tables():
        entries, strtab = elf.table_contents(header)
        keep_unsized = header.kind == _SHT_SYMTAB
        if has_functions(entries, strtab, len(elf.sections), keep_unsized=keep_unsized):
            return header, entries, strtab
    return None


def _identity(stream: BinaryIO) -> ElfIdentity:
    """Read exactly what `ElfSymbols._parse` reads, hashed, without building the table.

    So it fails where the parse would, and no byte the table depends on is left out.
    """
    elf = _Elf(stream, hashed=True)
    assert elf.hasher is not None
    # The header fields the layout comes from, and the size the ranges were checked against.
    stream.seek(0)
    elf.hasher.update(stream.read(_EHDR_SIZE[elf.elfclass]))
    elf.hasher.update(struct.pack("<Q", elf.size))
    chosen = _chosen_table(elf)
    build_id = _build_id(elf)
    elf.load_segments()
    from_symtab = chosen is not None and chosen[0].kind == _SHT_SYMTAB
    digest = elf.hasher.hexdigest()[: 2 * _DIGEST_BYTES]
    return ElfIdentity(build_id, digest, wants_debug_file=not from_symtab)


def read_named_section(stream: BinaryIO, name: str, max_size: int) -> tuple[bytes, bool] | None:
    """The bytes of the first section called `name`, and whether the file is little-endian.

    None if there is no such section, or it has no bytes in the file (SHT_NOBITS)
    or more than `max_size`. Raises only `ElfError`. The section headers are read
    as for the symbols: pyelftools builds an object per section to look one up by
    name, seconds for a file of many thousands of them.
    """

    def find(stream: BinaryIO) -> tuple[bytes, bool] | None:
        elf = _Elf(stream)
        section = next((s for s in elf.sections if s.name == name), None)
        if section is None or section.kind == _SHT_NOBITS or not 0 < section.size <= max_size:
            return None
        return elf.read(section.offset, section.size), elf.little_endian

    return _guarded(find, stream)


@dataclass(frozen=True, slots=True)
class NamedSymbols:
    """The link-time addresses of a few symbols (of any type) and the load segments."""

    values: dict[str, int]
    segments: tuple[LoadSegment, ...]
    little_endian: bool


def read_named_symbols(stream: BinaryIO, names: frozenset[str]) -> NamedSymbols:
    """Where `names` are defined (.symtab first, then .dynsym); raises only `ElfError`.

    For data symbols an interpreter exports (`_PyRuntime`, `Py_Version`...), which
    `ElfSymbols` leaves out: it keeps functions only. A name is looked up in the string
    table as bytes, so no string is decoded for the thousands of symbols not asked for.
    """

    def find(stream: BinaryIO) -> NamedSymbols:
        elf = _Elf(stream)
        values: dict[str, int] = {}
        for header in elf.symbol_tables():
            entries, strtab = elf.table_contents(header)
            defined = entries[(entries["shndx"] != 0) & (entries["value"] != 0)]
            for name in names - values.keys():
                found = _defined_value(defined, strtab, name.encode())
                if found is not None:
                    values[name] = found
        return NamedSymbols(values, elf.load_segments(), elf.little_endian)

    return _guarded(find, stream)


def _defined_value(entries: Entries, strtab: bytes, name: bytes) -> int | None:
    """The value of the first defined entry called `name`.

    Every place the bytes of `name` end in a NUL is a string `name` at that offset: a
    linker may point a symbol into the tail of a longer name.
    """
    needle = name + b"\0"
    start = 0
    while (at := strtab.find(needle, start)) >= 0:
        start = at + 1
        hits = entries[entries["name"] == at]
        if len(hits):
            return int(hits[0]["value"])
    return None


class _Elf:
    """Bounds-checked access to one ELF file's headers, sections and symbols."""

    def __init__(self, stream: BinaryIO, *, hashed: bool = False) -> None:
        # With `hashed`, every range read goes into a digest (ElfIdentity).
        self.hasher = hashlib.sha256() if hashed else None
        self.stream = stream
        self.size = stream.seek(0, os.SEEK_END)
        self.spent = 0  # bytes read so far, against MAX_FILE_BYTES
        ident = self.read(0, 16)
        if ident[:4] != b"\x7fELF":
            raise ElfError("not an ELF file")
        if ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise ElfError(f"unknown ELF class {ident[4]} or byte order {ident[5]}")
        self.elfclass = 32 if ident[4] == 1 else 64
        self.little_endian = ident[5] == 1
        self.header = struct_parse(_ehdr(self.little_endian, self.elfclass), stream, 0)
        raw = self._section_table()
        self.section_zero = raw[0] if len(raw) else None  # holds counts too large for the header
        self.sections = self._section_headers(raw)

    def check(self, offset: int, size: int) -> None:
        """Refuse a range past the end of the file, or over the byte budget, before
        touching it.

        The file size alone bounds nothing: a sparse file claims gigabytes at no
        cost to whoever made it. So one read is at most MAX_READ_BYTES and all of
        one file's at most MAX_FILE_BYTES. Truncation is an error rather than a
        silently shorter table.
        """
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ElfError(f"{size} bytes at offset {offset} lie past the end of the file")
        if size > MAX_READ_BYTES or self.spent + size > MAX_FILE_BYTES:
            raise ElfTooLarge(
                f"{size} bytes at offset {offset} (after {self.spent}) are over the budget"
            )

    def read(self, offset: int, size: int) -> bytes:
        """Exactly `size` bytes at `offset`, or ElfError."""
        self.check(offset, size)
        self.spent += size
        self.stream.seek(offset)
        data = self.stream.read(size)
        if len(data) != size:  # the file shrank since its size was taken
            raise ElfError(f"{size} bytes at offset {offset}: only {len(data)} read")
        if self.hasher is not None:
            self.hasher.update(struct.pack("<QQ", offset, size))
            self.hasher.update(data)
        return data

    def _section_table(self) -> npt.NDArray[np.void]:
        """The section headers as one structured array (empty if there are none).

        If they are too many for e_shnum, it is 0 and section 0's sh_size
        holds the count.
        """
        h = self.header
        dtype = _shdr_dtype(self.elfclass, self.little_endian)
        if not h["e_shoff"]:
            return np.zeros(0, dtype)
        count = h["e_shnum"] or int(self._entries_at(h["e_shoff"], 1, dtype)[0]["size"])
        if count and h["e_shentsize"] != dtype.itemsize:
            raise ElfError(f"unexpected section header size {h['e_shentsize']}")
        return self._entries_at(h["e_shoff"], count, dtype)

    def _entries_at(
        self, offset: int, count: int, dtype: np.dtype[np.void]
    ) -> npt.NDArray[np.void]:
        return np.frombuffer(self.read(offset, count * dtype.itemsize), dtype)

    def _section_headers(self, raw: npt.NDArray[np.void]) -> list[_SectionHeader]:
        names = b""
        if len(raw):
            index = self.header["e_shstrndx"]
            strtab = raw[int(raw[0]["link"]) if index == _SHN_XINDEX else index]
            names = self.read(int(strtab["offset"]), int(strtab["size"]))
        fields = ("name", "type", "addr", "offset", "size", "link", "entsize")
        return [
            _SectionHeader(
                name=decode(_string_at(names, name)),
                kind=kind,
                addr=addr,
                offset=offset,
                size=size,
                link=link,
                entsize=entsize,
            )
            for name, kind, addr, offset, size, link, entsize in zip(
                *(raw[f].tolist() for f in fields), strict=True
            )
        ]

    def program_headers(self, kind: int) -> list[tuple[int, int, int]]:
        """(offset, vaddr, filesz) of the program headers of one type.

        With PN_XNUM in e_phnum, the real count is section 0's sh_info.
        """
        h = self.header
        count = h["e_phnum"]
        if count == _PN_XNUM and self.section_zero is not None:
            count = int(self.section_zero["info"])
        dtype = _dtype(_PHDR64 if self.elfclass == 64 else _PHDR32, self.little_endian)
        if not h["e_phoff"]:
            return []
        if count and h["e_phentsize"] != dtype.itemsize:
            raise ElfError(f"unexpected program header size {h['e_phentsize']}")
        table = self._entries_at(h["e_phoff"], count, dtype)
        table = table[table["type"] == kind]
        fields = (table[f].tolist() for f in ("offset", "vaddr", "filesz"))
        return list(zip(*fields, strict=True))

    def load_segments(self) -> tuple[LoadSegment, ...]:
        return tuple(LoadSegment(*header) for header in self.program_headers(_PT_LOAD))

    def note_ranges(self) -> list[tuple[int, int]]:
        """(offset, size) of the notes: from sections, or PT_NOTE if stripped of those."""
        ranges = [(s.offset, s.size) for s in self.sections if s.kind == _SHT_NOTE]
        if not ranges:
            ranges = [(offset, size) for offset, _, size in self.program_headers(_PT_NOTE)]
        return ranges

    def symbol_tables(self) -> list[_SectionHeader]:
        """.symtab (all functions) first, then .dynsym (exported ones only)."""
        order = {_SHT_SYMTAB: 0, _SHT_DYNSYM: 1}
        tables = [s for s in self.sections if s.kind in order]
        return sorted(tables, key=lambda s: order[s.kind])

    def section_ends(self) -> U64:
        """End address of each section (clamped: a hostile one may overflow)."""
        ends = [min(s.addr + s.size, MAX_ADDRESS) for s in self.sections]
        return np.array(ends, dtype=np.uint64)

    def entries(self, table: _SectionHeader) -> Entries:
        """The raw entries of a symbol table, as a structured array over its bytes."""
        dtype = sym_dtype(self.elfclass, self.little_endian)
        if table.entsize != dtype.itemsize:
            raise ElfError(f"{table.name}: unexpected entry size {table.entsize}")
        data = self.read(table.offset, table.size - table.size % table.entsize)
        return np.frombuffer(data, dtype)

    def table_contents(self, table: _SectionHeader) -> tuple[Entries, bytes]:
        """The raw entries of a symbol table and the bytes of its string table."""
        if not 0 < table.link < len(self.sections):
            raise ElfError(f"{table.name}: bad string table index {table.link}")
        strtab_header = self.sections[table.link]
        strtab = self.read(strtab_header.offset, strtab_header.size)
        return self.entries(table), strtab


def sym_dtype(elfclass: int, little_endian: bool) -> np.dtype[np.void]:
    """One Elf32_Sym or Elf64_Sym entry, in the file's byte order."""
    return _dtype(_SYM64 if elfclass == 64 else _SYM32, little_endian)


def _shdr_dtype(elfclass: int, little_endian: bool) -> np.dtype[np.void]:
    """One Elf32_Shdr or Elf64_Shdr, in the file's byte order."""
    return _dtype(_SHDR64 if elfclass == 64 else _SHDR32, little_endian)


@functools.lru_cache(maxsize=16)
def _dtype(fields: str, little_endian: bool) -> np.dtype[np.void]:
    """A structured dtype from "name:code ..." (packed, as ELF structures are)."""
    order = "<" if little_endian else ">"
    pairs = (field.split(":") for field in fields.split())
    return np.dtype([(name, order + code) for name, code in pairs])


@functools.lru_cache(maxsize=4)
def _ehdr(little_endian: bool, elfclass: int) -> Any:
    """pyelftools' ELF header struct for one layout, built once: it is a
    stateless parser, so one serves every file of that layout."""
    structs = ELFStructs(little_endian=little_endian, elfclass=elfclass)
    structs.create_basic_structs()
    return structs.Elf_Ehdr


def _string_at(strtab: bytes, offset: int) -> bytes:
    """The NUL-terminated string at `offset` (empty if the offset is bogus)."""
    end = strtab.find(b"\0", offset)
    return strtab[offset : end if end >= 0 else len(strtab)]


def _build_id(elf: _Elf) -> str | None:
    """The GNU build-id as lowercase hex, if the file has one."""
    for offset, size in elf.note_ranges():
        if size > _MAX_NOTES_BYTES:
            continue  # no build-id note needs that much: not worth the budget
        found = _find_build_id(elf.read(offset, size), "<" if elf.little_endian else ">")
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
