"""Network tracer overhead: loopback request/response workloads with and without it.

tests/fixtures/network/pingpong.c sends one-byte requests over TCP on
127.0.0.1 to a forked echo server, each answered before the next (four
read/write calls per round, all on sockets, all traced). Two workloads: a
service, whose server computes 20 us per request, and a bare ping-pong, as
many system calls per second as the loopback allows (the worst case for a
per-call cost).

Two measurements, each interleaved round by round:
- the tracer alone: one NetworkTracer in this process, its measured calls
  attached and detached in turn (descriptor bookkeeping stays attached), and
  drained every 2 s while attached. This compares the same kernel state with
  and without the per-call programs, without restarting anything.
- the whole agent: no agent, `podflame agent --no-network`, and
  `podflame agent --network`, each started afresh and shipping to a local
  server; the agent's CPU time is read from /proc over the workloads.

Goals (issue 4): the service workload makes at least 50,000 system calls per
second, and slows down by at most 5 % with the network tracer on.

`python -m benchmarks.network` runs only this benchmark and replaces its
section in docs/benchmarks.md; benchmarks/run.py runs it with the others.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks import bpfstats
from benchmarks.common import PODFLAME, free_port, process_cpu_seconds, resident_bytes
from benchmarks.overhead import background
from podflame.agent.network import NetworkTracer
from tests.fixtures import FIXTURES, build_workload

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## Network tracer overhead"
AGENT_INTERVAL = 2  # drains during each workload run, so their cost is measured too
MIN_SYSCALLS_PER_SECOND = 50_000
MAX_SLOWDOWN = 0.05


@dataclass(frozen=True)
class Workload:
    name: str
    work_us: int  # server computation per request
    rounds_per_unit: float  # rounds per --rounds (runs of a similar length)


WORKLOADS = (
    Workload("service, 20 us of work per request", 20, 0.25),
    Workload("bare ping-pong", 0, 1.0),
)


@dataclass
class Config:
    name: str
    agent_flags: list[str] | None  # None: no agent
    wall: dict[str, list[float]] = field(default_factory=dict)
    syscalls_per_second: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # the workload's CPU seconds
    agent_cpu_share: list[float] = field(default_factory=list)  # of one core
    agent_rss: list[int] = field(default_factory=list)  # bytes, after the workloads


def run_workload(binary: Path, rounds: int, workload: Workload, config: Config) -> None:
    command = [str(binary), str(int(rounds * workload.rounds_per_unit)), "read"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(
        [*command, str(workload.work_us)], capture_output=True, text=True, check=True
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    config.cpu.setdefault(workload.name, []).append(cpu)
    values = dict(item.split("=") for item in output.split())
    config.wall.setdefault(workload.name, []).append(float(values["seconds"]))
    rate = float(values["syscalls_per_second"])
    config.syscalls_per_second.setdefault(workload.name, []).append(rate)


def run_workloads(binary: Path, rounds: int, config: Config) -> None:
    for workload in WORKLOADS:
        run_workload(binary, rounds, workload, config)


def wait_for_drain(metrics: str, timeout: float = 180) -> None:
    """Until the agent has compiled, attached and drained twice: its startup (BPF compile,
    capturing every running process) is not what is measured."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for line in httpx.get(metrics, timeout=5).text.splitlines():
                if line.startswith("podflame_agent_drains_total ") and float(line.split()[1]) >= 2:
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
        run_workloads(binary, rounds, config)
        return
    with agent(directory, server, config.agent_flags) as process:
        cpu0, wall0 = process_cpu_seconds(process.pid), time.perf_counter()
        run_workloads(binary, rounds, config)
        cpu1, wall1 = process_cpu_seconds(process.pid), time.perf_counter()
        config.agent_rss.append(resident_bytes(process.pid))
    config.agent_cpu_share.append((cpu1 - cpu0) / (wall1 - wall0))


