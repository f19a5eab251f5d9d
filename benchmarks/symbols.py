"""Symbol tables: loading and lookups, side by side with binutils' `nm` on the same files.

For each large binary installed (libLLVM, libc, Chromium; and the libLLVM of a
Rust toolchain, which keeps its full .symtab): the time to load its function
table (parse, no disk cache), to load it back from the disk cache, and for
`nm -n --defined-only` (`-D` when the file has no .symtab) to list the same
table; then 1,000,000 random addresses inside its text resolved by one
`lookup_many` call, and 100,000 by single `lookup` calls. Everything is the
median of 3 runs, ours and nm's interleaved; a run of ours shorter than 50 ms
is the mean of as many repetitions as make 50 ms (timeit's autorange). Files
are read once before timing, so both start from the page cache.

Run alone with `python -m benchmarks.symbols`; `benchmarks/run.py` includes
the lines in docs/benchmarks.md.
"""

from __future__ import annotations

import gc
import glob
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from elftools.elf.elffile import ELFFile

from podflame.symbolizer import KernelSymbols
from podflame.symbolizer.diskcache import DiskCache
from podflame.symbolizer.elf import ElfSymbols

GOAL_LOAD = 2_000_000  # symbol table entries per second
GOAL_LOOKUP = 1_000_000  # addresses per second
RUNS = 3
LOOKUPS = 1_000_000
SINGLE_LOOKUPS = 100_000
BATCH_SECONDS = 0.05
STAND_IN_BUILD_ID = "00" * 20
STAND_IN_NOTE = [
    "† No build-id, so the agent would not keep it on disk; measured under a stand-in id.",
    "",
]


@dataclass
class Result:
    label: str
    source: str  # .symtab or .dynsym
    entries: int  # entries in that table (what nm lists from, too)
    functions: int  # one per address after filtering and deduplication
    stand_in_id: bool  # no build-id: the disk figure is measured under a made-up one
    load: list[float] = field(default_factory=list)
    nm: list[float] = field(default_factory=list)
    disk: list[float] = field(default_factory=list)
    many: list[float] = field(default_factory=list)
    single: list[float] = field(default_factory=list)


def binaries() -> list[tuple[str, Path]]:
    """(label, path) of the installed binaries to measure, each file once."""
    found = sorted(glob.glob("/usr/lib/x86_64-linux-gnu/libLLVM*.so*"))
    rust = glob.glob(str(Path.home() / ".rustup/toolchains/*/lib/libLLVM*.so*"))
    found += sorted(rust, key=os.path.getsize)[-1:]  # the library, not a linker-script stub
    found += ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/chromium/chromium"]
    unique: dict[str, Path] = {}
    for name in found:
        path = Path(os.path.realpath(name))
        if path.is_file() and _is_elf(path):
            unique.setdefault(str(path), path)
    return [(_label(path), path) for path in unique.values()]


