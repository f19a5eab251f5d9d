"""podflame benchmarks: `make bench` runs them and writes docs/benchmarks.md.

Every figure is a ratio measured side by side in one run: the machine is shared
and noisy, so configurations are interleaved round by round and compared by
their medians, never against a number from another day.
"""

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import load, memory, network, overhead, python, spool, symbols, unwinding
from benchmarks import pprof as pprof_bench
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


# Each section by name, in the order of the document: its heading.
HEADINGS = {
    "overhead": "## Profiler overhead",
    "symbols": "## Symbol tables",
    "memory": "## Agent memory",
    "unwinding": "## Unwinding without frame pointers",
    "python": "## Python unwinding",
    "network": network.HEADING,
    "server": "## Server",
    "spool": "## Agent spool and shutdown",
    "pprof": "## pprof pushes",
    "load": "## Load",
    "ui": "## Web UI",
}
# These share one background server (the agent runs send to it).
_AGENT_SECTIONS = ("overhead", "memory", "unwinding", "python", "network")


def report(sections: dict[str, list[str]], previous: str = "") -> str:
    """The document: `sections` (name -> lines, heading first) new, each stamped with this
    run's time; any other section as `previous` had it (with its own stamp)."""
    kept = split_sections(previous)
    # A document from before sections were stamped says its run once, in its header.
    older = re.search(r"; run (\d{4}-\d\d-\d\d \d\d:\d\d UTC)\.", previous)
    for lines in kept.values():
        if older and not any(line.startswith("_Run ") for line in lines[:3]):
            lines[1:1] = ["", f"_Run {older[1]}._"]
    stamp = f"_Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}._"
    for name, lines in sections.items():
        kept[name] = [lines[0], "", stamp, *lines[1:]]
    cpus = os.cpu_count()
    header = [
        "# Benchmarks",
        "",
        "Written by `make bench` (benchmarks/run.py). Figures are ratios measured side by side",
        "in one run with configurations interleaved, because the machine is shared and noisy.",
        "A section can be run again alone (`python -m benchmarks.run --only server,load`):",
        "each section says when it was run.",
        "",
        f"Machine: {cpus} CPUs, kernel {platform.release()}.",
        "",
    ]
    body = [line for name in HEADINGS if name in kept for line in kept[name]]
    return "\n".join(header + body).rstrip("\n") + "\n"


def split_sections(document: str) -> dict[str, list[str]]:
    """The known sections of a document written by report(), by name."""
    by_heading = {heading: name for name, heading in HEADINGS.items()}
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in document.splitlines():
        if line.startswith("## "):
            name = by_heading.get(line)
            current = found.setdefault(name, []) if name else None
        if current is not None:
            current.append(line)
    for lines in found.values():
        while lines and not lines[-1]:
            lines.pop()
        lines.append("")
    return found


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--only",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=list(HEADINGS),
        help=f"sections to run, comma-separated ({', '.join(HEADINGS)}); the others are"
        " kept as the output has them",
    )
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
    unknown = set(args.only) - set(HEADINGS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {', '.join(HEADINGS)}")
    return args


def agent_sections(args: argparse.Namespace, only: list[str]) -> dict[str, list[str]]:
    """The sections that run the agent against one background server."""
    sections: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="podflame-bench-") as tmp:
        directory = Path(tmp)
        port = free_port()
        server = [*PODFLAME, "server", "--port", str(port), "--storage", f"chdb://{directory}/db"]
        url = f"http://127.0.0.1:{port}"
        with overhead.background(server, directory / "server.log", settle=5):
            if "overhead" in only:
                configs = overhead.run(directory, url, args.repeats, args.rounds)
                sections["overhead"] = overhead_section(configs, args.rounds, args.repeats)
            if "memory" in only:
                figures = memory.run(directory, url, args.processes)
                sections["memory"] = ["## Agent memory", "", *figures, ""]
            if "unwinding" in only:
                figures = unwinding.section(directory, url, args.repeats, args.processes)
                sections["unwinding"] = ["## Unwinding without frame pointers", "", *figures]
            if "python" in only and (pythons := python.run(directory, url, args.repeats)):
                sections["python"] = [*python.section(*pythons, args.repeats), ""]
            if "network" in only:
                rounds, pairs = args.network_rounds, 10 * args.repeats
                short = args.network_rounds // 4
                pingpong = network.build_pingpong(directory)
                alone, costs = network.tracer_alone(pingpong, pairs, short)
                agents = network.run(directory, url, args.repeats, rounds)
                sections["network"] = network.section(
                    alone, costs, agents, args.repeats, pairs, rounds, short
                )
    return sections


def other_sections(args: argparse.Namespace, only: list[str]) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    if "symbols" in only:
        sections["symbols"] = ["## Symbol tables", "", *symbols.run(), ""]
    if "server" in only and args.server_rows:
        # A directory of its own: the server benchmark opens its chDB path after stopping.
        with tempfile.TemporaryDirectory(prefix="podflame-bench-server-") as tmp:
            figures = server_bench.run(Path(tmp), args.server_rows)
            sections["server"] = ["## Server", "", *figures, ""]
    if "spool" in only:
        sections["spool"] = ["## Agent spool and shutdown", "", *spool.section(args.repeats), ""]
    if "pprof" in only:
        sections["pprof"] = ["## pprof pushes", "", *pprof_bench.run(), ""]
    if "load" in only and args.load_agents:
        figures = list(load.section(args.load_agents, args.load_seconds))
        sections["load"] = ["## Load", "", *figures, ""]
    if "ui" in only:
        with tempfile.TemporaryDirectory(prefix="podflame-bench-ui-") as tmp:
            sections["ui"] = ["## Web UI", "", *ui_bench.run(Path(tmp)), ""]
    return sections


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks need root (the agent loads BPF programs)")
    sections: dict[str, list[str]] = {}
    if any(name in args.only for name in _AGENT_SECTIONS):
        sections.update(agent_sections(args, args.only))
    sections.update(other_sections(args, args.only))
    previous = args.output.read_text() if args.output.exists() else ""
    args.output.write_text(report(sections, previous))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
