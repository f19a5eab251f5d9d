"""A small ELF64 little-endian writer, for hostile inputs built field by field.

Mutating a compiled binary reaches only the states a compiler produces, one
byte off. This writer lays out a file from a description (sections, segments,
symbols, notes), so a test can set any header field, count, offset or size to
what it likes, and still know where everything sits (`Layout`) to damage it
afterwards. It writes what the ELF specification says and nothing more; the
tests check one well-formed file against binutils (readelf, nm) to keep it honest.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

# Types, flags and constants from the ELF specification (elf.h).
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOTE, SHT_NOBITS, SHT_DYNSYM = (
    0,
    1,
    2,
    3,
    7,
    8,
    11,
)
SHF_ALLOC, SHF_EXECINSTR, SHF_COMPRESSED = 0x2, 0x4, 0x800
PT_LOAD, PT_NOTE = 1, 4
STT_FUNC, STT_OBJECT, STB_LOCAL, STB_GLOBAL, STB_WEAK = 2, 1, 0, 1, 2
NT_GNU_BUILD_ID = 3
ELFCOMPRESS_ZLIB = 1

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr, 64 bytes
PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr, 56 bytes
SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr, 64 bytes
SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym, 24 bytes
CHDR = struct.Struct("<IIQQ")  # Elf64_Chdr, 24 bytes
IDENT = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, version 1
ET_DYN, EM_X86_64 = 3, 62
TEXT_VADDR = 0x1000
PAGE = 0x1000


@dataclass
class Section:
    name: str
    kind: int
    data: bytes = b""
    flags: int = 0
    addr: int = 0
    link: int = 0
    info: int = 0
    align: int = 1
    entsize: int = 0
    # Written into the header instead of the real offset or size when set.
    offset_override: int | None = None
    size_override: int | None = None


@dataclass
class Segment:
    kind: int
    section: str  # the section whose bytes it covers
    vaddr: int = 0
    flags: int = 5  # R+X
    filesz_override: int | None = None
    offset_override: int | None = None


@dataclass
class Layout:
    """Where `build` put things, so a test can damage them precisely."""

    data: bytearray
    section_offsets: dict[str, int] = field(default_factory=dict)  # file offset of the bytes
    header_offsets: dict[str, int] = field(default_factory=dict)  # file offset of the Shdr
    section_index: dict[str, int] = field(default_factory=dict)
    shoff: int = 0
    phoff: int = 0

    def bytes(self) -> bytes:
        return bytes(self.data)


@dataclass
class Header:
    """ELF header fields a test may lie about; None means the true value."""

    shnum: int | None = None
    shoff: int | None = None
    shstrndx: int | None = None
    shentsize: int | None = None
    phnum: int | None = None
    phoff: int | None = None
    phentsize: int | None = None


def build(sections: list[Section], segments: list[Segment], header: Header | None = None) -> Layout:
    """An ELF file: header, program headers, section bytes (aligned), .shstrtab, section headers.

    Section 0 (SHT_NULL) and .shstrtab are added; links name sections by index
    in `sections` plus one (for section 0).
    """
    header = header or Header()
    names, name_offsets = _shstrtab(["", *(s.name for s in sections), ".shstrtab"])
    everything = [Section("", SHT_NULL), *sections, Section(".shstrtab", SHT_STRTAB, names)]
    phoff = EHDR.size
    out = bytearray(phoff + PHDR.size * len(segments))
    layout = Layout(out, phoff=phoff)
    for index, section in enumerate(everything):
        if index == 0:
            continue
        align = PAGE if section.flags & SHF_EXECINSTR else max(section.align, 1)
        out += bytes(-len(out) % align)
        layout.section_offsets[section.name] = len(out)
        layout.section_index[section.name] = index
        if section.kind != SHT_NOBITS:
            out += section.data
    out += bytes(-len(out) % 8)
    layout.shoff = len(out)
    for index, section in enumerate(everything):
        layout.header_offsets[section.name] = len(out)
        out += _shdr(section, name_offsets[index], layout.section_offsets.get(section.name, 0))
    for number, segment in enumerate(segments):
        PHDR.pack_into(out, phoff + number * PHDR.size, *_phdr(segment, everything, layout))
    EHDR.pack_into(out, 0, *_ehdr(header, layout, len(segments), len(everything)))
    return layout


def _shstrtab(names: list[str]) -> tuple[bytes, list[int]]:
    table, offsets = bytearray(b"\0"), []
    for name in names:
        if not name:
            offsets.append(0)
            continue
        offsets.append(len(table))
        table += name.encode() + b"\0"
    return bytes(table), offsets


def _shdr(section: Section, name: int, offset: int) -> bytes:
    size = len(section.data) if section.size_override is None else section.size_override
    if section.offset_override is not None:
        offset = section.offset_override
    return SHDR.pack(
        name,
        section.kind,
        section.flags,
        section.addr,
        offset,
        size,
        section.link,
        section.info,
        section.align,
        section.entsize,
    )


def _phdr(segment: Segment, sections: list[Section], layout: Layout) -> tuple[int, ...]:
    covered = next(s for s in sections if s.name == segment.section)
    offset = layout.section_offsets[covered.name]
    size = len(covered.data)
    filesz = size if segment.filesz_override is None else segment.filesz_override
    if segment.offset_override is not None:
        offset = segment.offset_override
    return (segment.kind, segment.flags, offset, segment.vaddr, segment.vaddr, filesz, size, PAGE)


def _ehdr(header: Header, layout: Layout, phnum: int, shnum: int) -> tuple[object, ...]:
    def pick(value: int | None, default: int) -> int:
        return default if value is None else value

    return (
        IDENT,
        ET_DYN,
        EM_X86_64,
        1,
        0,
        pick(header.phoff, layout.phoff),
        pick(header.shoff, layout.shoff),
        0,
        EHDR.size,
        pick(header.phentsize, PHDR.size),
        pick(header.phnum, phnum),
        pick(header.shentsize, SHDR.size),
        pick(header.shnum, shnum),
        pick(header.shstrndx, shnum - 1),
    )


# --- section contents ----------------------------------------------------------------------


@dataclass(frozen=True)
class Symbol:
    name: int  # offset into the string table
    value: int
    size: int
    shndx: int
    kind: int = STT_FUNC
    bind: int = STB_GLOBAL


def symtab(symbols: list[Symbol]) -> bytes:
    """A symbol table: the null symbol, then `symbols`."""
    entries = [SYM.pack(0, 0, 0, 0, 0, 0)]
    entries += [
        SYM.pack(s.name, s.bind << 4 | s.kind, 0, s.shndx, s.value, s.size) for s in symbols
    ]
    return b"".join(entries)


def strtab(names: list[str]) -> tuple[bytes, list[int]]:
    """A string table and the offset of each name in it."""
    table, offsets = bytearray(b"\0"), []
    for name in names:
        offsets.append(len(table))
        table += name.encode() + b"\0"
    return bytes(table), offsets


def note(
    name: bytes, desc: bytes, kind: int, *, namesz: int | None = None, descsz: int | None = None
) -> bytes:
    """One ELF note, 4-byte aligned; the sizes may lie."""
    head = struct.pack(
        "<III",
        len(name) if namesz is None else namesz,
        len(desc) if descsz is None else descsz,
        kind,
    )
    return head + name + bytes(-len(name) % 4) + desc + bytes(-len(desc) % 4)


def build_id_note(build_id: bytes) -> bytes:
    return note(b"GNU\0", build_id, NT_GNU_BUILD_ID)


def debuglink(name: bytes, crc: int) -> bytes:
    """A .gnu_debuglink: the NUL-terminated name, padding to 4, the CRC32."""
    body = name + b"\0"
    return body + bytes(-len(body) % 4) + struct.pack("<I", crc & 0xFFFFFFFF)


def compressed(data: bytes, *, claimed_size: int | None = None) -> bytes:
    """SHF_COMPRESSED contents: an Elf64_Chdr (whose size may lie), then zlib data."""
    size = len(data) if claimed_size is None else claimed_size
    return CHDR.pack(ELFCOMPRESS_ZLIB, 0, size, 1) + zlib.compress(data)


# --- a well-formed library ------------------------------------------------------------------

FUNCTIONS = ["alpha", "beta", "gamma_handler", "_Z5deltai", "epsilon"]
FUNCTION_SIZE = 0x40


@dataclass
class Library:
    """The parts of a small shared library, to change before `layout()`."""

    sections: list[Section]
    segments: list[Segment]
    header: Header = field(default_factory=Header)

    def section(self, name: str) -> Section:
        return next(s for s in self.sections if s.name == name)

    def layout(self) -> Layout:
        return build(self.sections, self.segments, self.header)


def library(build_id: bytes = bytes(range(20)), link: bytes | None = None) -> Library:
    """.note.gnu.build-id, .text with FUNCTIONS, .symtab/.strtab, optionally .gnu_debuglink.

    Section indices (1-based, after the null section): 1 note, 2 text, 3 symtab, 4 strtab.
    """
    text = bytes([0xC3]) * (FUNCTION_SIZE * len(FUNCTIONS))  # ret, ret, ...
    names, offsets = strtab(FUNCTIONS)
    symbols = [
        Symbol(offset, TEXT_VADDR + i * FUNCTION_SIZE, FUNCTION_SIZE, shndx=2)
        for i, offset in enumerate(offsets)
    ]
    sections = [
        Section(".note.gnu.build-id", SHT_NOTE, build_id_note(build_id), flags=SHF_ALLOC, align=4),
        Section(".text", SHT_PROGBITS, text, flags=SHF_ALLOC | SHF_EXECINSTR, addr=TEXT_VADDR),
        Section(".symtab", SHT_SYMTAB, symtab(symbols), link=4, info=1, align=8, entsize=SYM.size),
        Section(".strtab", SHT_STRTAB, names),
    ]
    if link is not None:
        sections.append(Section(".gnu_debuglink", SHT_PROGBITS, link, align=4))
    segments = [
        Segment(PT_LOAD, ".text", vaddr=TEXT_VADDR),
        Segment(PT_NOTE, ".note.gnu.build-id", flags=4),
    ]
    return Library(sections, segments)


def function_offsets(layout: Layout) -> list[int]:
    """File offsets of the start and the middle of each function in a `library()` layout."""
    text = layout.section_offsets[".text"]
    starts = [text + i * FUNCTION_SIZE for i in range(len(FUNCTIONS))]
    return [offset + delta for offset in starts for delta in (0, FUNCTION_SIZE // 2)]
