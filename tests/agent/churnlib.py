"""Process churn against the real agent: the workload, what is measured, and a report.

`run_churn` starts a real server, a `podflame agent` subprocess (real BPF) and
tests/fixtures/churn.c, and samples the agent every second while the churn
runs: its resident memory, CPU time and /metrics gauges. Afterwards it reads
back from the server how many of the children's samples were named.

    python -m tests.agent.churnlib --rate 500 --seconds 60   # prints the figures
"""

import argparse
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from podflame.model import KERNEL_FRAME_SUFFIX
from podflame.symbolizer import is_symbolized
from tests.conftest import PODFLAME, free_port, running_server, stop, wait_until_ready
from tests.fixtures import FIXTURES, build_workload

# The children's CPU work: a sample in one of these was named.
CHILD_FUNCTIONS = {"churn_spin", "exec_spin"}
_METRIC = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


@dataclass
class Tick:
    """One second of the run, as seen from outside the agent."""

    second: float
    rss_kib: int
    cpu_seconds: float  # the agent's user + system time so far
    gauges: dict[str, float]


@dataclass
class ChurnReport:
    started: int  # children the workload started
    ticks: list[Tick]
    named: int  # the children's samples with a churn_spin or exec_spin frame
    unnamed: int  # the children's samples with no user frame named at all
    log: str  # the agent's log
    alive: bool  # the agent was still running when the churn ended
    exit_code: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # the last scrape
    unnamed_stacks: list[str] = field(default_factory=list)  # folded lines, heaviest first

    @property
    def named_fraction(self) -> float:
        return self.named / max(1, self.named + self.unnamed)

    def window(self, start: float, end: float) -> list[Tick]:
        return [t for t in self.ticks if start <= t.second < end]


def build_churn(directory: Path) -> tuple[Path, Path]:
    """The churn parent and the binary every few of its children exec."""
    source = FIXTURES / "churn.c"
    parent = build_workload(source, directory / "churn")
    child = build_workload(source, directory / "churn_child", "-DCHURN_CHILD")
    return parent, child


def scrape(port: int) -> dict[str, float]:
    """Every sample of the agent's /metrics, keyed by name{labels}."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        found = _METRIC.match(line)
        if found:
            values[found.group(1) + (found.group(2) or "")] = float(found.group(3))
    return values


def process_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (100 Hz)


@contextmanager
def running_agent(
    server: str, log: Path, *flags: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A `podflame agent` subprocess and its metrics port."""
    port = free_port()
    command = [*PODFLAME, "agent", "--server", server, "--metrics-port", str(port), *flags]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(f"http://127.0.0.1:{port}/metrics", process, timeout=120)
            yield process, port
        finally:
            stop(process, timeout=60)


def run_churn(
    directory: Path,
    *,
    rate: int = 500,
    seconds: float = 60,
    spin_us: int = 1000,
    exec_every: int = 4,
    frequency: int = 997,
    interval: float = 10,
    symbol_cache_bytes: int | None = None,
) -> ChurnReport:
    parent, child = build_churn(directory)
    log = directory / "agent.log"
    flags: tuple[str, ...] = ("--frequency", str(frequency), "--interval", str(interval))
    if symbol_cache_bytes is not None:
        flags += ("--symbol-cache-bytes", str(symbol_cache_bytes))
    with running_server(directory) as server, running_agent(server, log, *flags) as (agent, port):
        churn = subprocess.Popen(
            [str(parent), str(rate), str(seconds), str(spin_us), str(exec_every), str(child)],
            stdout=subprocess.PIPE,
            text=True,
        )
        start = time.monotonic()
        ticks = _watch(agent.pid, port, start, churn.poll)
        output, _ = churn.communicate(timeout=60)
        # Four drains more: the last children's samples are shipped and their
        # records dropped (an ended process is kept for two drains).
        after = time.monotonic() + 4 * interval + 2
        ticks += _watch(agent.pid, port, start, lambda: None if time.monotonic() < after else 0)
        alive = agent.poll() is None
        metrics = scrape(port) if alive else {}
        exit_code = stop(agent, timeout=60)
        named, unnamed, unnamed_stacks = _children_samples(server)
    started = int(output.split("started=")[1].split()[0])
    text = log.read_text(errors="replace")
    return ChurnReport(
        started, ticks, named, unnamed, text, alive, exit_code, metrics, unnamed_stacks
    )


def _watch(pid: int, port: int, start: float, done: Callable[[], int | None]) -> list[Tick]:
    """A tick every second (counted from `start`) until `done()` returns an exit code."""
    ticks = []
    while done() is None:
        second = time.monotonic() - start
        ticks.append(_tick(pid, port, second))
        time.sleep(max(0.0, start + int(second) + 1 - time.monotonic()))
    return ticks


def _tick(pid: int, port: int, second: float) -> Tick:
    metrics = scrape(port)
    gauges = {name: v for name, v in metrics.items() if "_total" not in name}
    gauges["drains"] = metrics.get("podflame_agent_drains_total", 0)
    return Tick(second, process_rss_kib(pid), process_cpu_seconds(pid), gauges)


def _children_samples(server: str) -> tuple[int, int, list[str]]:
    """(named, unnamed, unnamed stacks) of the churn processes, from the server's folded export."""
    named = unnamed = 0
    examples = []
    for comm in ("churn", "churn_child"):
        params = {"query": f'{{comm="{comm}"}}', "from": "now-30m", "format": "folded"}
        text = httpx.get(server + "/api/v1/export", params=params, timeout=60).text
        for line in text.splitlines():
            stack, value = line.rsplit(" ", 1)
            user = [f for f in stack.split(";") if not f.endswith(KERNEL_FRAME_SUFFIX)]
            if CHILD_FUNCTIONS & set(user):
                named += int(value)
            elif user and not any(is_symbolized(f) for f in user):
                unnamed += int(value)
                examples.append(line)
    return named, unnamed, sorted(examples, key=_value, reverse=True)


def _value(line: str) -> int:
    return int(line.rsplit(" ", 1)[1])


def summary(report: ChurnReport) -> dict[str, object]:
    rss = [t.rss_kib / 1024 for t in report.ticks]
    cpu = report.ticks[-1].cpu_seconds - report.ticks[0].cpu_seconds
    wall = report.ticks[-1].second - report.ticks[0].second
    peaks: dict[str, float] = {}
    for tick in report.ticks:
        for name, value in tick.gauges.items():
            peaks[name] = max(peaks.get(name, value), value)
    return {
        "started": report.started,
        "rss_mib": {
            "start": rss[0],
            "10s": rss[min(10, len(rss) - 1)],
            "peak": max(rss),
            "end": rss[-1],
        },
        "agent_cpu_percent": round(100 * cpu / max(wall, 1e-9), 1),
        "named": report.named,
        "unnamed": report.unnamed,
        "named_fraction": round(report.named_fraction, 3),
        "gauge_peaks": peaks,
        "alive": report.alive,
        "exit_code": report.exit_code,
        "rss_series": [round(r, 1) for r in rss],
        "metrics": {k: v for k, v in report.metrics.items() if "shallow" not in k},
        "unnamed_examples": report.unnamed_stacks[:15],
        "errors": [line for line in report.log.splitlines() if " ERROR " in line][:10],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--interval", type=float, default=10)
    parser.add_argument("--directory", type=Path, required=True)
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    report = run_churn(args.directory, rate=args.rate, seconds=args.seconds, interval=args.interval)
    print(json.dumps(summary(report), indent=1, default=str))
    (args.directory / "ticks.json").write_text(json.dumps([asdict(t) for t in report.ticks]))


if __name__ == "__main__":
    main()
