"""The symbol-table cache: parsed tables in memory (LRU, count and byte caps) and on disk.

Tables are keyed by build-id and a digest of the bytes they are built from (a
build-id alone is a claim any file can make, elf.ElfIdentity), so one image
running in many pods is parsed once, and a restarted agent reads them back
from its disk cache instead of parsing again. Two smaller maps save work in
front of it: an opened file's (device, inode, size, mtime) to its key, and a
mapped file's (path, device, inode) to its key, which names a forked child's
frames without opening anything.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .counters import PartCounters, counter
from .debugfiles import DebugFiles, Origin
from .diskcache import DiskCache
from .elf import ElfError, ElfIdentity, ElfSymbols, ElfTooLarge
from .procmaps import Mapping

MiB = 1 << 20

# (st_dev, st_ino, st_size, st_mtime_ns) of an opened binary: identifies a
# file's contents well enough when it has no build-id.
_StatKey = tuple[int, int, int, int]
# A mapped file as /proc/PID/maps names it: (path, device major, minor, inode).
_MappingKey = tuple[str, int, int, int]


def _mapping_key(mapping: Mapping) -> _MappingKey:
    return (mapping.path, mapping.dev_major, mapping.dev_minor, mapping.inode)


@dataclass
class TableStats:
    """Counters since the cache was created (podflame_agent_symbolizer_*_total)."""

    elf_errors: int = counter("Binaries (or debug files) that failed to parse, each once.")
    binaries_too_large: int = counter(
        "Binaries or debug files whose tables are over the byte budget of one file "
        "(elf.MAX_READ_BYTES, MAX_FILE_BYTES), whatever their size on disk: not read."
    )
    binaries_loaded: int = counter("Symbol tables parsed into the cache.")
    binaries_evicted: int = counter("Symbol tables dropped by the LRU (count or byte cap).")
    disk_cache_hits: int = counter("Symbol tables read from the disk cache instead of parsed.")
    disk_cache_writes: int = counter("Symbol tables written to the disk cache.")
    disk_cache_errors: int = counter("Damaged disk cache files removed, and failed writes.")
    mapping_cache_hits: int = counter(
        "Tables found by the mapped file's identity, without opening the file."
    )


class SymbolTables:
    """Parsed symbol tables, at most `max_binaries` and about `max_bytes` in memory (the
    most recent kept even if it alone is larger, or a big binary would be parsed again
    on every call); with a `cache_dir`, tables of binaries with a build-id also on disk,
    up to about `max_disk_bytes`.

    Thread-safe: its lock guards the maps and counters, and is never held across a
    file read or a parse, only around their bookkeeping.
    """

    def __init__(
        self,
        *,
        max_binaries: int = 256,
        max_bytes: int = 64 * MiB,
        cache_dir: Path | None = None,
        max_disk_bytes: int = 256 * MiB,
        debug: DebugFiles | None = None,
    ) -> None:
        if max_binaries < 1:
            raise ValueError("max_binaries must be at least 1")
        self.stats = TableStats()
        self.debug = debug or DebugFiles()
        self._max_binaries = max_binaries
        self._max_bytes = max_bytes
        self._disk = DiskCache(cache_dir, max_disk_bytes) if cache_dir is not None else None
        self._lock = threading.Lock()
        self._binaries: OrderedDict[str, ElfSymbols] = OrderedDict()
        self._bytes = 0  # sum of nbytes over _binaries
        # Opened file -> cache key, or None for a file that failed to parse.
        # Saves re-reading the build-id (and re-failing) on every call.
        self._by_stat: OrderedDict[_StatKey, str | None] = OrderedDict()
        # Mapped file -> cache key, learnt from every file opened. A process
        # forked from one already seen maps the same files: its tables are
        # found without opening anything, even after it has exited (under
        # process churn most children are gone before they can be captured).
        self._by_mapping: OrderedDict[_MappingKey, str] = OrderedDict()

    def collector(self, prefix: str) -> PartCounters:
        return PartCounters(prefix, self.stats)

    @property
    def cached_bytes(self) -> int:
        """Approximate memory held by the in-memory symbol tables."""
        return self._bytes

    def cache_sizes(self) -> dict[str, int]:
        """Entries per in-memory map (the agent exports them as gauges)."""
        return {
            "symbol_tables": len(self._binaries),
            "symbol_table_bytes": self._bytes,
            "opened_files": len(self._by_stat),
            "mapped_files": len(self._by_mapping),
        }

    def known(self, mapping: Mapping) -> ElfSymbols | None:
        """The cached table of a file another process mapped (same path, device and inode).

        A replaced file has another inode, so a stale table is never used for it.
        """
        with self._lock:
            key = self._by_mapping.get(_mapping_key(mapping))
            if key is None or key not in self._binaries:
                return None
            self._by_mapping.move_to_end(_mapping_key(mapping))
            self._binaries.move_to_end(key)
            self.stats.mapping_cache_hits += 1
            return self._binaries[key]

    def read(self, stream: BinaryIO, mapping: Mapping, origin: Origin) -> ElfSymbols | None:
        """The symbol table of an opened mapped file (cached; parsed on a miss); closes it."""
        with stream:
            # Another process's capture may have read the same file since this one opened it.
            known = self.known(mapping)
            if known is not None:
                return known
            found = self._symbols_of(stream, origin)
        if found is None:
            return None
        key, symbols = found
        with self._lock:
            self._by_mapping[_mapping_key(mapping)] = key
            self._by_mapping.move_to_end(_mapping_key(mapping))
            if len(self._by_mapping) > 4 * self._max_binaries:
                self._by_mapping.popitem(last=False)
        return symbols

    def _symbols_of(self, stream: BinaryIO, origin: Origin) -> tuple[str, ElfSymbols] | None:
        """(cache key, symbols) of an open binary, parsing it only on a cache miss."""
        st = os.fstat(stream.fileno())
        stat_key: _StatKey = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if stat_key in self._by_stat:
                self._by_stat.move_to_end(stat_key)
                key = self._by_stat[stat_key]
                if key is None:
                    return None  # known bad, already counted
                if key in self._binaries:
                    self._binaries.move_to_end(key)
                    return key, self._binaries[key]
        try:
            return self._load(stream, stat_key, origin)
        except ElfError as error:
            self._count_elf_error(error)
            with self._lock:
                self._remember(stat_key, None)
            return None

    def _load(self, stream: BinaryIO, stat_key: _StatKey, origin: Origin) -> tuple[str, ElfSymbols]:
        """Identify the file (and its debug file), then parse it unless that is cached.

        The key is the build-id and a digest of the bytes the table comes from
        (elf.ElfIdentity): a forged file with another's build-id gets a key of
        its own, while copies of one library in a thousand pods share one.
        """
        identity = ElfSymbols.identify(stream)
        debug = self.debug.open_for(stream, identity, origin) if identity.wants_debug_file else None
        try:
            debug_identity = self._identify_debug(debug)
            key = identity.key(debug_identity)
            cached = self._cached(stat_key, key)
            if cached is not None:
                return key, cached
            symbols = self._from_disk(key, identity.build_id)
            parsed = symbols is None
            if symbols is None:
                stream.seek(0)
                symbols = self._parse(stream, identity.build_id, debug if debug_identity else None)
                self._to_disk(key, symbols)
            with self._lock:
                self.stats.binaries_loaded += parsed
                self._keep(key, symbols)
            return key, symbols
        finally:
            if debug is not None:
                debug.close()

    def _cached(self, stat_key: _StatKey, key: str) -> ElfSymbols | None:
        """The table under `key` if held; the opened file is remembered as having it."""
        with self._lock:
            self._remember(stat_key, key)
            cached = self._binaries.get(key)
            if cached is not None:
                self._binaries.move_to_end(key)
            return cached

    def _keep(self, key: str, symbols: ElfSymbols) -> None:
        """Add to the in-memory LRU, evicting past the count and byte caps (under the lock)."""
        previous = self._binaries.pop(key, None)  # another thread may have parsed it too
        if previous is not None:
            self._bytes -= previous.nbytes
        self._binaries[key] = symbols
        self._bytes += symbols.nbytes
        while len(self._binaries) > 1 and (
            len(self._binaries) > self._max_binaries or self._bytes > self._max_bytes
        ):
            _, evicted = self._binaries.popitem(last=False)
            self._bytes -= evicted.nbytes
            self.stats.binaries_evicted += 1

    def _from_disk(self, key: str, build_id: str | None) -> ElfSymbols | None:
        if self._disk is None or build_id is None:
            return None
        symbols = self._disk.load(key)
        self._sync_disk_stats(self._disk)
        return symbols

    def _to_disk(self, key: str, symbols: ElfSymbols) -> None:
        if self._disk is not None and symbols.build_id is not None:
            self._disk.store(key, symbols)
            self._sync_disk_stats(self._disk)

    def _sync_disk_stats(self, disk: DiskCache) -> None:
        self.stats.disk_cache_hits = disk.stats.hits
        self.stats.disk_cache_writes = disk.stats.writes
        self.stats.disk_cache_errors = disk.stats.errors

    def _parse(self, stream: BinaryIO, build_id: str | None, debug: BinaryIO | None) -> ElfSymbols:
        """Symbols of the binary: its .symtab, else its debug file's, else its .dynsym."""
        symbols = ElfSymbols.from_file(stream)
        if symbols.source == ".symtab" or debug is None:
            return symbols
        try:
            return self.debug.named_from(symbols, build_id, debug)
        except ElfError as error:
            self._count_elf_error(error)
            return symbols

    def _identify_debug(self, debug: BinaryIO | None) -> ElfIdentity | None:
        """The debug file's identity, part of the key; None (not used) if it is no ELF file."""
        if debug is None:
            return None
        try:
            return ElfSymbols.identify(debug)
        except ElfError as error:
            self._count_elf_error(error)
            return None

    def _count_elf_error(self, error: ElfError) -> None:
        with self._lock:
            if isinstance(error, ElfTooLarge):
                self.stats.binaries_too_large += 1
            else:
                self.stats.elf_errors += 1

    def _remember(self, stat_key: _StatKey, key: str | None) -> None:
        """Record which cache entry an opened file maps to (bounded, LRU; under the lock)."""
        self._by_stat[stat_key] = key
        self._by_stat.move_to_end(stat_key)
        if len(self._by_stat) > 4 * self._max_binaries:
            self._by_stat.popitem(last=False)
