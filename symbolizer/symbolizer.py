"""The symbolizer: stacks of addresses in, function names out, from four parts.

- `images.ProcessImages`: a process's mappings, opened files and perf map,
  captured while it lives (so a process that exits early keeps its names);
- `tables.SymbolTables`: the symbol-table cache, in memory and on disk, keyed
  by build-id and a digest of the bytes the table comes from;
- `debugfiles.DebugFiles`: separate debug files of stripped binaries;
- `resolver.Resolver`: addresses to `Symbol`s against an image.

Each part counts its own events and exports them through its own
prometheus_client collector (`collectors`). `Symbolizer` builds the four
and is what the agent holds; its methods only hand a call to the part that
answers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from prometheus_client.registry import Collector

from .debugfiles import DebugFiles, DebugStats
from .elf import ElfSymbols
from .images import ImageStats, PendingRead, ProcessImage, ProcessImages
from .kallsyms import KernelSymbols
from .procmaps import Mapping
from .resolver import UNKNOWN, Resolver, ResolverStats, fallback_frame, is_symbolized
from .symbols import Symbol
from .tables import MiB, SymbolTables, TableStats

__all__ = ["UNKNOWN", "Symbolizer", "SymbolizerStats", "fallback_frame", "is_symbolized"]


@dataclass
class SymbolizerStats(ResolverStats, ImageStats, TableStats, DebugStats):
    """All parts' counters at one moment (`Symbolizer.stats`), for tests and batches."""


class Symbolizer:
    """Resolves kernel and user addresses to function names (see the parts' docs:
    cache sizes are SymbolTables', thread-safety ProcessImages')."""

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
        self.debug = DebugFiles()
        self.tables = SymbolTables(
            max_binaries=max_binaries,
            max_bytes=max_bytes,
            cache_dir=cache_dir,
            max_disk_bytes=max_disk_bytes,
            debug=self.debug,
        )
        self.images = ProcessImages(self.tables, proc=proc, max_images=max_binaries)
        self.resolver = Resolver(self.images, proc=proc, kallsyms=kallsyms)

    @property
    def stats(self) -> SymbolizerStats:
        """A snapshot of every part's counters."""
        parts = (self.resolver.stats, self.images.stats, self.tables.stats, self.debug.stats)
        return SymbolizerStats(**{k: v for part in parts for k, v in asdict(part).items()})

    def collectors(self, prefix: str) -> list[Collector]:
        """Each part's collector (metrics named <prefix>symbolizer_<counter>_total)."""
        parts = (self.resolver, self.images, self.tables, self.debug)
        return [part.collector(prefix) for part in parts]

    def cache_sizes(self) -> dict[str, int]:
        """Entries per in-memory cache (the agent exports them as gauges)."""
        return {**self.tables.cache_sizes(), **self.images.cache_sizes()}

    @property
    def cached_bytes(self) -> int:
        return self.tables.cached_bytes

    # The resolver's --------------------------------------------------------

    def kernel(self, addresses: Sequence[int]) -> list[str]:
        """Names of kernel text addresses; ``[unknown]`` where there is none."""
        return [symbol.name for symbol in self.kernel_symbols(addresses)]

    def kernel_symbols(self, addresses: Sequence[int]) -> list[Symbol]:
        return self.resolver.kernel_symbols(addresses)

    def refresh(self) -> None:
        self.resolver.refresh()

    def user(self, pid: int, addresses: Sequence[int]) -> list[str]:
        """Names of the user-space `addresses` of live process `pid`, in order."""
        return self.resolve(self.image(pid), addresses)

    def resolve(self, image: ProcessImage | None, addresses: Sequence[int]) -> list[str]:
        """Names of `addresses` in a captured process, in order; never raises."""
        return [symbol.name for symbol in self.resolve_symbols(image, addresses)]

    def resolve_symbols(self, image: ProcessImage | None, addresses: Sequence[int]) -> list[Symbol]:
        return self.resolver.resolve_symbols(image, addresses)

    # The process images' -----------------------------------------------------

    def image(
        self, pid: int, previous: ProcessImage | None = None, *, eager: bool = False
    ) -> ProcessImage | None:
        return self.images.image(pid, previous, eager=eager)

    def is_stale(self, image: ProcessImage | None, addresses: Sequence[int]) -> bool:
        return self.images.is_stale(image, addresses)

    def read_opened(self, image: ProcessImage) -> bool:
        return self.images.read_opened(image)

    def take_opened(self, image: ProcessImage) -> PendingRead | None:
        return self.images.take_opened(image)

    def read_pending(self, pending: PendingRead) -> ElfSymbols | None:
        return self.images.read_pending(pending)

    def open_mapping(self, pid: int, mapping: Mapping) -> BinaryIO | None:
        return self.images.open_mapping(pid, mapping)
