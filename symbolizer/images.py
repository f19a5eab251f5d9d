"""Process images, the symbolizer's part that reads what a process maps.

A process's executable mappings (from /proc/PID/maps), the symbol tables of
its mapped files (from the symbol-table cache, or the file opened through
/proc/PID/root to be read later) and its perf map (JIT code) are captured as
a `ProcessImage` while it lives, so that a process that exits before its
samples are symbolized keeps its names.

Capturing reads only /proc: files are opened, and neither their tables nor
the perf map are read then. Those reads, of files a container controls (a
huge perf map, a binary on a slow filesystem), are taken out of the image
(`take_opened`) and done by whoever can wait for them without holding
anyone up (`read_pending`; the agent: its announcement thread, off its lock),
or by the resolver when a frame needs them first (`table_for`, `perf_map`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .counters import PartCounters, counter
from .debugfiles import Origin
from .elf import ElfSymbols
from .files import open_in_root, open_regular
from .perfmap import PerfMap, PerfMaps, start_time
from .procmaps import Mapping, MappingIndex, ProcessGone, read_maps
from .tables import SymbolTables


@dataclass(eq=False)
class ProcessImage:
    """What it takes to symbolize one process, captured while it lives."""

    pid: int
    mappings: MappingIndex
    # Executable file mappings opened so far and their symbols (None:
    # unreadable or not ELF); filled in as frames need them.
    tables: dict[Mapping, ElfSymbols | None]
    # The process's perf map as last read (None: not read yet, or no JIT code).
    jit: PerfMap | None = None
    # Files a capture opened whose symbols are not read yet: reading a big
    # binary's table takes far longer than opening it, so a capture only opens
    # (see ProcessImages.image). Read by `read_pending` or when a frame first
    # needs one, and closed then.
    opened: dict[Mapping, BinaryIO] = field(default_factory=dict)
    # The process has JIT code and its perf map waits to be read.
    jit_due: bool = False
    # /proc/PID/stat's start time when captured: a perf map is read again only
    # while the pid still names this process.
    start_ticks: int | None = None

    @property
    def has_unread(self) -> bool:
        """Whether reads wait: opened files, or the perf map."""
        return bool(self.opened) or self.jit_due

    def close(self) -> None:
        """Close the files still waiting to be read (the image is being dropped)."""
        for mapping in list(self.opened):
            stream = self.opened.pop(mapping, None)
            if stream is not None:
                stream.close()


@dataclass(frozen=True)
class PendingRead:
    """A read taken from a capture (`take_opened`): one opened file, or (`stream` None)
    the perf map."""

    image: ProcessImage
    mapping: Mapping | None
    stream: BinaryIO | None

    def attach(self, symbols: ElfSymbols | None) -> None:
        """Give the image its table, unless a frame needed it meanwhile (and read it)."""
        if self.mapping is not None:
            self.image.tables.setdefault(self.mapping, symbols)


@dataclass
class ImageStats:
    """Counters since the part was created (podflame_agent_symbolizer_*_total)."""

    binaries_unreadable: int = counter(
        "Mapped files that could not be opened as mapped: gone, replaced on disk (another "
        "inode) with map_files unreadable, not a regular file, or no permission."
    )
    perf_maps_truncated: int = counter("Perf maps read up to the per-file cap and no further.")
    perf_maps_evicted: int = counter(
        "Perf maps dropped to stay under the cap on the bytes behind all maps."
    )
    processes_gone: int = counter("Captures of a pid that no longer existed.")
    maps_errors: int = counter("Captures whose memory map was unreadable otherwise.")


class ProcessImages:
    """Captures process images and reads what they need from their files.

    `image` is called by one thread at a time (the agent: under its lock); the
    reads (`read_pending`, `table_for`, `perf_map`) from any thread, without it.
    """

    def __init__(self, tables: SymbolTables, *, proc: Path = Path("/proc"), max_images: int = 256):
        self.stats = ImageStats()
        self.tables = tables
        self._proc = proc
        self._max_layouts = 4 * max_images
        self._lock = threading.Lock()  # the counters, when reads run on two threads
        self._perf_maps = PerfMaps(max_processes=max_images)
        self._layouts: OrderedDict[tuple[Mapping, ...], MappingIndex] = OrderedDict()

    def collector(self, prefix: str) -> PartCounters:
        return PartCounters(prefix, self.stats)

    def cache_sizes(self) -> dict[str, int]:
        return {"perf_maps": len(self._perf_maps), "layouts": len(self._layouts)}

    def image(
        self, pid: int, previous: ProcessImage | None = None, *, eager: bool = False
    ) -> ProcessImage | None:
        """Capture process `pid` for symbolizing, now or after it has exited.

        Symbol tables are opened when a frame first needs them, while the
        process lives; `eager` opens every executable file it maps right away,
        so that a process which exits (or execs) before its samples are
        resolved keeps its names. Tables, perf map and opened files of
        `previous` (the same process, captured earlier) are reused for what is
        unchanged. None when the process is gone.
        """
        try:
            started = start_time(pid, self._proc)
            mappings = read_maps(pid, self._proc)
        except ProcessGone:
            self._count("processes_gone")
            return None
        except OSError:
            self._count("maps_errors")
            return None
        known = previous.tables if previous is not None else {}
        image = ProcessImage(
            pid,
            self._layout(mappings),
            tables={m: known[m] for m in mappings if m in known},
            jit=previous.jit if previous is not None else None,
            opened=_carried_over(previous, mappings),
            start_ticks=started,
        )
        image.jit_due = image.jit is None and any(not (m.is_file or m.is_pseudo) for m in mappings)
        if eager:
            for mapping in mappings:
                if mapping.is_file and mapping not in image.tables and mapping not in image.opened:
                    self._open_for_later(image, mapping)
        return image

    def _open_for_later(self, image: ProcessImage, mapping: Mapping) -> None:
        """The table of a file already known, else the file opened, to be read later."""
        known = self.tables.known(mapping)
        if known is not None:
            image.tables[mapping] = known
            return
        stream = self.open_mapping(image.pid, mapping)
        if stream is None:
            self._count("binaries_unreadable")
            image.tables[mapping] = None
        else:
            image.opened[mapping] = stream

    def take_opened(self, image: ProcessImage) -> PendingRead | None:
        """One read `image`'s capture left (the perf map first), taken out of it; None
        if none is left. Call it, and `PendingRead.attach`, as `image` is used (the
        agent: under its lock); `read_pending` in between from any thread, without it."""
        if image.jit_due:
            image.jit_due = False
            return PendingRead(image, None, None)
        for mapping in list(image.opened):
            stream = image.opened.pop(mapping, None)  # a drain may have taken it meanwhile
            if stream is not None:
                return PendingRead(image, mapping, stream)
        return None

    def read_opened(self, image: ProcessImage) -> bool:
        """Do one read `image`'s capture left; False if none is left."""
        pending = self.take_opened(image)
        if pending is None:
            return False
        pending.attach(self.read_pending(pending))
        return True

    def read_pending(self, pending: PendingRead) -> ElfSymbols | None:
        """The symbols of a taken file (cached, or parsed now; closes it), or None after
        reading the perf map into the image. Thread-safe."""
        if pending.mapping is None or pending.stream is None:
            self.perf_map(pending.image)
            return None
        return self.tables.read(pending.stream, pending.mapping, self._origin(pending))

    def _origin(self, pending: PendingRead) -> Origin:
        assert pending.mapping is not None
        return Origin(self._proc / str(pending.image.pid) / "root", pending.mapping.path)

    def table_for(self, image: ProcessImage, mapping: Mapping) -> ElfSymbols | None:
        """The symbol table of one of `image`'s file mappings, read when first needed:
        from the file its capture opened, else opened now (while the process lives)."""
        if mapping not in image.tables:
            stream = image.opened.pop(mapping, None)
            if stream is None:
                image.tables[mapping] = self._binary(image.pid, mapping)
            else:
                origin = Origin(self._proc / str(image.pid) / "root", mapping.path)
                image.tables[mapping] = self.tables.read(stream, mapping, origin)
        elif image.tables[mapping] is None:
            # Gone before its files could be opened: another process may
            # have mapped the same file since.
            image.tables[mapping] = self.tables.known(mapping)
        return image.tables[mapping]

    def perf_map(self, image: ProcessImage) -> PerfMap | None:
        """The process's perf map: read again (what was appended) while it runs, else
        as last read. Thread-safe; reads the file without any lock held."""
        if image.start_ticks is not None:
            fresh = self._perf_maps.get(image.pid, self._proc, started=image.start_ticks)
            if fresh is not None:
                image.jit = fresh
            with self._lock:
                self.stats.perf_maps_truncated = self._perf_maps.stats.truncated
                self.stats.perf_maps_evicted = self._perf_maps.stats.evicted_for_bytes
        return image.jit

    def is_stale(self, image: ProcessImage | None, addresses: Sequence[int]) -> bool:
        """Whether `image` may be out of date for `addresses`: one of them lies outside
        every mapping (a library loaded since), or in JIT code (new mappings)."""
        if image is None:
            return True
        for address in addresses:
            mapping = image.mappings.find(address)
            if mapping is None or not (mapping.is_file or mapping.is_pseudo):
                return True
        return False

    def _binary(self, pid: int, mapping: Mapping) -> ElfSymbols | None:
        """The symbol table of the file behind `mapping`, or None if unavailable."""
        known = self.tables.known(mapping)
        if known is not None:
            return known
        stream = self.open_mapping(pid, mapping)
        if stream is None:
            self._count("binaries_unreadable")
            return None
        return self.tables.read(
            stream, mapping, Origin(self._proc / str(pid) / "root", mapping.path)
        )

    def open_mapping(self, pid: int, mapping: Mapping) -> BinaryIO | None:
        """Open the mapped file as live process `pid` sees it (None if it cannot be).

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
            if len(self._layouts) > self._max_layouts:
                self._layouts.popitem(last=False)
        self._layouts.move_to_end(key)
        return index

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)


def _carried_over(
    previous: ProcessImage | None, mappings: list[Mapping]
) -> dict[Mapping, BinaryIO]:
    """Files `previous` opened and has not read yet, for the mappings still there;
    the others are closed."""
    if previous is None:
        return {}
    # pop(m, None): the announcer may take one of them meanwhile.
    kept = {m: previous.opened.pop(m, None) for m in mappings if m in previous.opened}
    previous.close()
    return {m: stream for m, stream in kept.items() if stream is not None}
