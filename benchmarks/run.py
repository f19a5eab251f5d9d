"""podflame benchmarks: `make bench` runs them and writes docs/benchmarks.md.

Every figure is a ratio measured side by side in one run: the machine is shared
and noisy, so configurations are interleaved round by round and compared by
their medians, never against a number from another day.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import load, memory, network, overhead, python, spool, symbols
from benchmarks import server as server_bench
from benchmarks import ui as ui_bench
from benchmarks.common import PODFLAME, free_port

ROOT = Path(__file__).resolve().parent.parent


def overhead_section(configs: list[overhead.Config], rounds: int, repeats: int) -> list[str]:
    agent = configs[1]
    baseline = statistics.median(configs[0].wall)
    slowdown = statistics.median(agent.wall) / baseline - 1
    cpu = statistics.median(agent.cpu_share)
    return [
        "## Profiler overhead",
        "",
        f"A fixed amount of CPU-bound work (tests/fixtures/burn7030.c `-n {rounds}`), one copy",
        f"per CPU so the profiler competes for a core; {repeats} interleaved rounds per",
        "configuration. podflame's agent drains every 5 s, symbolizes and ships to a local",
        "`podflame server`; its CPU share is measured from its first drain to its third",
        "(BPF compiled, symbol caches warm), the others' over the whole workload. CPU shares",
        "are of one core.",
        "",
        *overhead.table(configs),
        "",
        f"- Goal: agent CPU at most 0.3 % of one core at 99 Hz with both CPUs busy: "
        f"{100 * cpu:.2f} %, {'met' if cpu <= 0.003 else 'NOT met'}.",
        f"- Goal: a CPU-bound workload slows down by at most 1 %: {100 * slowdown:+.2f} %, "
        f"{'met' if slowdown <= 0.01 else 'NOT met'}.",
        "",
    ]


def report(sections: list[list[str]]) -> str:
    cpus = os.cpu_count()
    header = [
        "# Benchmarks",
        "",
        "Written by `make bench` (benchmarks/run.py). Figures are ratios measured side by side",
        "in one run with configurations interleaved, because the machine is shared and noisy.",
        "",
        f"Machine: {cpus} CPUs, kernel {platform.release()}; "
        f"run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
    ]
    return "\n".join(header + [line for section in sections for line in section]) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=60000, help="workload size (about 20 s)")
    parser.add_argument("--processes", type=int, default=1000)
    parser.add_argument(
        "--network-rounds", type=int, default=200_000, help="bare ping-pong round trips"
    )
    parser.add_argument(
        "--server-rows",
        type=int,
        default=10_000_000,
        help="sample rows for the server benchmark (and as many again); 0 skips it",
    )
    parser.add_argument("--load-agents", type=int, default=200, help="0 skips the load run")
    parser.add_argument(
        "--load-seconds", type=float, default=300, help="length of the load run (5 minutes)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks need root (the agent loads BPF programs)")

    sections = [["## Symbol tables", "", *symbols.run(), ""]]
    with tempfile.TemporaryDirectory(prefix="podflame-bench-") as tmp:
        directory = Path(tmp)
        port = free_port()
        server = [*PODFLAME, "server", "--port", str(port), "--storage", f"chdb://{directory}/db"]
        url = f"http://127.0.0.1:{port}"
        with overhead.background(server, directory / "server.log", settle=5):
            configs = overhead.run(directory, url, args.repeats, args.rounds)
            sections.insert(0, overhead_section(configs, args.rounds, args.repeats))
            sections.append(
                ["## Agent memory", "", *memory.run(directory, url, args.processes), ""]
            )
            pythons = python.run(directory, url, args.repeats)
            if pythons is not None:
                sections.append([*python.section(*pythons, args.repeats), ""])
            rounds, pairs, short = args.network_rounds, 10 * args.repeats, args.network_rounds // 4
            pingpong = network.build_pingpong(directory)
            alone, costs = network.tracer_alone(pingpong, pairs, short)
            agents = network.run(directory, url, args.repeats, rounds)
            sections.append(
                network.section(alone, costs, agents, args.repeats, pairs, rounds, short)
            )
    if args.server_rows:
        # A directory of its own: the server benchmark opens its chDB path after stopping.
        with tempfile.TemporaryDirectory(prefix="podflame-bench-server-") as tmp:
            sections.append(["## Server", "", *server_bench.run(Path(tmp), args.server_rows), ""])
    sections.append(["## Agent spool and shutdown", "", *spool.section(args.repeats), ""])
    if args.load_agents:
        figures = load.section(args.load_agents, args.load_seconds)
        sections.append(["## Load", "", *figures, ""])
    with tempfile.TemporaryDirectory(prefix="podflame-bench-ui-") as tmp:
        sections.append(["## Web UI", "", *ui_bench.run(Path(tmp)), ""])
    args.output.write_text(report(sections))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
