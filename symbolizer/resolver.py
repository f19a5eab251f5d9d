"""The resolver, the symbolizer's thin part: addresses to `Symbol`s.

Kernel addresses against /proc/kallsyms; user addresses against a captured
`ProcessImage`: address -> mapping -> file offset -> the mapped file's table
(images.table_for), or the perf map for JIT code, and names demangled (C++,
Rust legacy and v0). Nothing here raises for bad input: a frame that cannot
be named becomes ``module+0xOFFSET`` (still useful, and never a wrong name)
or ``[unknown]``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .counters import PartCounters, counter
from .demangle import demangle
from .elf import ElfSymbols
from .images import ProcessImage, ProcessImages
from .kallsyms import KernelSymbols
from .procmaps import Mapping
from .symbols import Symbol
from .text import display

UNKNOWN = "[unknown]"

# How a frame that could not be named looks: its module and file offset.
_FALLBACK = re.compile(r".+\+0x[0-9a-f]+")


def fallback_frame(module_path: str, offset: int) -> str:
    return f"{display(os.path.basename(module_path))}+0x{offset:x}"


def is_symbolized(name: str) -> bool:
    """False for the frames this module emits when it cannot name a function."""
    return name != UNKNOWN and not _FALLBACK.fullmatch(name)


@dataclass
class ResolverStats:
    """Counters since the resolver was created (podflame_agent_symbolizer_*_total)."""

    frames_resolved: int = counter("Frames named.")
    frames_unresolved: int = counter("Frames that could not be named (module+0xOFFSET).")
    jit_frames: int = counter("Frames named from a perf map.")


class Resolver:
    """Names addresses. One thread at a time (the agent's drain)."""

    def __init__(
        self,
        images: ProcessImages,
        *,
        proc: Path = Path("/proc"),
        kallsyms: KernelSymbols | None = None,
    ) -> None:
        self.stats = ResolverStats()
        self._images = images
        self._proc = proc
        self._kallsyms = kallsyms

    def collector(self, prefix: str) -> PartCounters:
        return PartCounters(prefix, self.stats)

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

    def resolve_symbols(self, image: ProcessImage | None, addresses: Sequence[int]) -> list[Symbol]:
        """Symbols of `addresses` in a captured process, in order; never raises.

        Pass all of a process's addresses (many stacks) in one call: the
        lookups are grouped per mapping, and the perf map is read once.
        """
        if image is None:
            return [self._counted(None) for _ in addresses]
        names: list[Symbol | None] = [None] * len(addresses)
        in_files: dict[Mapping, list[int]] = {}
        jit: list[int] = []
        for i, address in enumerate(addresses):
            mapping = image.mappings.find(address)
            if mapping is None:
                names[i] = self._counted(None)
            elif mapping.is_pseudo:  # [vdso], [vsyscall]: named so
                names[i] = self._counted(display(mapping.path), module=display(mapping.path))
            elif not mapping.is_file:
                jit.append(i)
            else:
                in_files.setdefault(mapping, []).append(i)
        # One vectorized lookup per mapping, however many frames hit it.
        for mapping, positions in in_files.items():
            found = [addresses[i] for i in positions]
            table = self._images.table_for(image, mapping)
            self._file_frames(table, mapping, found, positions, names)
        if jit:
            self._jit_frames(image, addresses, jit, names)
        return [Symbol(UNKNOWN, resolved=False) if name is None else name for name in names]

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
        module = display(os.path.basename(mapping.path))
        for i, offset, name in zip(positions, offsets, found, strict=True):
            if name is not None:
                names[i] = self._counted(demangle(name), module=module)
            else:
                self.stats.frames_unresolved += 1
                names[i] = Symbol(f"{module}+0x{offset:x}", module, offset, resolved=False)

    def _jit_frames(
        self,
        image: ProcessImage,
        addresses: Sequence[int],
        positions: list[int],
        names: list[Symbol | None],
    ) -> None:
        """Frames in anonymous executable memory: JIT code, named by the process's perf
        map when it writes one."""
        perf_map = self._images.perf_map(image)
        for i in positions:
            name = perf_map.lookup(addresses[i]) if perf_map is not None else None
            if name is not None:
                self.stats.jit_frames += 1
            symbol = self._counted(name)
            names[i] = Symbol(symbol.name, resolved=symbol.resolved, jit=True)

    def _counted(self, name: str | None, *, module: str = "") -> Symbol:
        if name is None:
            self.stats.frames_unresolved += 1
            return Symbol(UNKNOWN, resolved=False)
        self.stats.frames_resolved += 1
        return Symbol(name, module)
