"""The facade the agent uses: stacks of addresses in, function names out.

User frames go address -> executable mapping (from /proc/PID/maps) -> file
offset -> link-time address (via the binary's PT_LOAD headers) -> symbol.
Binaries are opened through /proc/PID/root so that a container's files are
read from the container's mount namespace, and their symbol tables are cached
by build-id, so one image running in many pods is parsed once.

Nothing here raises for bad input: a frame that cannot be named becomes
``module+0xOFFSET`` (still useful, and never a wrong name) or ``[unknown]``,
and the problem is counted in `SymbolizerStats`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .elf import ElfError, ElfSymbols
from .kallsyms import KernelSymbols
from .procmaps import Mapping, MappingIndex, ProcessGone, read_maps

UNKNOWN = "[unknown]"

# (st_dev, st_ino, st_size, st_mtime_ns) of an opened binary: identifies a
# file's contents well enough when it has no build-id.
_StatKey = tuple[int, int, int, int]
_CacheKey = str | _StatKey


@dataclass
class SymbolizerStats:
    """Counters since the Symbolizer was created (the agent exports them)."""

    frames_resolved: int = 0
    frames_unresolved: int = 0
    elf_errors: int = 0  # binaries that failed to parse (each counted once)
    binaries_loaded: int = 0  # symbol tables parsed into the cache
    binaries_evicted: int = 0  # symbol tables dropped by the LRU
    processes_gone: int = 0  # user() calls for a pid that no longer exists
    maps_errors: int = 0  # user() calls whose maps were unreadable otherwise


class Symbolizer:
    """Resolves kernel and user addresses to function names.

    Not thread-safe: the agent symbolizes from one thread.
    """

    def __init__(
        self,
        *,
        max_binaries: int = 256,
        proc: Path = Path("/proc"),
        kallsyms: KernelSymbols | None = None,
    ) -> None:
        if max_binaries < 1:
            raise ValueError("max_binaries must be at least 1")
        self.stats = SymbolizerStats()
        self._max_binaries = max_binaries
        self._proc = proc
        self._kallsyms = kallsyms
        self._binaries: OrderedDict[_CacheKey, ElfSymbols] = OrderedDict()
        # Opened file -> cache key, or None for a file that failed to parse.
        # Saves re-reading the build-id (and re-failing) on every call.
        self._by_stat: OrderedDict[_StatKey, _CacheKey | None] = OrderedDict()

    # Kernel ------------------------------------------------------------

    def kernel(self, addresses: Sequence[int]) -> list[str]:
        """Names of kernel text addresses; ``[unknown]`` where there is none."""
        table = self._kernel_symbols()
        return [self._counted(table.lookup(a) if table else None) for a in addresses]

    def refresh(self) -> None:
        """Reload kernel symbols if modules changed; call once per interval, not per stack."""
        if self._kallsyms is not None:
            self._kallsyms.refresh()

    def _kernel_symbols(self) -> KernelSymbols | None:
        """The kernel table, loaded on first use so user-only callers never pay for it."""
        if self._kallsyms is None:
            try:
                self._kallsyms = KernelSymbols(self._proc / "kallsyms", self._proc / "modules")
            except OSError:
                return None  # no procfs access: every kernel frame is unknown
        return self._kallsyms

    # User --------------------------------------------------------------

    def user(self, pid: int, addresses: Sequence[int]) -> list[str]:
        """Names of the user-space `addresses` of process `pid`, in order.

        Reads /proc/PID/maps once, so pass all of a process's addresses (many
        stacks) in one call. Never raises: a vanished process gives
        ``[unknown]`` for every frame and counts in `stats.processes_gone`.
        """
        try:
            index = MappingIndex(read_maps(pid, self._proc))
        except ProcessGone:
            self.stats.processes_gone += 1
            return [self._counted(None) for _ in addresses]
        except OSError:
            self.stats.maps_errors += 1
            return [self._counted(None) for _ in addresses]
        # One binary lookup per mapping per call, however many frames hit it.
        tables: dict[Mapping, ElfSymbols | None] = {}
        return [self._user_frame(pid, index, a, tables) for a in addresses]

    def _user_frame(
        self,
        pid: int,
        index: MappingIndex,
        address: int,
        tables: dict[Mapping, ElfSymbols | None],
    ) -> str:
        """One frame: a function name, else ``module+0xOFFSET``, else ``[unknown]``."""
        mapping = index.find(address)
        if mapping is None:
            return self._counted(None)
        if not mapping.is_file:
            return self._special_frame(pid, mapping, address)
        if mapping not in tables:
            tables[mapping] = self._binary(pid, mapping)
        offset = mapping.file_offset(address)
        name = _symbol_at(tables[mapping], offset)
        if name is not None:
            return self._counted(name)
        self.stats.frames_unresolved += 1
        return f"{os.path.basename(mapping.path)}+0x{offset:x}"

    def _special_frame(self, pid: int, mapping: Mapping, address: int) -> str:
        """A frame in memory not backed by a file.

        [vdso] and [vsyscall] keep their names. Anonymous executable memory is
        JIT code: this is where a /tmp/perf-PID.map lookup would go.
        """
        self.stats.frames_unresolved += 1
        return mapping.path if mapping.is_pseudo else UNKNOWN

    def _counted(self, name: str | None) -> str:
        if name is None:
            self.stats.frames_unresolved += 1
            return UNKNOWN
        self.stats.frames_resolved += 1
        return name

    # Binaries ----------------------------------------------------------

    def _binary(self, pid: int, mapping: Mapping) -> ElfSymbols | None:
        """The symbol table of the file behind `mapping`, or None if unavailable."""
        stream = self._open_binary(pid, mapping)
        if stream is None:
            return None
        with stream:
            return self._symbols_of(stream)

    def _open_binary(self, pid: int, mapping: Mapping) -> BinaryIO | None:
        """Open the mapped file as the process sees it.

        /proc/PID/root/<path> resolves the path in the process's mount
        namespace (a container's image). /proc/PID/map_files/<start>-<end> is
        the mapped file itself, even if deleted or replaced since, but needs
        CAP_SYS_ADMIN. The inode must match the mapping: a file upgraded on
        disk after it was mapped would otherwise give wrong names.
        """
        base = self._proc / str(pid)
        candidates = [base / "map_files" / f"{mapping.start:x}-{mapping.end:x}"]
        if not mapping.deleted:
            candidates.insert(0, base / "root" / mapping.path.lstrip("/"))
        for path in candidates:
            try:
                stream = open(path, "rb")  # noqa: SIM115 - returned to the caller
            except OSError:
                continue
            if os.fstat(stream.fileno()).st_ino == mapping.inode:
                return stream
            stream.close()
        return None

    def _symbols_of(self, stream: BinaryIO) -> ElfSymbols | None:
        """Cached symbols of an open binary, parsing it only on a cache miss."""
        st = os.fstat(stream.fileno())
        stat_key: _StatKey = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if stat_key in self._by_stat:
            self._by_stat.move_to_end(stat_key)
            key = self._by_stat[stat_key]
            if key is None:
                return None  # known bad, already counted
            if key in self._binaries:
                self._binaries.move_to_end(key)
                return self._binaries[key]
        try:
            return self._load(stream, stat_key)
        except ElfError:
            self.stats.elf_errors += 1
            self._remember(stat_key, None)
            return None

    def _load(self, stream: BinaryIO, stat_key: _StatKey) -> ElfSymbols:
        """Read the build-id, then the full table unless that build is cached."""
        build_id = ElfSymbols.read_build_id(stream)
        key: _CacheKey = f"build-id:{build_id}" if build_id else stat_key
        self._remember(stat_key, key)
        if key in self._binaries:
            self._binaries.move_to_end(key)
            return self._binaries[key]
        symbols = self._parse(stream, build_id)
        self._binaries[key] = symbols
        self.stats.binaries_loaded += 1
        if len(self._binaries) > self._max_binaries:
            self._binaries.popitem(last=False)
            self.stats.binaries_evicted += 1
        return symbols

    def _parse(self, stream: BinaryIO, build_id: str | None) -> ElfSymbols:
        """Symbols of the binary itself.

        This is where a separate debug file (by `build_id` under
        /usr/lib/debug/.build-id, or via .gnu_debuglink) would be preferred
        once supported.
        """
        return ElfSymbols.from_file(stream)

    def _remember(self, stat_key: _StatKey, key: _CacheKey | None) -> None:
        """Record which cache entry an opened file maps to (bounded, LRU)."""
        self._by_stat[stat_key] = key
        self._by_stat.move_to_end(stat_key)
        if len(self._by_stat) > 4 * self._max_binaries:
            self._by_stat.popitem(last=False)


def _symbol_at(symbols: ElfSymbols | None, offset: int) -> str | None:
    """The function at file `offset` of a binary, if its table names one."""
    if symbols is None:
        return None
    vaddr = symbols.file_offset_to_vaddr(offset)
    return symbols.lookup(vaddr) if vaddr is not None else None
