"""Profiler overhead, side by side: podflame's agent, `perf record` and BCC's `profile`.

A fixed amount of CPU-bound work (the 70/30 test workload, one copy per CPU,
so every profiler competes for a core) is timed under each configuration,
interleaved round by round, and compared by medians with the run that had no
profiler. The profiler's own CPU time over wall time is read from /proc over
a steady-state window: for podflame, from its first drain to its third, when
BPF is compiled and the symbol caches are warm.
"""

import os
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.common import PODFLAME, free_port, process_cpu_seconds
from tests.fixtures import build_burn7030

FREQUENCY = 99
AGENT_INTERVAL = 5


@dataclass
class Config:
    name: str
    wall: list[float] = field(default_factory=list)
    cpu_share: list[float] = field(default_factory=list)  # profiler CPU seconds per wall second


@dataclass
class Bench:
    directory: Path
    workload: Path
    rounds: int
    server: str

    def run_workload(self) -> float:
        """Wall seconds for one copy of the workload per CPU to finish."""
        start = time.perf_counter()
        command = [str(self.workload), "-n", str(self.rounds)]
        copies = [
            subprocess.Popen(command, stdout=subprocess.DEVNULL) for _ in range(os.cpu_count() or 1)
        ]
        if any(copy.wait() != 0 for copy in copies):
            raise RuntimeError("workload failed")
        return time.perf_counter() - start


@contextmanager
def background(command: list[str], log: Path, settle: float) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            time.sleep(settle)
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited early; see {log}")
            yield process
        finally:
            process.send_signal(2)  # SIGINT: perf and profile write their output and exit
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def metric(url: str, name: str) -> float:
    for line in httpx.get(url, timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def wait_for_drains(url: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while metric(url, "podflame_agent_drains_total") < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"agent did not reach {count} drains")
        time.sleep(0.5)  # polling is work on the measured machine: keep it rare


def measure_podflame(bench: Bench, config: Config) -> None:
    port = free_port()
    command = [
        *PODFLAME, "agent", "--server", bench.server, "--frequency", str(FREQUENCY),
        "--interval", str(AGENT_INTERVAL), "--metrics-port", str(port),
    ]  # fmt: skip
    metrics = f"http://127.0.0.1:{port}/metrics"
    with background(command, bench.directory / "agent.log", settle=5) as agent:
        workload = threading.Thread(target=lambda: config.wall.append(bench.run_workload()))
        workload.start()
        try:
            wait_for_drains(metrics, 1)
            cpu0, wall0 = process_cpu_seconds(agent.pid), time.perf_counter()
            wait_for_drains(metrics, 3)
            cpu1, wall1 = process_cpu_seconds(agent.pid), time.perf_counter()
        finally:
            workload.join()
    config.cpu_share.append((cpu1 - cpu0) / (wall1 - wall0))


def measure_tool(bench: Bench, config: Config, command: list[str]) -> None:
    with background(command, bench.directory / "tool.log", settle=3) as tool:
        cpu0, wall0 = process_cpu_seconds(tool.pid), time.perf_counter()
        config.wall.append(bench.run_workload())
        cpu1, wall1 = process_cpu_seconds(tool.pid), time.perf_counter()
    config.cpu_share.append((cpu1 - cpu0) / (wall1 - wall0))


def run(directory: Path, server: str, repeats: int, rounds: int) -> list[Config]:
    bench = Bench(directory, build_burn7030(directory / "burn7030"), rounds, server)
    perf_data = directory / "perf.data"
    configs = {
        "no profiler": lambda c: c.wall.append(bench.run_workload()),
        f"podflame agent, {FREQUENCY} Hz": lambda c: measure_podflame(bench, c),
        f"perf record -F {FREQUENCY} -g -a": lambda c: measure_tool(
            bench, c, ["perf", "record", "-F", str(FREQUENCY), "-g", "-a", "-o", str(perf_data)]
        ),
        f"BCC profile -F {FREQUENCY}": lambda c: measure_tool(
            bench, c, ["/usr/sbin/profile-bpfcc", "-F", str(FREQUENCY), "-f"]
        ),
    }
    results = {name: Config(name) for name in configs}
    for repeat in range(repeats):
        for name, measure in configs.items():
            measure(results[name])
            wall = results[name].wall[-1]
            print(f"overhead round {repeat + 1}: {name}: {wall:.2f} s", flush=True)
    return list(results.values())


def table(configs: list[Config]) -> list[str]:
    baseline = statistics.median(configs[0].wall)
    lines = [
        "| configuration | workload wall time (median) | slowdown | profiler CPU / wall time |",
        "|---|---|---|---|",
    ]
    for config in configs:
        wall = statistics.median(config.wall)
        cpu = f"{100 * statistics.median(config.cpu_share):.2f} %" if config.cpu_share else "-"
        slowdown = 100 * (wall / baseline - 1)
        lines.append(f"| {config.name} | {wall:.2f} s | {slowdown:+.2f} % | {cpu} |")
    return lines
