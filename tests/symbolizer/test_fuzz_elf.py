"""Truncated, corrupted and hostile ELF files through the whole Symbolizer: never a crash.

Every case goes the way a container's binary goes in the agent: /proc/PID/maps,
the file opened through /proc/PID/root, build-id, symbol table, debug file by
build-id or .gnu_debuglink, names. fakeproc.check holds the promises: nothing
raises; a frame in a file the symbolizer cannot read is ``module+0xOFFSET``
(never a guess); a bad file is counted once in `elf_errors` and not parsed
again; a file that parses gives exactly its own symbols' names.

Cases, about 12,000 in all per run (a couple of minutes): truncation at every
boundary of four real binaries and a generated one (deterministic), then with
Hypothesis bit flips, hostile header fields, hostile symbol and string
tables, build-id notes, debug links and compressed sections. `make soak` runs
each Hypothesis test twenty times longer.
"""

from __future__ import annotations

import io
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from podflame.symbolizer import is_symbolized
from tests.symbolizer import elfgen
from tests.symbolizer.elfgen import SHDR, Section, Symbol
from tests.symbolizer.fakeproc import MODULE, FakeProc

if TYPE_CHECKING:
    from tests.symbolizer.conftest import Binaries

T = TypeVar("T")
# (examples per Hypothesis test) x SCALE; the soak run multiplies them.
SCALES = [1, pytest.param(20, marks=pytest.mark.soak, id="soak")]
DEBUG_NAME = "libfuzz.debug"
DEBUG_PATH = "/usr/lib/" + DEBUG_NAME
# Functions a debug file that the symbolizer must never read would name.
FORBIDDEN = "escaped_from_root"


def mostly(usual: T, others: list[T]) -> st.SearchStrategy[T]:
    """`usual` three times in four, else one of `others`: lies one at a time reach deeper."""
    return st.sampled_from([usual] * (3 * len(others)) + others)


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture
def proc(tmp_path: Path) -> Iterator[FakeProc]:
    """A fake /proc in memory where there is a tmpfs: thousands of cases write files."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path) as directory:
        yield FakeProc(Path(directory))


@dataclass(frozen=True)
class Corpus:
    """One binary to damage: its bytes, the offsets of its functions, and its debug files."""

    name: str
    data: bytes
    offsets: list[int]
    extra: dict[str, bytes | Path]


@pytest.fixture(scope="module")
def corpus(binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> list[Corpus]:
    """The test library, a PIE executable, a stripped library whose symbols are in a
    separate debug file (found by .gnu_debuglink), and a generated library."""
    out = tmp_path_factory.mktemp("fuzz-corpus")
    stripped, debug = out / "libburn-stripped.so", out / "libburn.debug"
    subprocess.run(["objcopy", "--only-keep-debug", binaries.lib, debug], check=True)
    subprocess.run(["strip", "-o", stripped, binaries.lib], check=True)
    subprocess.run(["objcopy", f"--add-gnu-debuglink={debug}", stripped], check=True)
    linked_debug: dict[str, bytes | Path] = {"/usr/lib/libburn.debug": debug.read_bytes()}
    generated = elfgen.library().layout()
    return [
        Corpus("lib", binaries.lib.read_bytes(), function_offsets(binaries.lib), {}),
        Corpus("pie", binaries.pie.read_bytes(), function_offsets(binaries.pie), {}),
        Corpus("debuglinked", stripped.read_bytes(), function_offsets(binaries.lib), linked_debug),
        Corpus("generated", generated.bytes(), elfgen.function_offsets(generated), {}),
    ]


def function_offsets(path: Path) -> list[int]:
    """File offsets of each function's start and of a byte inside it, and two beyond."""
    offsets = []
    with path.open("rb") as stream:
        elf = ELFFile(stream)
        symtab = elf.get_section_by_name(".symtab")
        for symbol in symtab.iter_symbols():  # type: ignore[union-attr]
            if symbol["st_info"]["type"] == "STT_FUNC" and symbol["st_value"]:
                at = next(elf.address_offsets(symbol["st_value"]), None)
                if at is not None:
                    offsets += [at, at + max(symbol["st_size"], 1) - 1]
    size = path.stat().st_size
    return [*sorted(set(offsets)), 0, size + 256]