@dataclass(frozen=True)
class ProgramCost:
    """BPF time per read/write call and its share of the workload's CPU time."""

    ns_per_call: float
    share_of_workload_cpu: float


READ_WRITE_PROGRAMS = ("enter_read", "exit_read", "enter_write", "exit_write")


def program_costs(tracer: NetworkTracer, binary: Path, rounds: int) -> dict[str, ProgramCost]:
    """Per workload, the read/write programs' run time as the kernel counts it.

    The programs run for every process's read and write (sockets or not), so
    the time per call is an average over all of them while the workload runs;
    the share multiplies it by the workload's 4 calls per round.
    """
    programs = [bpfstats.program_id(tracer.program_fd(name)) for name in READ_WRITE_PROGRAMS]
    costs = {}
    for workload in WORKLOADS:
        config = Config("stats", None)
        with bpfstats.enabled():
            before = bpfstats.read(programs)
            run_workload(binary, rounds, workload, config)
            after = bpfstats.read(programs)
        time_ns = sum(after[p].run_time_ns - before[p].run_time_ns for p in programs)
        runs = sum(after[p].run_count - before[p].run_count for p in programs)
        ns_per_call = 2 * time_ns / runs  # an entry and an exit program per call
        calls = 4 * int(rounds * workload.rounds_per_unit)
        share = ns_per_call * calls / 1e9 / config.cpu[workload.name][0]
        costs[workload.name] = ProgramCost(ns_per_call, share)
    return costs


def tracer_alone(
    binary: Path, repeats: int, rounds: int
) -> tuple[list[Config], dict[str, ProgramCost]]:
    """Workloads with the tracer's measured calls detached, then attached, in turn."""
    off, on = Config("tracer detached", None), Config("tracer attached", None)
    tracer = NetworkTracer()
    tracer.start()
    lock, stop = threading.Lock(), threading.Event()

    def drain_loop() -> None:
        while not stop.wait(AGENT_INTERVAL):
            with lock:
                tracer.drain()

    drainer = threading.Thread(target=drain_loop, name="drain")
    drainer.start()
    try:
        for repeat in range(repeats):
            # Alternate which goes first, so drift over a round cancels out.
            for config in (off, on) if repeat % 2 == 0 else (on, off):
                with lock:
                    tracer.resume() if config is on else tracer.suspend()
                run_workloads(binary, rounds, config)
                _print_round("network tracer", repeat, config)
        with lock:
            tracer.resume()
        costs = program_costs(tracer, binary, rounds) if bpfstats.available() else {}
    finally:
        stop.set()
        drainer.join()
        tracer.close()
    return [off, on], costs


def _print_round(prefix: str, repeat: int, config: Config) -> None:
    for workload in WORKLOADS:
        print(
            f"{prefix} round {repeat + 1}: {config.name}: {workload.name}: "
            f"{config.wall[workload.name][-1]:.2f} s, "
            f"{config.syscalls_per_second[workload.name][-1]:,.0f} syscalls/s",
            flush=True,
        )


def build_pingpong(directory: Path) -> Path:
    return build_workload(FIXTURES / "network" / "pingpong.c", directory / "pingpong")


def run(directory: Path, server: str, repeats: int, rounds: int) -> list[Config]:
    """The whole agent: no agent, without the tracer, with it."""
    binary = build_pingpong(directory)
    configs = [
        Config("no agent", None),
        Config("agent, --no-network", ["--no-network"]),
        Config("agent, --network", ["--network"]),
    ]
    for repeat in range(repeats):
        for config in configs:
            measure(binary, rounds, config, directory, server)
            _print_round("agent", repeat, config)
    return configs