def _is_elf(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(4) == b"\x7fELF"


def _label(path: Path) -> str:
    if ".rustup" in path.parts:
        return f"{path.name} (Rust toolchain)"
    return path.name


def timed(action: Callable[[], object]) -> float:
    """Seconds `action` takes: the mean over enough repetitions to last BATCH_SECONDS.

    As timeit's autorange does, and with the garbage collector off as it does:
    a single millisecond-long run right after the CPU idled (waiting for nm)
    measures the machine waking up more than the code.
    """
    gc.disable()
    try:
        repeat, elapsed = 1, _once(action)
        if elapsed < BATCH_SECONDS:
            repeat = max(1, round(BATCH_SECONDS / max(elapsed, 1e-6)))
            elapsed = sum(_once(action) for _ in range(repeat)) / repeat
        return elapsed
    finally:
        gc.enable()


def _once(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def table_entries(path: Path, source: str) -> int:
    with path.open("rb") as stream:
        section = ELFFile(stream).get_section_by_name(source)
        return 0 if section is None else int(section.data_size // section["sh_entsize"])


def measure(label: str, path: Path, cache: DiskCache) -> Result:
    symbols = ElfSymbols.from_path(path)  # also brings the file into the page cache
    nm = ["nm", "-n", "--defined-only", *(["-D"] if symbols.source == ".dynsym" else []), str(path)]
    subprocess.run(nm, stdout=subprocess.DEVNULL, check=True)
    build_id = symbols.build_id or STAND_IN_BUILD_ID
    stored = ElfSymbols(
        build_id=build_id, segments=symbols.segments, table=symbols.table, source=symbols.source
    )
    cache.store(stored)
    entries = table_entries(path, symbols.source)
    result = Result(label, symbols.source, entries, len(symbols), symbols.build_id is None)
    table = symbols.table
    assert table.ends is not None and len(table)
    rng = np.random.default_rng(0)
    low, high = int(table.starts[0]), int(table.ends[-1])
    addresses = rng.integers(low, high, LOOKUPS, dtype=np.uint64).tolist()  # as callers hold them
    few = random.Random(0).sample(addresses, SINGLE_LOOKUPS)
    for _ in range(RUNS):
        result.load.append(timed(lambda: ElfSymbols.from_path(path)))
        result.nm.append(_once(lambda: subprocess.run(nm, stdout=subprocess.DEVNULL, check=True)))
        result.disk.append(timed(lambda: cache.load(build_id)))
        result.many.append(timed(lambda: symbols.lookup_many(addresses)))
        result.single.append(timed(lambda: [symbols.lookup(a) for a in few]))
    return result


def rate(count: float, seconds: float) -> str:
    return f"{count / seconds / 1e6:.2f} M/s"


def row(r: Result) -> str:
    load, nm, disk = (statistics.median(x) for x in (r.load, r.nm, r.disk))
    many, single = statistics.median(r.many), statistics.median(r.single)
    mark = " †" if r.stand_in_id else ""
    return (
        f"| {r.label} | {r.source} | {r.entries:,} | {r.functions:,} | {1e3 * load:.1f} ms "
        f"| {rate(r.entries, load)} | {1e3 * nm:.1f} ms | {load / nm:.2f} "
        f"| {1e3 * disk:.1f} ms{mark} | {rate(LOOKUPS, many)} | {rate(SINGLE_LOOKUPS, single)} |"
    )


def kernel_line() -> str:
    path = Path("/proc/kallsyms")
    if not path.exists():
        return "- Kernel symbols: no /proc/kallsyms here."
    lines = path.read_bytes().count(b"\n")
    loads = [timed(KernelSymbols) for _ in range(RUNS)]
    kernel = KernelSymbols()
    if not len(kernel):
        return "- Kernel symbols: addresses hidden (kptr_restrict), nothing to measure."
    low, high = int(kernel.table.starts[0]), int(kernel.table.starts[-1])
    addresses = np.random.default_rng(0).integers(low, high, LOOKUPS, dtype=np.uint64).tolist()
    many = statistics.median(timed(lambda: kernel.lookup_many(addresses)) for _ in range(RUNS))
    return (
        f"- Kernel symbols (/proc/kallsyms, {lines:,} lines, {len(kernel):,} text symbols "
        f"kept): load {1e3 * statistics.median(loads):.0f} ms, including the kernel's "
        f"generating the file; `lookup_many`: {rate(LOOKUPS, many)}."
    )


def goal(name: str, goal: int, rates: dict[str, float]) -> str:
    met = [label for label, value in rates.items() if value >= goal]
    lowest = min(rates, key=lambda label: rates[label])
    verdict = "met" if len(met) == len(rates) else f"NOT met on {len(rates) - len(met)}"
    return (
        f"- Goal: {name} at least {goal:,} per second: {verdict} "
        f"({len(met)} of {len(rates)} binaries; lowest {rates[lowest] / 1e6:.2f} M/s, {lowest})."
    )


def run() -> list[str]:
    with tempfile.TemporaryDirectory(prefix="podflame-symbols-") as tmp:
        cache = DiskCache(Path(tmp), 1 << 40)
        results = [measure(label, path, cache) for label, path in binaries()]
    loads = {r.label: r.entries / statistics.median(r.load) for r in results}
    lookups = {r.label: LOOKUPS / statistics.median(r.many) for r in results}
    return [
        "Loading a binary's function table (podflame.symbolizer.elf), against binutils'",
        "`nm -n --defined-only` listing the same table of the same file (`-D` where there is",
        "no .symtab); median of 3 interleaved runs, each of ours the mean of repetitions",
        "lasting 50 ms (as timeit's autorange). Entries/s counts every entry of the table",
        "read, as nm lists them; functions are what remains (defined functions, one per",
        "address). The disk cache load reads back a table written by an earlier run",
        f"(symbolizer/diskcache.py). `lookup_many` resolves {LOOKUPS:,} random addresses",
        f"inside the text in one call; `lookup` is {SINGLE_LOOKUPS:,} single calls.",
        "",
        "| binary | table | entries | functions | load | entries/s | `nm -n` | ours / nm "
        "| disk cache load | `lookup_many` | `lookup` |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(row(r) for r in results),
        "",
        *(STAND_IN_NOTE if any(r.stand_in_id for r in results) else []),
        goal("symbol table entries loaded", GOAL_LOAD, loads),
        goal("addresses resolved by `lookup_many`", GOAL_LOOKUP, lookups),
        kernel_line(),
    ]


if __name__ == "__main__":
    print("\n".join(run()))