def boundaries(data: bytes) -> set[int]:
    """Every offset where a structure of the file starts or ends, and its neighbours."""
    found = set(range(0, 65))
    elf = ELFFile(io.BytesIO(data))
    tables = [(elf["e_phoff"], elf["e_phentsize"], elf["e_phnum"])]
    tables.append((elf["e_shoff"], elf["e_shentsize"], elf["e_shnum"]))
    for start, size, count in tables:
        found.update(start + i * size for i in range(count + 1))
    for section in elf.iter_sections():
        found.update((section["sh_offset"], section["sh_offset"] + section["sh_size"]))
    for segment in elf.iter_segments():
        found.update((segment["p_offset"], segment["p_offset"] + segment["p_filesz"]))
    return {offset + delta for offset in found for delta in (-1, 0, 1) if offset + delta >= 0}


def reaches(proc: FakeProc, *kinds: str) -> None:
    """The generator produced every kind of outcome: it is not stuck on one side."""
    assert all(proc.tally[kind] for kind in kinds), proc.tally


# --- truncation (deterministic) -------------------------------------------------------------


def test_truncated_at_every_boundary(corpus: list[Corpus], proc: FakeProc) -> None:
    cases = 0
    outcomes = {"parsed": 0, "unreadable": 0}
    for item in corpus:
        for cut in sorted(boundaries(item.data)):
            if cut >= len(item.data):
                continue
            outcome = proc.symbolize(item.data[:cut], item.offsets, item.extra)
            outcomes["parsed" if outcome.parsed else "unreadable"] += 1
            cases += 1
    # Compilers put the section headers last, so every cut loses some: the file is
    # refused whole rather than read as a shorter table.
    assert cases > 900 and outcomes["parsed"] == 0, outcomes


def test_truncating_the_debug_file_falls_back_to_module_offsets(
    corpus: list[Corpus], proc: FakeProc
) -> None:
    """A stripped library whose debug file is cut anywhere names nothing wrongly."""
    item = next(c for c in corpus if c.name == "debuglinked")
    debug = item.extra["/usr/lib/libburn.debug"]
    assert isinstance(debug, bytes)
    intact = proc.symbolize(item.data, item.offsets, item.extra)
    assert "lib_burn" in intact.names and intact.stats.debug_files == 1
    for cut in sorted(boundaries(debug)):
        if cut < len(debug):
            extra: dict[str, bytes | Path] = {"/usr/lib/libburn.debug": debug[:cut]}
            outcome = proc.symbolize(item.data, item.offsets, extra)
            resolved = [name for name in outcome.names if is_symbolized(name)]
            assert set(resolved) <= set(intact.names), (cut, resolved)


# --- bit flips and hostile header fields (Hypothesis) ---------------------------------------


def regions(data: bytes) -> list[tuple[int, int]]:
    """[start, end) of the ELF header, program headers, section headers and the whole file."""
    elf = ELFFile(io.BytesIO(data))
    ph_end = elf["e_phoff"] + elf["e_phentsize"] * elf["e_phnum"]
    sh_end = elf["e_shoff"] + elf["e_shentsize"] * elf["e_shnum"]
    return [(0, 64), (elf["e_phoff"], ph_end), (elf["e_shoff"], sh_end), (0, len(data))]