def section(
    alone: list[Config],
    costs: dict[str, ProgramCost],
    agents: list[Config],
    repeats: int,
    alone_repeats: int,
    rounds: int,
    alone_rounds: int,
) -> list[str]:
    service, bare = WORKLOADS
    header = [
        "| workload | configuration | wall time (median) | system calls/s | slowdown "
        "| agent CPU / wall time | agent RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    return [
        HEADING,
        "",
        "Loopback request/response (tests/fixtures/network/pingpong.c: one-byte round trips",
        "over TCP on 127.0.0.1, four read/write calls on sockets per round, all traced), as a",
        "service whose server computes 20 us per request and as a bare ping-pong, the worst",
        "case for a per-call cost.",
        "",
        "The tracer alone: one network tracer in the benchmark process, its per-call programs",
        f"attached and detached in turn, {alone_repeats} pairs of short runs ({alone_rounds:,}",
        f"bare rounds, {int(alone_rounds * service.rounds_per_unit):,} service rounds; the order",
        "within a pair alternates); descriptor bookkeeping stays attached; drained every",
        f"{AGENT_INTERVAL} s. Slowdowns are medians of the pairs' ratios, which cancels the load",
        "of the shared machine drifting between pairs; the workload's CPU time (both processes)",
        "is less sensitive to waiting for a CPU than its wall time.",
        "",
        "| workload | system calls/s, detached | wall time slowdown (quartiles) "
        "| workload CPU time slowdown | BPF time per read/write | of the workload's CPU |",
        "|---|---|---|---|---|---|",
        *(_paired_row(alone, costs.get(workload.name), workload) for workload in WORKLOADS),
        "",
        "The BPF time is the kernel's own count (`kernel.bpf_stats_enabled`, read with bpftool)",
        "of the read/write programs' run time per call over one more run with the tracer",
        "attached, averaged over every read and write on the machine meanwhile; the last",
        "column multiplies it by the workload's calls, against the workload's CPU time. It",
        "leaves out the tracepoint machinery around the programs.",
        "",
        f"The whole agent, started afresh for each of {repeats} interleaved rounds",
        f"({rounds:,} bare rounds, {int(rounds * service.rounds_per_unit):,} service rounds), "
        "draining every",
        f"{AGENT_INTERVAL} s, shipping to a local `podflame server`, measured from its second",
        "drain on (BPF compiled, running processes captured). CPU shares are of one core.",
        "",
        *header,
        *(row for workload in WORKLOADS for row in _rows(agents, workload)),
        "",
        *_goals(alone, costs, agents, service),
        *_bare_figure(alone, costs, bare),
        "",
    ]


def _ratios(alone: list[Config], workload: Workload, metric: str) -> list[float]:
    """(attached / detached) - 1 for each pair."""
    off, on = (getattr(config, metric)[workload.name] for config in alone)
    return [b / a - 1 for a, b in zip(off, on, strict=True)]


def _paired(alone: list[Config], workload: Workload, metric: str) -> float:
    return statistics.median(_ratios(alone, workload, metric))


def _paired_row(alone: list[Config], cost: ProgramCost | None, workload: Workload) -> str:
    rate = statistics.median(alone[0].syscalls_per_second[workload.name])
    ratios = _ratios(alone, workload, "wall")
    low, _, high = statistics.quantiles(ratios, n=4)
    wall = f"{100 * statistics.median(ratios):+.2f} % ({100 * low:+.1f} to {100 * high:+.1f} %)"
    cpu = _paired(alone, workload, "cpu")
    bpf = "-" if cost is None else f"{cost.ns_per_call:.0f} ns"
    share = "-" if cost is None else f"{100 * cost.share_of_workload_cpu:.2f} %"
    return f"| {workload.name} | {rate:,.0f} | {wall} | {100 * cpu:+.2f} % | {bpf} | {share} |"


def _rows(configs: list[Config], workload: Workload) -> list[str]:
    baseline = statistics.median(configs[0].wall[workload.name])
    rows = []
    for config in configs:
        wall = statistics.median(config.wall[workload.name])
        calls = statistics.median(config.syscalls_per_second[workload.name])
        cpu = statistics.median(config.agent_cpu_share) if config.agent_cpu_share else None
        rss = statistics.median(config.agent_rss) / 2**20 if config.agent_rss else None
        rows.append(
            f"| {workload.name} | {config.name} | {wall:.3f} s | {calls:,.0f} "
            f"| {100 * (wall / baseline - 1):+.2f} % | "
            f"{'-' if cpu is None else f'{100 * cpu:.2f} %'} | "
            f"{'-' if rss is None else f'{rss:.0f} MB'} |"
        )
    return rows


