"""The facade the agent uses: stacks of addresses in, function names out.

User frames go address -> executable mapping (from /proc/PID/maps) -> file
offset -> link-time address (via the binary's PT_LOAD headers) -> symbol.
Binaries are opened through /proc/PID/root so that a container's files are
read from the container's mount namespace, and their symbol tables are cached
by build-id and a digest of the bytes they are built from (a build-id alone
is a claim any file can make), so one image running in many pods is parsed
once: in memory
(least recently used out, past a count and a byte cap) and, if given a
directory, on disk, so that a restarted agent does not parse again.

A binary without a .symtab is looked up in a separate debug file (by
build-id or .gnu_debuglink, inside the process's root), JIT code in the
process's perf map, and names are demangled (C++, Rust legacy and v0).

A process's mappings and opened symbol tables are captured as a
`ProcessImage` while it lives, so that a process that exits before its
samples are symbolized keeps its names.

Nothing here raises for bad input: a frame that cannot be named becomes
``module+0xOFFSET`` (still useful, and never a wrong name) or ``[unknown]``,
and the problem is counted in `SymbolizerStats`.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .debuginfo import DebugFileStats, open_debug_file, read_debuglink
from .demangle import demangle
from .diskcache import DiskCache
from .elf import ElfError, ElfIdentity, ElfSymbols, ElfTooLarge
from .files import open_in_root, open_regular
from .kallsyms import KernelSymbols
from .perfmap import PerfMap, PerfMaps
from .procmaps import Mapping, MappingIndex, ProcessGone, read_maps
from .symbols import Symbol
from .text import display

UNKNOWN = "[unknown]"
MiB = 1 << 20

# How a frame that could not be named looks: its module and file offset.
_FALLBACK = re.compile(r".+\+0x[0-9a-f]+")


def fallback_frame(module_path: str, offset: int) -> str:
    return f"{display(os.path.basename(module_path))}+0x{offset:x}"


def _fallback_symbol(module_path: str, offset: int) -> Symbol:
    module = display(os.path.basename(module_path))
    return Symbol(f"{module}+0x{offset:x}", module, offset, resolved=False)


def is_symbolized(name: str) -> bool:
    """False for the frames this module emits when it cannot name a function."""
    return name != UNKNOWN and not _FALLBACK.fullmatch(name)


@dataclass(frozen=True)
class ProcessImage:
    """What it takes to symbolize one process, captured while it lives."""

    pid: int
    mappings: MappingIndex
    # Executable file mappings opened so far and their symbols (None:
    # unreadable or not ELF); filled in as frames need them.
    tables: dict[Mapping, ElfSymbols | None]
    jit: PerfMap | None  # the process's perf map, if it has JIT code and one
    # Files an eager capture opened but whose symbols are not read yet: reading
    # a big binary's table takes far longer than opening it, so a capture only
    # opens (see Symbolizer.image). Read by `read_opened` or when a frame first
    # needs one, and closed then.
    opened: dict[Mapping, BinaryIO] = field(default_factory=dict)

    def close(self) -> None:
        """Close the files still waiting to be read (the image is being dropped)."""
        for stream in self.opened.values():
            stream.close()
        self.opened.clear()


@dataclass(frozen=True)
class PendingRead:
    """An opened file taken from a capture (`Symbolizer.take_opened`), being read."""

    image: ProcessImage
    mapping: Mapping
    stream: BinaryIO

    def attach(self, symbols: ElfSymbols | None) -> None:
        """Give the image its table, unless a frame needed it meanwhile (and read it)."""
        self.image.tables.setdefault(self.mapping, symbols)


@dataclass(frozen=True)
class _Origin:
    """Where a binary was opened from, to find its debug file beside it."""

    root: Path  # /proc/PID/root: the process's view of the filesystem
    path: str  # the binary's path in that view


# (st_dev, st_ino, st_size, st_mtime_ns) of an opened binary: identifies a
# file's contents well enough when it has no build-id.
_StatKey = tuple[int, int, int, int]
# A mapped file as /proc/PID/maps names it: (path, device major, minor, inode).
_MappingKey = tuple[str, int, int, int]


def _mapping_key(mapping: Mapping) -> _MappingKey:
    return (mapping.path, mapping.dev_major, mapping.dev_minor, mapping.inode)


@dataclass
class SymbolizerStats:
    """Counters since the Symbolizer was created (the agent exports them)."""

    frames_resolved: int = 0
    frames_unresolved: int = 0
    elf_errors: int = 0  # binaries that failed to parse (each counted once)
    # Binaries (or debug files) whose tables are over the byte budget of one file
    # (elf.MAX_READ_BYTES, MAX_FILE_BYTES), whatever their size on disk: not read.
    binaries_too_large: int = 0
    # Mapped files that could not be opened as mapped: gone, replaced on disk
    # (another inode) with map_files unreadable, not a regular file any more,
    # or no permission. Their frames are module+offset.
    binaries_unreadable: int = 0
    binaries_loaded: int = 0  # symbol tables parsed into the cache
    binaries_evicted: int = 0  # symbol tables dropped by the LRU (count or byte cap)
    disk_cache_hits: int = 0  # symbol tables read from the disk cache instead of parsed
    disk_cache_writes: int = 0
    disk_cache_errors: int = 0  # damaged cache files removed, failed writes
    debug_files: int = 0  # binaries named from a separate debug file
    # Debuglink candidates too big to CRC-check (debuginfo.MAX_CRC_BYTES): not used.
    debug_files_unchecked: int = 0
    jit_frames: int = 0  # frames named from a perf map
    # Perf maps read up to the per-file cap and no further, and maps dropped to
    # stay under the cap on the bytes behind all maps (perfmap.PerfMaps).
    perf_maps_truncated: int = 0
    perf_maps_evicted: int = 0
    processes_gone: int = 0  # image() calls for a pid that no longer exists
    # Tables found by the mapped file's identity, without opening the file.
    mapping_cache_hits: int = 0
    maps_errors: int = 0  # image() calls whose maps were unreadable otherwise


class Symbolizer:
    """Resolves kernel and user addresses to function names.

    Symbol tables stay in memory up to `max_binaries` tables and `max_bytes`
    (approximate) in all; the most recent one is kept even if it alone is
    larger, or a big binary would be parsed again on every call. With a
    `cache_dir`, tables of binaries with a build-id are also kept on disk, up
    to about `max_disk_bytes`.

    One thread at a time captures and resolves (the agent holds its lock
    for that); the tables of opened files may be read meanwhile from another
    thread (`take_opened`, `read_pending`), without that lock.
    """

    def __init__(
        self,
        *,
        max_binaries: int = 256,
        max_bytes: int = 64 * MiB,
        proc: Path = Path("/proc"),
        kallsyms: KernelSymbols | None = None,
        cache_dir: Path | None = None,
        max_disk_bytes: int = 256 * MiB,
    ) -> None:
        if max_binaries < 1:
            raise ValueError("max_binaries must be at least 1")
        self.stats = SymbolizerStats()
        self._max_binaries = max_binaries
        self._max_bytes = max_bytes
        self._proc = proc
        self._kallsyms = kallsyms
        self._disk = DiskCache(cache_dir, max_disk_bytes) if cache_dir is not None else None
        # Guards the caches below and the counters: symbol tables may be read
        # from another thread than the one resolving frames. Never held across
        # a file read or a parse, only around their bookkeeping.
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
        self._perf_maps = PerfMaps(max_processes=max_binaries)
        self._debug_stats = DebugFileStats()
        self._layouts: OrderedDict[tuple[Mapping, ...], MappingIndex] = OrderedDict()

    # Kernel ------------------------------------------------------------

    def kernel(self, addresses: Sequence[int]) -> list[str]:
        """Names of kernel text addresses; ``[unknown]`` where there is none."""
        return [symbol.name for symbol in self.kernel_symbols(addresses)]

    def kernel_symbols(self, addresses: Sequence[int]) -> list[Symbol]:
        """The symbols of kernel text addresses; unresolved ``[unknown]`` where there is none."""
        table = self._kernel_symbols()
        names = [None] * len(addresses) if table is None else table.lookup_many(addresses)
        return [self._counted(name) for name in names]

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
        """Names of the user-space `addresses` of live process `pid`, in order."""
        return self.resolve(self.image(pid), addresses)

    def image(
        self, pid: int, previous: ProcessImage | None = None, *, eager: bool = False
    ) -> ProcessImage | None:
        """Capture process `pid` for symbolizing, now or after it has exited.

        Symbol tables are opened when a frame first needs them, while the
        process lives; `eager` opens every executable file it maps right away,
        so that a process which exits (or execs) before its samples are
        resolved keeps its names. Opening is cheap; the tables of files not
        seen before are read later (`read_opened`), so that capturing one
        process never waits for another's big binaries to be parsed. Tables
        and opened files of `previous` (the same process, captured earlier)
        are reused for unchanged mappings. None when the process is gone.
        """
        try:
            mappings = read_maps(pid, self._proc)
        except ProcessGone:
            self.stats.processes_gone += 1
            return None
        except OSError:
            self.stats.maps_errors += 1
            return None
        index = self._layout(mappings)
        known = previous.tables if previous is not None else {}
        tables = {m: known[m] for m in mappings if m in known}
        opened = _carried_over(previous, mappings)
        if eager:
            for mapping in mappings:
                if mapping.is_file and mapping not in tables and mapping not in opened:
                    self._open_for_later(pid, mapping, tables, opened)
        has_jit = any(not (m.is_file or m.is_pseudo) for m in mappings)
        jit = self._perf_maps.get(pid, self._proc) if has_jit else None
        self.stats.perf_maps_truncated = self._perf_maps.stats.truncated
        self.stats.perf_maps_evicted = self._perf_maps.stats.evicted_for_bytes
        return ProcessImage(pid, index, tables, jit, opened)

    def _open_for_later(
        self,
        pid: int,
        mapping: Mapping,
        tables: dict[Mapping, ElfSymbols | None],
        opened: dict[Mapping, BinaryIO],
    ) -> None:
        """The table of a file already known, else the file opened, to be read later."""
        known = self._known_mapping(mapping)
        if known is not None:
            tables[mapping] = known
            return
        stream = self._open_binary(pid, mapping)
        if stream is None:
            self.stats.binaries_unreadable += 1
            tables[mapping] = None
        else:
            opened[mapping] = stream

    def read_opened(self, image: ProcessImage) -> bool:
        """Read the symbols of one file `image`'s capture opened; False if none is left."""
        pending = self.take_opened(image)
        if pending is None:
            return False
        pending.attach(self.read_pending(pending))
        return True

    def take_opened(self, image: ProcessImage) -> PendingRead | None:
        """One file `image`'s capture opened, taken out of it to be read; None if none.

        Call it, and `PendingRead.attach`, as `image` is used (the agent: under its
        lock); `read_pending` in between from any thread, without that lock.
        """
        if not image.opened:
            return None
        mapping = next(iter(image.opened))
        return PendingRead(image, mapping, image.opened.pop(mapping))

    def read_pending(self, pending: PendingRead) -> ElfSymbols | None:
        """The symbols of a taken file (cached, or parsed now); closes it. Thread-safe."""
        return self._read_binary(pending.image.pid, pending.mapping, pending.stream)

    def _layout(self, mappings: list[Mapping]) -> MappingIndex:
        """One index per distinct set of executable mappings.

        Children forked from one parent map the same files at the same
        addresses: under process churn thousands of records then share one
        index instead of holding a copy each. Tables stay per image: a shared
        dict would keep tables the LRU evicted alive past its byte cap.
        """
        key = tuple(mappings)
        index = self._layouts.get(key)
        if index is None:
            index = self._layouts[key] = MappingIndex(mappings)
            if len(self._layouts) > 4 * self._max_binaries:
                self._layouts.popitem(last=False)
        self._layouts.move_to_end(key)
        return index

    def is_stale(self, image: ProcessImage | None, addresses: Sequence[int]) -> bool:
        """Whether `image` may be out of date for `addresses`: one of them lies outside
        every mapping (a library loaded since), or in JIT code (whose perf map grows)."""
        if image is None:
            return True
        for address in addresses:
            mapping = image.mappings.find(address)
            if mapping is None or not (mapping.is_file or mapping.is_pseudo):
                return True
        return False

    def resolve(self, image: ProcessImage | None, addresses: Sequence[int]) -> list[str]:
        """Names of `addresses` in a captured process, in order; never raises."""
        return [symbol.name for symbol in self.resolve_symbols(image, addresses)]

    def resolve_symbols(self, image: ProcessImage | None, addresses: Sequence[int]) -> list[Symbol]:
        """Symbols of `addresses` in a captured process, in order; never raises.

        Pass all of a process's addresses (many stacks) in one call: the
        lookups are grouped per mapping.
        """
        if image is None:
            return [self._counted(None) for _ in addresses]
        names: list[Symbol | None] = [None] * len(addresses)
        in_files: dict[Mapping, list[int]] = {}
        for i, address in enumerate(addresses):
            mapping = image.mappings.find(address)
            if mapping is None:
                names[i] = self._counted(None)
            elif not mapping.is_file:
                names[i] = self._special_frame(image, mapping, address)
            else:
                in_files.setdefault(mapping, []).append(i)
        # One vectorized lookup per mapping, however many frames hit it.
        for mapping, positions in in_files.items():
            found = [addresses[i] for i in positions]
            self._file_frames(self._table_for(image, mapping), mapping, found, positions, names)
        return [Symbol(UNKNOWN, resolved=False) if name is None else name for name in names]

    def _table_for(self, image: ProcessImage, mapping: Mapping) -> ElfSymbols | None:
        """The symbol table of one of `image`'s file mappings, read when first needed:
        from the file its capture opened, else opened now (while the process lives)."""
        if mapping not in image.tables:
            stream = image.opened.pop(mapping, None)
            image.tables[mapping] = (
                self._binary(image.pid, mapping)
                if stream is None
                else self._read_binary(image.pid, mapping, stream)
            )
        elif image.tables[mapping] is None:
            # Gone before its files could be opened: another process may
            # have mapped the same file since.
            image.tables[mapping] = self._known_mapping(mapping)
        return image.tables[mapping]

    def _file_frames(
        self,
        symbols: ElfSymbols | None,
        mapping: Mapping,
        addresses: list[int],
        positions: list[int],
        names: list[Symbol | None],
    ) -> None:
        """Fill in the frames of one file mapping: function names, else ``module+0xOFFSET``."""
        offsets = [mapping.file_offset(a) for a in addresses]
        found = [None] * len(offsets) if symbols is None else symbols.lookup_offsets(offsets)
        for i, offset, name in zip(positions, offsets, found, strict=True):
            if name is not None:
                names[i] = self._counted(demangle(name), mapping)
            else:
                self.stats.frames_unresolved += 1
                names[i] = _fallback_symbol(mapping.path, offset)

    def _special_frame(self, image: ProcessImage, mapping: Mapping, address: int) -> Symbol:
        """A frame in memory not backed by a file.

        [vdso] and [vsyscall] keep their names. Anonymous executable memory is
        JIT code, named by the process's perf map when it writes one.
        """
        if mapping.is_pseudo:
            self.stats.frames_resolved += 1
            return Symbol(display(mapping.path), module=display(mapping.path))
        name = image.jit.lookup(address) if image.jit is not None else None
        if name is not None:
            self.stats.jit_frames += 1
        symbol = self._counted(name)
        return Symbol(symbol.name, resolved=symbol.resolved, jit=True)

    def _counted(self, name: str | None, mapping: Mapping | None = None) -> Symbol:
        if name is None:
            self.stats.frames_unresolved += 1
            return Symbol(UNKNOWN, resolved=False)
        self.stats.frames_resolved += 1
        module = display(os.path.basename(mapping.path)) if mapping is not None else ""
        return Symbol(name, module)

    # Binaries ----------------------------------------------------------

    def _binary(self, pid: int, mapping: Mapping) -> ElfSymbols | None:
        """The symbol table of the file behind `mapping`, or None if unavailable."""
        known = self._known_mapping(mapping)
        if known is not None:
            return known
        stream = self._open_binary(pid, mapping)
        if stream is None:
            self.stats.binaries_unreadable += 1
            return None
        return self._read_binary(pid, mapping, stream)

    def _read_binary(self, pid: int, mapping: Mapping, stream: BinaryIO) -> ElfSymbols | None:
        """The symbol table of an opened mapped file (cached; parsed on a miss); closes it.

        Safe to call without the caller's lock (the agent parses so): the
        caches are changed under the Symbolizer's own lock, never held across
        a file read.
        """
        with stream:
            # Another process's capture may have read the same file since this one opened it.
            known = self._known_mapping(mapping)
            if known is not None:
                return known
            origin = _Origin(self._proc / str(pid) / "root", mapping.path)
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

    def _known_mapping(self, mapping: Mapping) -> ElfSymbols | None:
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

    def cache_sizes(self) -> dict[str, int]:
        """Entries per in-memory cache (the agent exports them as gauges)."""
        return {
            "symbol_tables": len(self._binaries),
            "symbol_table_bytes": self._bytes,
            "opened_files": len(self._by_stat),
            "mapped_files": len(self._by_mapping),
            "perf_maps": len(self._perf_maps),
            "layouts": len(self._layouts),
        }

    def open_mapping(self, pid: int, mapping: Mapping) -> BinaryIO | None:
        """The file behind `mapping` of live process `pid`, as frames are resolved (or None)."""
        return self._open_binary(pid, mapping)

    def _open_binary(self, pid: int, mapping: Mapping) -> BinaryIO | None:
        """Open the mapped file as the process sees it.

        /proc/PID/root/<path> resolves the path in the process's mount
        namespace (a container's image). /proc/PID/map_files/<start>-<end> is
        the mapped file itself, even if deleted or replaced since, but needs
        CAP_SYS_ADMIN. The inode must match the mapping: a file upgraded on
        disk after it was mapped would otherwise give wrong names.
        """
        base = self._proc / str(pid)
        # map_files entries are (magic) symbolic links, followed: the kernel
        # names the mapped file itself. The path is the container's to choose:
        # opened with every link resolved inside the process's root.
        map_file = base / "map_files" / f"{mapping.start:x}-{mapping.end:x}"
        for in_root in (False,) if mapping.deleted else (True, False):
            try:
                if in_root:
                    stream = open_in_root(base / "root", mapping.path)
                else:
                    stream = open_regular(map_file)
            except OSError:
                continue
            if os.fstat(stream.fileno()).st_ino == mapping.inode:
                return stream
            stream.close()
        return None

    def _symbols_of(self, stream: BinaryIO, origin: _Origin) -> tuple[str, ElfSymbols] | None:
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

    def _load(
        self, stream: BinaryIO, stat_key: _StatKey, origin: _Origin
    ) -> tuple[str, ElfSymbols]:
        """Identify the file (and its debug file), then parse it unless that is cached.

        The key is the build-id and a digest of the bytes the table comes from
        (elf.ElfIdentity): a forged file with another's build-id gets a key of
        its own, while copies of one library in a thousand pods share one.
        """
        identity = ElfSymbols.identify(stream)
        debug = self._debug_file(stream, identity, origin) if identity.wants_debug_file else None
        try:
            debug_identity = self._identify_debug(debug)
            key = identity.key(debug_identity)
            with self._lock:
                self._remember(stat_key, key)
                cached = self._binaries.get(key)
                if cached is not None:
                    self._binaries.move_to_end(key)
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

    @property
    def cached_bytes(self) -> int:
        """Approximate memory held by the in-memory symbol tables."""
        return self._bytes

    def _parse(self, stream: BinaryIO, build_id: str | None, debug: BinaryIO | None) -> ElfSymbols:
        """Symbols of the binary: its .symtab, else its debug file's, else its .dynsym."""
        symbols = ElfSymbols.from_file(stream)
        if symbols.source == ".symtab" or debug is None:
            return symbols
        debug.seek(0)
        try:
            table = ElfSymbols.from_file(debug).table
        except ElfError as error:
            self._count_elf_error(error)
            return symbols
        if len(table) == 0:
            return symbols
        self.stats.debug_files += 1
        # The debug file's sections sit at the binary's addresses; the load
        # segments that map file offsets to them are the binary's own.
        return ElfSymbols(build_id=build_id, segments=symbols.segments, table=table, source="debug")

    def _debug_file(
        self, stream: BinaryIO, identity: ElfIdentity, origin: _Origin
    ) -> BinaryIO | None:
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
            stats=self._debug_stats,
        )
        self.stats.debug_files_unchecked = self._debug_stats.too_big_to_check
        return debug

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


def _carried_over(
    previous: ProcessImage | None, mappings: list[Mapping]
) -> dict[Mapping, BinaryIO]:
    """Files `previous` opened and has not read yet, for the mappings still there;
    the others are closed."""
    if previous is None:
        return {}
    kept = {m: previous.opened.pop(m) for m in mappings if m in previous.opened}
    previous.close()
    return kept