@pytest.mark.parametrize("scale", SCALES)
def test_bit_flips(corpus: list[Corpus], proc: FakeProc, scale: int) -> None:
    targets = [(item, regions(item.data)) for item in corpus]

    @fuzz_settings(2500 * scale)
    @given(data=st.data())
    def flip(data: st.DataObject) -> None:
        item, spans = data.draw(st.sampled_from(targets))
        damaged = bytearray(item.data)
        for _ in range(data.draw(st.integers(1, 8))):
            start, end = data.draw(st.sampled_from(spans))
            position = data.draw(st.integers(start, end - 1))
            damaged[position] ^= 1 << data.draw(st.integers(0, 7))
        proc.symbolize(bytes(damaged), item.offsets, item.extra)

    flip()
    reaches(proc, "unreadable", "named", "unnamed")


# (offset in the structure, size) of every field, for patching.
EHDR_FIELDS = [
    (0x4, 1),
    (0x5, 1),
    (0x10, 2),
    (0x18, 8),
    (0x20, 8),
    (0x28, 8),
    (0x34, 2),
    (0x36, 2),
    (0x38, 2),
    (0x3A, 2),
    (0x3C, 2),
    (0x3E, 2),
]
SHDR_FIELDS = [
    (0, 4),
    (4, 4),
    (8, 8),
    (16, 8),
    (24, 8),
    (32, 8),
    (40, 4),
    (44, 4),
    (48, 8),
    (56, 8),
]
PHDR_FIELDS = [(0, 4), (4, 4), (8, 8), (16, 8), (24, 8), (32, 8), (40, 8), (48, 8)]


def field_values(size: int, file_size: int) -> st.SearchStrategy[int]:
    """Values that break parsers: zero, one, all ones, the sign bit, sizes near the file's."""
    top = (1 << (8 * size)) - 1
    near = [file_size - 64, file_size - 1, file_size, file_size + 1, 0xFF00, 0xFFFF, 1 << 40]
    special = [0, 1, 2, 24, 64, top, top >> 1, (top >> 1) + 1, *near]
    return st.sampled_from([v & top for v in special]) | st.integers(0, top)


@pytest.mark.parametrize("scale", SCALES)
def test_hostile_header_fields(corpus: list[Corpus], proc: FakeProc, scale: int) -> None:
    """Huge counts, offsets and sizes in the ELF, section and program headers."""

    def places(item: Corpus) -> list[tuple[int, int]]:
        elf = ELFFile(io.BytesIO(item.data))
        fields = list(EHDR_FIELDS)
        for index in range(elf["e_shnum"]):
            at = elf["e_shoff"] + index * SHDR.size
            fields += [(at + offset, size) for offset, size in SHDR_FIELDS]
        for index in range(elf["e_phnum"]):
            at = elf["e_phoff"] + index * 56
            fields += [(at + offset, size) for offset, size in PHDR_FIELDS]
        return fields

    targets = [(item, places(item)) for item in corpus]

    @fuzz_settings(2500 * scale)
    @given(data=st.data())
    def patch(data: st.DataObject) -> None:
        item, fields = data.draw(st.sampled_from(targets))
        damaged = bytearray(item.data)
        for _ in range(data.draw(st.integers(1, 3))):
            at, size = data.draw(st.sampled_from(fields))
            value = data.draw(field_values(size, len(damaged)))
            damaged[at : at + size] = value.to_bytes(size, "little")
        proc.symbolize(bytes(damaged), item.offsets, item.extra)

    patch()
    reaches(proc, "unreadable", "named", "unnamed")


# --- generated files: symbol and string tables ----------------------------------------------

