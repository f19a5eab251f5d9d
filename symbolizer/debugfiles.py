"""Debug-file lookup, the symbolizer's part that names stripped binaries.

Finds a binary's separate debug file inside the process's root (by build-id
or .gnu_debuglink, debuginfo.py) and lays the debug file's table over the
binary's load segments. ELF errors are the caller's to count (the symbol-table
cache counts every file that fails to parse, binary or debug file, once).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .counters import PartCounters, counter
from .debuginfo import DebugFileStats, open_debug_file, read_debuglink
from .elf import ElfIdentity, ElfSymbols


@dataclass(frozen=True)
class Origin:
    """Where a binary was opened from, to find its debug file beside it."""

    root: Path  # /proc/PID/root: the process's view of the filesystem
    path: str  # the binary's path in that view


@dataclass
class DebugStats:
    """Counters since the part was created (podflame_agent_symbolizer_debug_*_total)."""

    debug_files: int = counter("Binaries named from a separate debug file.")
    debug_files_unchecked: int = counter(
        "Debuglink candidates too big to CRC-check (debuginfo.MAX_CRC_BYTES): not used."
    )


class DebugFiles:
    """Opens binaries' separate debug files and reads their tables. Thread-safe (the
    counters are increments of ints, the lookup keeps no state)."""

    def __init__(self) -> None:
        self.stats = DebugStats()
        self._lookup = DebugFileStats()

    def collector(self, prefix: str) -> PartCounters:
        return PartCounters(prefix, self.stats)

    def open_for(self, stream: BinaryIO, identity: ElfIdentity, origin: Origin) -> BinaryIO | None:
        """The binary's separate debug file, open (found inside the process's root)."""
        stream.seek(0)
        link = read_debuglink(stream)
        st = os.fstat(stream.fileno())
        debug = open_debug_file(
            origin.root,
            origin.path,
            identity.build_id,
            link[0] if link else None,
            debuglink_crc=link[1] if link else None,
            binary=(st.st_dev, st.st_ino),
            stats=self._lookup,
        )
        self.stats.debug_files_unchecked = self._lookup.too_big_to_check
        return debug

    def named_from(self, symbols: ElfSymbols, build_id: str | None, debug: BinaryIO) -> ElfSymbols:
        """`symbols` with the debug file's table instead, if it has one (ElfError if it
        does not parse)."""
        debug.seek(0)
        table = ElfSymbols.from_file(debug).table
        if len(table) == 0:
            return symbols
        self.stats.debug_files += 1
        # The debug file's sections sit at the binary's addresses; the load
        # segments that map file offsets to them are the binary's own.
        return ElfSymbols(build_id=build_id, segments=symbols.segments, table=table, source="debug")
