"""A /proc of one process that maps one file, for driving the whole Symbolizer with any bytes.

`Symbolizer(proc=...)` reads /proc/PID/maps and opens binaries through
/proc/PID/root, so a directory laid out the same way lets a test hand it
hostile files (and debug files, symbolic links) without running a process
for each. Everything below the directory is real files; nothing is faked in
the symbolizer itself.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from podflame.symbolizer import Symbolizer, SymbolizerStats, is_symbolized
from podflame.symbolizer.demangle import demangle
from podflame.symbolizer.elf import ElfError, ElfSymbols
from podflame.symbolizer.symbolizer import fallback_frame

PID = 4242
MODULE = "/usr/lib/libfuzz.so"
START = 0x7F12_3400_0000
SPAN = 1 << 24  # the mapping covers file offsets [0, SPAN)


@dataclass
class Outcome:
    names: list[str]
    stats: SymbolizerStats
    parsed: ElfSymbols | None  # the binary alone, None if it is no readable ELF file

    @property
    def kind(self) -> str:
        """unreadable (no ELF file), named (some frame has a name) or unnamed."""
        if self.parsed is None:
            return "unreadable"
        return "named" if any(is_symbolized(name) for name in self.names) else "unnamed"


class FakeProc:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.root = directory / str(PID) / "root"
        # How the cases went, so a test can tell its generator reaches every outcome.
        self.tally: Counter[str] = Counter()
        self._created: list[Path] = []

    def install(self, binary: bytes, extra: dict[str, bytes | Path] | None = None) -> None:
        """The binary at MODULE, and `extra` files (bytes) or links (Path), replacing the
        previous case's (files only: removing directories is slow on some disks)."""
        for path in self._created:
            path.unlink()
        self._created = []
        for name, content in {MODULE: binary, **(extra or {})}.items():
            target = self.in_root(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                os.symlink(content, target)
            else:
                target.write_bytes(content)  # a new file, so a new inode every time
            self._created.append(target)
        inode = self.in_root(MODULE).stat().st_ino
        maps = f"{START:x}-{START + SPAN:x} r-xp 00000000 08:01 {inode} {MODULE}\n"
        (self.directory / str(PID) / "maps").write_text(maps)

    def in_root(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def symbolize(
        self, binary: bytes, offsets: list[int], extra: dict[str, bytes | Path] | None = None
    ) -> Outcome:
        """Install `binary` (and `extra`, by in-root path) and symbolize its file `offsets`,
        checking every promise the symbolizer makes about bad input."""
        self.install(binary, extra)
        return self.symbolize_installed(binary, offsets)

    def symbolize_installed(self, binary: bytes, offsets: list[int]) -> Outcome:
        symbolizer = Symbolizer(proc=self.directory)
        addresses = [START + offset for offset in offsets]
        names = symbolizer.user(PID, addresses)
        outcome = Outcome(names, symbolizer.stats, _parse_alone(binary))
        check(outcome, offsets)
        self.tally[outcome.kind] += 1
        # Asked again, the same answer, and a bad file is not parsed (or counted) twice.
        before = (symbolizer.stats.elf_errors, symbolizer.stats.binaries_loaded)
        assert symbolizer.user(PID, addresses) == names
        assert (symbolizer.stats.elf_errors, symbolizer.stats.binaries_loaded) == before
        return outcome


def _parse_alone(binary: bytes) -> ElfSymbols | None:
    """The binary through the public parser: a table, or ElfError and nothing else."""
    try:
        return ElfSymbols.from_file(io.BytesIO(binary))
    except ElfError:
        return None


def check(outcome: Outcome, offsets: list[int]) -> None:
    names, stats = outcome.names, outcome.stats
    assert len(names) == len(offsets)
    for name, offset in zip(names, offsets, strict=True):
        assert isinstance(name, str) and name
        if not is_symbolized(name):
            # Never [unknown] for a frame in a file: its module and offset are known.
            assert name == fallback_frame(MODULE, offset), (name, offset)
    if outcome.parsed is None:
        assert names == [fallback_frame(MODULE, offset) for offset in offsets]
        assert stats.elf_errors == 1, stats
        assert stats.binaries_loaded == 0
        assert stats.frames_unresolved == len(offsets)
        return
    assert stats.elf_errors <= 1, stats  # at most its debug file failed
    if outcome.parsed.source == ".symtab":  # no debug file involved: names are the binary's
        own = outcome.parsed.lookup_offsets(offsets)
        expected = [
            fallback_frame(MODULE, offset) if name is None else demangle(name)
            for name, offset in zip(own, offsets, strict=True)
        ]
        assert names == expected