SECTION_COUNT = 6  # null, note, text, symtab, strtab, shstrtab (library() without a link)
addresses = st.sampled_from([0, 1, 0x1000, 0x1040, 0x10FF, 1 << 47, (1 << 64) - 1]) | st.integers(
    0, (1 << 64) - 1
)
symbols = st.builds(
    Symbol,
    name=st.integers(0, 80) | st.sampled_from([0, (1 << 32) - 1]),
    value=addresses,
    size=st.sampled_from([0, 1, 0x40, (1 << 64) - 1]) | st.integers(0, 1 << 64 - 1),
    shndx=st.sampled_from([0, 1, 2, 3, 5, 6, 7, 0xFF00, 0xFFF1, 0xFFF2, 0xFFFF]),
    kind=st.sampled_from([elfgen.STT_FUNC, 10, elfgen.STT_OBJECT, 0, 15]),
    bind=st.sampled_from([elfgen.STB_LOCAL, elfgen.STB_GLOBAL, elfgen.STB_WEAK, 10, 15]),
)
string_tables = st.one_of(
    st.binary(max_size=80),
    st.binary(max_size=80).map(lambda b: b.replace(b"\0", b"_")),  # no terminator at all
    st.integers(1, 5000).map(lambda n: b"_" * n),  # underscores all the way
    st.just(b"\0" + b"a" * 9000),  # one name longer than any comparison goes
    st.lists(
        st.sampled_from(["main", "_Z1fv", "_RNvC1a1b", "\u00e9t\u00e9", "\xff"]), max_size=8
    ).map(lambda names: elfgen.strtab(names)[0]),
)
sizes = mostly(None, [0, 1, 23, 24, 25, 1 << 20, (1 << 64) - 1])


@pytest.mark.parametrize("scale", SCALES)
def test_hostile_symbol_and_string_tables(proc: FakeProc, scale: int) -> None:
    """Names past the table, unterminated or shared, symbols that overlap, wrap or point at
    sections that do not exist, tables that overlap, loop onto themselves or lie in size."""

    @fuzz_settings(2000 * scale)
    @given(
        entries=st.lists(symbols, max_size=40),
        aliases=st.integers(0, 300),
        names=string_tables,
        symtab_size=sizes,
        strtab_size=sizes,
        strtab_link=mostly(4, [3, 0, 1, 5, 6, 200]),
        entsize=mostly(24, [0, 1, 16, 48]),
        overlap=st.booleans(),
    )
    def tables(
        entries: list[Symbol],
        aliases: int,
        names: bytes,
        symtab_size: int | None,
        strtab_size: int | None,
        strtab_link: int,
        entsize: int,
        overlap: bool,
    ) -> None:
        lib = elfgen.library()
        # Many aliases of one address with one name: the tie-break's worst case.
        entries = entries + [Symbol(1, 0x1000, 0x40, 2)] * aliases
        symtab, strtab = lib.section(".symtab"), lib.section(".strtab")
        symtab.data, strtab.data = elfgen.symtab(entries), names
        symtab.size_override, strtab.size_override = symtab_size, strtab_size
        symtab.link, symtab.entsize = strtab_link, entsize
        layout = lib.layout()
        if overlap:  # the string table is the symbol table's own bytes
            at = layout.header_offsets[".strtab"] + 24
            struct.pack_into("<Q", layout.data, at, layout.section_offsets[".symtab"])
        proc.symbolize(layout.bytes(), [*elfgen.function_offsets(layout), 0, 20480])

    tables()
    reaches(proc, "unreadable", "named", "unnamed")


# --- build-id notes -------------------------------------------------------------------------

notes = st.builds(
    elfgen.note,
    name=st.sampled_from([b"GNU\0", b"GNU", b"", b"GNUX\0", b"GN\0\0"]),
    desc=st.binary(max_size=64) | st.sampled_from([b"", bytes(20), b"\xab" * 200]),
    kind=st.sampled_from([elfgen.NT_GNU_BUILD_ID, 1, 0, 0xFFFFFFFF]),
    namesz=st.none() | st.sampled_from([0, 3, 4, 5, 0xFFFFFFFF, 0x7FFFFFFF]),
    descsz=st.none() | st.sampled_from([0, 1, 19, 20, 21, 0xFFFFFFFF, 0xFFFFFFF0]),
)


