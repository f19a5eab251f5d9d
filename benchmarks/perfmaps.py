"""Peak memory and time of reading many processes' perf maps (issue 16).

A fake /proc with `--processes` processes, each with a perf map of
`--megabytes` MB of ordinary lines, all read by one PerfMaps (as the
symbolizer does). Peak is tracemalloc's: what Python allocated at most,
bytes read and parsed entries included. Run: python -m benchmarks.perfmaps
"""

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

from podflame.symbolizer.perfmap import PerfMaps

LINE = "{start:x} 40 LazyCompile:*handleRequest{i} /srv/app/lib/server.js:{i}\n"


def fake_proc(proc: Path, processes: int, megabytes: int) -> None:
    lines = []
    size = 0
    for i in range(10**9):
        line = LINE.format(start=0x7F0000000000 + i * 0x40, i=i)
        lines.append(line)
        size += len(line)
        if size >= megabytes << 20:
            break
    text = "".join(lines).encode()
    for pid in range(1000, 1000 + processes):
        tmp = proc / str(pid) / "root" / "tmp"
        tmp.mkdir(parents=True)
        (proc / str(pid) / "status").write_text(f"Name:\tnode\nNSpid:\t{pid}\n")
        (proc / str(pid) / "stat").write_text(f"{pid} (node) " + "S " + "0 " * 18 + "4242 0\n")
        (tmp / f"perf-{pid}.map").write_bytes(text)


def measure(proc: Path, processes: int) -> tuple[float, int]:
    maps = PerfMaps()
    started = time.perf_counter()
    for pid in range(1000, 1000 + processes):
        maps.get(pid, proc)
    elapsed = time.perf_counter() - started
    maps = PerfMaps()
    tracemalloc.start()
    for pid in range(1000, 1000 + processes):
        maps.get(pid, proc)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--megabytes", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        proc = Path(directory)
        fake_proc(proc, args.processes, args.megabytes)
        elapsed, peak = measure(proc, args.processes)
    print(
        f"{args.processes} perf maps of {args.megabytes} MB: {elapsed:.2f} s, "
        f"peak {peak / (1 << 20):.0f} MB (tracemalloc)"
    )


if __name__ == "__main__":
    main()
