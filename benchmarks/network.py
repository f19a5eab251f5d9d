"""Network tracer overhead: a loopback request/response workload with and without it.

tests/fixtures/network/pingpong.c sends one-byte requests over TCP on
127.0.0.1 to a forked echo server, each answered before the next (four
read/write calls per round, all on sockets, all traced). Configurations are
interleaved round by round: no agent, the agent without the network tracer,
the agent with it. The agent runs as `podflame agent` shipping to a local
server; its CPU time is read from /proc over the workload.

Goals (issue 4): the workload makes at least 50,000 system calls per second,
and slows down by at most 5 % with the network tracer on.

`python -m benchmarks.network` runs only this benchmark and replaces its
section in docs/benchmarks.md; benchmarks/run.py runs it with the others.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.common import PODFLAME, free_port, process_cpu_seconds
from benchmarks.overhead import background
from tests.fixtures import FIXTURES, build_workload

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## Network tracer overhead"
AGENT_INTERVAL = 2  # drains during each workload run, so their cost is measured too
MIN_SYSCALLS_PER_SECOND = 50_000
MAX_SLOWDOWN = 0.05


@dataclass
class Config:
    name: str
    agent_flags: list[str] | None  # None: no agent
    wall: list[float] = field(default_factory=list)
    syscalls_per_second: list[float] = field(default_factory=list)
    agent_cpu_share: list[float] = field(default_factory=list)  # of one core


def run_workload(binary: Path, rounds: int, config: Config) -> None:
    output = subprocess.run(
        [str(binary), str(rounds), "read"], capture_output=True, text=True, check=True
    ).stdout
    values = dict(item.split("=") for item in output.split())
    config.wall.append(float(values["seconds"]))
    config.syscalls_per_second.append(float(values["syscalls_per_second"]))


def wait_for_drain(metrics: str, timeout: float = 180) -> None:
    """Until the agent has compiled, attached and drained once (startup is not measured)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for line in httpx.get(metrics, timeout=5).text.splitlines():
                if line.startswith("podflame_agent_drains_total ") and float(line.split()[1]) >= 1:
                    return
        except httpx.TransportError:
            pass  # not serving yet: still compiling
        time.sleep(0.5)
    raise TimeoutError("agent did not drain in time")


@contextmanager
def agent(directory: Path, server: str, flags: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    port = free_port()
    command = [*PODFLAME, "agent", "--server", server, "--interval", str(AGENT_INTERVAL),
               "--metrics-port", str(port), *flags]  # fmt: skip
    with background(command, directory / "agent-network.log", settle=1) as process:
        wait_for_drain(f"http://127.0.0.1:{port}/metrics")
        yield process


def measure(binary: Path, rounds: int, config: Config, directory: Path, server: str) -> None:
    if config.agent_flags is None:
        run_workload(binary, rounds, config)
        return
    with agent(directory, server, config.agent_flags) as process:
        cpu0, wall0 = process_cpu_seconds(process.pid), time.perf_counter()
        run_workload(binary, rounds, config)
        cpu1, wall1 = process_cpu_seconds(process.pid), time.perf_counter()
    config.agent_cpu_share.append((cpu1 - cpu0) / (wall1 - wall0))


def run(directory: Path, server: str, repeats: int, rounds: int) -> list[Config]:
    binary = build_workload(FIXTURES / "network" / "pingpong.c", directory / "pingpong")
    configs = [
        Config("no agent", None),
        Config("agent, --no-network", ["--no-network"]),
        Config("agent, --network", ["--network"]),
    ]
    for repeat in range(repeats):
        for config in configs:
            measure(binary, rounds, config, directory, server)
            print(
                f"network round {repeat + 1}: {config.name}: {config.wall[-1]:.2f} s, "
                f"{config.syscalls_per_second[-1]:,.0f} syscalls/s",
                flush=True,
            )
    return configs


def section(configs: list[Config], repeats: int, rounds: int) -> list[str]:
    baseline = statistics.median(configs[0].wall)
    without, traced = configs[1], configs[2]
    rate = statistics.median(configs[0].syscalls_per_second)
    slowdown = statistics.median(traced.wall) / baseline - 1
    tracer_alone = statistics.median(traced.wall) / statistics.median(without.wall) - 1
    lines = [
        HEADING,
        "",
        f"Loopback request/response (tests/fixtures/network/pingpong.c, {rounds:,} one-byte",
        "round trips over TCP on 127.0.0.1, four read/write calls on sockets per round, all",
        f"traced); {repeats} interleaved rounds per configuration. The agent drains every",
        f"{AGENT_INTERVAL} s and ships to a local `podflame server`; it is started afresh for each",
        "run and measured from its first drain on (BPF compiled). CPU shares are of one core.",
        "",
        "| configuration | workload wall time (median) | system calls/s | slowdown "
        "| agent CPU / wall time |",
        "|---|---|---|---|---|",
    ]
    for config in configs:
        wall = statistics.median(config.wall)
        cpu = statistics.median(config.agent_cpu_share) if config.agent_cpu_share else None
        calls = statistics.median(config.syscalls_per_second)
        lines.append(
            f"| {config.name} | {wall:.3f} s | {calls:,.0f} "
            f"| {100 * (wall / baseline - 1):+.2f} % | "
            f"{'-' if cpu is None else f'{100 * cpu:.2f} %'} |"
        )
    lines += [
        "",
        f"- Goal: at least {MIN_SYSCALLS_PER_SECOND:,} system calls/s without the tracer: "
        f"{rate:,.0f}, {'met' if rate >= MIN_SYSCALLS_PER_SECOND else 'NOT met'}.",
        f"- Goal: at most {100 * MAX_SLOWDOWN:.0f} % slower with the network tracer on: "
        f"{100 * slowdown:+.2f} % against no agent, "
        f"{'met' if slowdown <= MAX_SLOWDOWN else 'NOT met'} "
        f"({100 * tracer_alone:+.2f} % against the agent without it).",
        "",
    ]
    return lines


def replace_section(document: str, lines: list[str]) -> str:
    """`document` with this benchmark's section replaced (or appended)."""
    kept: list[str] = []
    skipping = False
    for line in document.splitlines():
        if line == HEADING:
            skipping = True
            continue
        if skipping and line.startswith("## "):
            skipping = False
        if not skipping:
            kept.append(line)
    while kept and not kept[-1]:
        kept.pop()
    return "\n".join([*kept, "", *lines]).rstrip("\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=100_000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks need root (the agent loads BPF programs)")
    with tempfile.TemporaryDirectory(prefix="podflame-bench-net-") as tmp:
        directory = Path(tmp)
        port = free_port()
        server = [*PODFLAME, "server", "--port", str(port), "--storage", f"chdb://{directory}/db"]
        with background(server, directory / "server.log", settle=5):
            configs = run(directory, f"http://127.0.0.1:{port}", args.repeats, args.rounds)
    lines = section(configs, args.repeats, args.rounds)
    print("\n".join(lines))
    args.output.write_text(replace_section(args.output.read_text(), lines))
    print(f"updated {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