@pytest.mark.parametrize("scale", SCALES)
def test_bad_build_id_notes(proc: FakeProc, scale: int) -> None:
    """Lying name and descriptor sizes, many notes, a PT_NOTE elsewhere, a build-id whose
    debug file (under /usr/lib/debug/.build-id) is itself broken."""

    @fuzz_settings(1500 * scale)
    @given(
        items=st.lists(notes, max_size=6),
        note_size=sizes,
        segment_offset=st.none() | st.sampled_from([0, 1, 0x1000, (1 << 64) - 1]),
        drop_section=st.booleans(),
        debug=st.none() | st.binary(max_size=200) | st.just(elfgen.library().layout().bytes()),
        symbols_elsewhere=st.booleans(),
    )
    def build_ids(
        items: list[bytes],
        note_size: int | None,
        segment_offset: int | None,
        drop_section: bool,
        debug: bytes | None,
        symbols_elsewhere: bool,
    ) -> None:
        lib = stripped_library() if symbols_elsewhere else elfgen.library()
        section = lib.section(".note.gnu.build-id")
        section.data = b"".join(items) + elfgen.build_id_note(bytes([0xAB]) * 20)
        section.size_override = note_size
        lib.segments[1].offset_override = segment_offset
        if drop_section:
            section.kind = elfgen.SHT_PROGBITS  # then only PT_NOTE finds the notes
        layout = lib.layout()
        extra: dict[str, bytes | Path] = {}
        if debug is not None:
            extra["/usr/lib/debug/.build-id/ab/" + "ab" * 19 + ".debug"] = debug
        proc.symbolize(layout.bytes(), elfgen.function_offsets(layout), extra)

    build_ids()
    reaches(proc, "unreadable", "named", "unnamed")


def stripped_library() -> elfgen.Library:
    """A library stripped of .symtab/.strtab: names must come from a debug file."""
    lib = elfgen.library()
    for name in (".symtab", ".strtab"):
        lib.section(name).kind = elfgen.SHT_PROGBITS
    return lib


# --- .gnu_debuglink -------------------------------------------------------------------------

link_names = mostly(
    DEBUG_NAME,
    [
        "",
        ".",
        "..",
        "../../../etc/passwd",
        "a/b",
        "x" * 5000,
        "loop.debug",
        "escape.debug",
        "dir.debug",
        "libfuzz.so",
    ],
).map(str.encode) | st.binary(max_size=40)


@pytest.mark.parametrize("scale", SCALES)
def test_bad_debuglinks(proc: FakeProc, tmp_path: Path, scale: int) -> None:
    """Names that are paths, empty, huge or the binary itself; wrong CRCs; sizes that lie;
    a debug file that is broken, a directory, a symlink loop or a link out of the root."""
    outside = tmp_path / "host-secret.debug"
    names, _ = elfgen.strtab([FORBIDDEN])
    secret = elfgen.library()
    secret.section(".strtab").data = names + b"\0" * 64  # every symbol named FORBIDDEN...
    outside.write_bytes(secret.layout().bytes())
    debug_file = elfgen.library().layout().bytes()

    @fuzz_settings(1500 * scale)
    @given(
        name=link_names,
        right_crc=mostly(True, [False]),
        crc=st.integers(0, 0xFFFFFFFF),
        link_size=sizes,
        compressed_flag=st.booleans(),
        damage=st.lists(
            st.tuples(st.integers(0, len(debug_file) - 1), st.integers(0, 255)), max_size=6
        ),
    )
    def links(
        name: bytes,
        right_crc: bool,
        crc: int,
        link_size: int | None,
        compressed_flag: bool,
        damage: list[tuple[int, int]],
    ) -> None:
        target = bytearray(debug_file)
        for position, value in damage:
            target[position] = value
        lib = stripped_library()
        checksum = zlib.crc32(target) if right_crc else crc
        lib.sections.append(
            Section(
                ".gnu_debuglink",
                elfgen.SHT_PROGBITS,
                elfgen.debuglink(name, checksum),
                align=4,
                size_override=link_size,
                flags=elfgen.SHF_COMPRESSED if compressed_flag else 0,
            )
        )
        layout = lib.layout()
        extra: dict[str, bytes | Path] = {
            DEBUG_PATH: bytes(target),
            "/usr/lib/loop.debug": Path("/usr/lib/loop.debug"),
            "/usr/lib/escape.debug": Path("../../../../../../../../" + str(outside)),
            "/usr/lib/.debug/dir.debug/x": b"",
        }
        outcome = proc.symbolize(layout.bytes(), elfgen.function_offsets(layout), extra)
        assert FORBIDDEN not in outcome.names

    links()
    reaches(proc, "named", "unnamed")  # named: the debug file was found and read