def _slowdown(configs: list[Config], workload: Workload, of: int, against: int) -> float:
    walls = [statistics.median(c.wall[workload.name]) for c in configs]
    return walls[of] / walls[against] - 1


def _goals(
    alone: list[Config], costs: dict[str, ProgramCost], agents: list[Config], workload: Workload
) -> list[str]:
    rate = statistics.median(alone[0].syscalls_per_second[workload.name])
    slowdown = _paired(alone, workload, "wall")
    low, _, high = statistics.quantiles(_ratios(alone, workload, "wall"), n=4)
    whole, tracer_part = _slowdown(agents, workload, 2, 0), _slowdown(agents, workload, 2, 1)
    cost = costs.get(workload.name)
    kernel = (
        ""
        if cost is None
        else f" The kernel counts {100 * cost.share_of_workload_cpu:.2f} % of the workload's CPU "
        "time in the programs alone, a figure this machine's noise does not blur."
    )
    return [
        f"- Goal: the service workload makes at least {MIN_SYSCALLS_PER_SECOND:,} system "
        f"calls/s: {rate:,.0f}, {'met' if rate >= MIN_SYSCALLS_PER_SECOND else 'NOT met'}.",
        f"- Goal: it slows down by at most {100 * MAX_SLOWDOWN:.0f} % with the network tracer "
        f"on: {100 * slowdown:+.2f} % (median of the pairs, tracer attached against detached), "
        f"{'met' if slowdown <= MAX_SLOWDOWN else 'NOT met'}; but the pairs' quartiles, "
        f"{100 * low:+.1f} % to {100 * high:+.1f} %, are wider than the goal.{kernel} With the "
        f"whole agent: {100 * whole:+.2f} % against no agent, {100 * tracer_part:+.2f} % against "
        "the agent without the tracer (agent restarts make these noisier still).",
    ]


def _bare_figure(
    alone: list[Config], costs: dict[str, ProgramCost], workload: Workload
) -> list[str]:
    rate = statistics.median(alone[0].syscalls_per_second[workload.name])
    cost = costs.get(workload.name)
    kernel = (
        ""
        if cost is None
        else f", and {100 * cost.share_of_workload_cpu:.2f} % of its CPU time in the programs"
    )
    return [
        f"- Bare ping-pong at {rate:,.0f} system calls/s (several times the goal's rate): "
        f"{100 * _paired(alone, workload, 'wall'):+.2f} % with the tracer attached{kernel}: "
        "every call pays the programs' cost in full when calls come back to back.",
    ]


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
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the agent runs")
    parser.add_argument("--alone-repeats", type=int, default=30, help="pairs of tracer runs")
    parser.add_argument("--alone-rounds", type=int, default=50_000, help="bare rounds per run")
    parser.add_argument("--rounds", type=int, default=200_000, help="bare ping-pong rounds")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks need root (the agent loads BPF programs)")
    with tempfile.TemporaryDirectory(prefix="podflame-bench-net-") as tmp:
        directory = Path(tmp)
        port = free_port()
        server = [*PODFLAME, "server", "--port", str(port), "--storage", f"chdb://{directory}/db"]
        alone, costs = tracer_alone(
            build_pingpong(directory), args.alone_repeats, args.alone_rounds
        )
        with background(server, directory / "server.log", settle=5):
            agents = run(directory, f"http://127.0.0.1:{port}", args.repeats, args.rounds)
    lines = section(
        alone, costs, agents, args.repeats, args.alone_repeats, args.rounds, args.alone_rounds
    )
    print("\n".join(lines))
    args.output.write_text(replace_section(args.output.read_text(), lines))
    print(f"updated {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