# --- compressed sections that lie ----------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
def test_compressed_section_lies(proc: FakeProc, scale: int) -> None:
    """SHF_COMPRESSED on the tables the symbolizer reads, with sizes that lie (a 2**63-byte
    claim over a few bytes of zlib) or no zlib at all: never decompressed, never trusted."""

    @fuzz_settings(1000 * scale)
    @given(
        which=st.lists(
            st.sampled_from([".symtab", ".strtab", ".note.gnu.build-id", ".shstrtab", ".text"]),
            min_size=1,
            max_size=3,
        ),
        claimed=st.sampled_from([0, 1, 1 << 20, 1 << 63, (1 << 64) - 1]),
        garbage=st.booleans(),
        in_debug_file=st.booleans(),
    )
    def lies(which: list[str], claimed: int, garbage: bool, in_debug_file: bool) -> None:
        lib = elfgen.library()
        for section in lib.sections:
            if section.name in which:
                section.flags |= elfgen.SHF_COMPRESSED
                section.data = (
                    elfgen.CHDR.pack(1, 0, claimed, 1) + b"\xff" * 16
                    if garbage
                    else elfgen.compressed(section.data, claimed_size=claimed)
                )
        layout = lib.layout()
        if not in_debug_file:
            proc.symbolize(layout.bytes(), elfgen.function_offsets(layout))
            return
        stripped = stripped_library()
        stripped.sections.append(
            Section(
                ".gnu_debuglink",
                elfgen.SHT_PROGBITS,
                elfgen.debuglink(DEBUG_NAME.encode(), 0),
                align=4,
            )
        )
        binary = stripped.layout()
        debug = layout.bytes()
        fixed = _with_debuglink_crc(binary.bytes(), zlib.crc32(debug))
        proc.symbolize(fixed, elfgen.function_offsets(binary), {DEBUG_PATH: debug})

    lies()
    reaches(proc, "named", "unnamed")


def _with_debuglink_crc(binary: bytes, crc: int) -> bytes:
    """Patch the CRC of the (last) .gnu_debuglink section, which ends with it."""
    elf = ELFFile(io.BytesIO(binary))
    section = elf.get_section_by_name(".gnu_debuglink")
    assert section is not None
    end = section["sh_offset"] + section["sh_size"]
    return binary[: end - 4] + struct.pack("<I", crc) + binary[end:]


def test_generated_library_is_what_binutils_reads(proc: FakeProc, tmp_path: Path) -> None:
    """The writer behind the hostile cases makes a file readelf and nm agree with."""
    path = tmp_path / "generated.so"
    layout = elfgen.library(link=elfgen.debuglink(b"x.debug", 0)).layout()
    path.write_bytes(layout.bytes())
    nm = subprocess.run(["nm", str(path)], capture_output=True, text=True, check=True).stdout
    assert {line.split()[-1] for line in nm.splitlines()} == set(elfgen.FUNCTIONS)
    readelf = subprocess.run(["readelf", "-n", "-S", str(path)], capture_output=True, text=True)
    assert "Build ID: 000102030405060708090a0b0c0d0e0f10111213" in readelf.stdout
    assert ".gnu_debuglink" in readelf.stdout and not readelf.stderr
    outcome = proc.symbolize(layout.bytes(), elfgen.function_offsets(layout))
    assert outcome.names == [
        "alpha",
        "alpha",
        "beta",
        "beta",
        "gamma_handler",
        "gamma_handler",
        "delta(int)",
        "delta(int)",
        "epsilon",
        "epsilon",
    ]
    assert MODULE.endswith("libfuzz.so")
