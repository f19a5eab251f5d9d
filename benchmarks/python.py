"""Python unwinding: the agent's CPU against py-spy's own, on the same workload.

Two busy CPython processes (tests/fixtures/python/target.py `busy`, the newest CPython
on the machine) run while, in turn: podflame's agent at 99 Hz names their Python frames
(`--python`, the default), the agent runs with `--no-python` (what the rest of its work
costs on this machine, which other processes share), and py-spy records each of them at
99 Hz (`--nonblocking`, one py-spy per process, as it attaches to one). The rounds are
interleaved; each figure is the profiler's CPU seconds over wall seconds, as a share of
one core: the agent's from its first drain to its third (BPF compiled, caches warm),
py-spy's (both together) over the same length of time.
"""

import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.common import PODFLAME, free_port, process_cpu_seconds
from benchmarks.overhead import AGENT_INTERVAL, FREQUENCY, background, wait_for_drains
from tests.agent.pythons import TARGET, interpreters

BUSY_PROCESSES = 2
WINDOW = 2 * AGENT_INTERVAL  # seconds: the agent's first drain to its third


@dataclass
class Shares:
    name: str
    cpu_share: list[float] = field(default_factory=list)


@contextmanager
def busy_pythons(python: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    command = [str(python), str(TARGET), "busy"]
    processes = [subprocess.Popen(command) for _ in range(BUSY_PROCESSES)]
    try:
        time.sleep(0.5)
        yield processes
    finally:
        for process in processes:
            process.kill()
            process.wait()


def measure_agent(directory: Path, server: str, python: Path, flags: list[str]) -> float:
    port = free_port()
    command = [
        *PODFLAME, "agent", "--server", server, "--frequency", str(FREQUENCY),
        "--interval", str(AGENT_INTERVAL), "--metrics-port", str(port), "--no-network", *flags,
    ]  # fmt: skip
    metrics = f"http://127.0.0.1:{port}/metrics"
    with (
        busy_pythons(python),
        background(command, directory / "agent-python.log", settle=5) as agent,
    ):
        _wait_for_metrics(metrics)
        wait_for_drains(metrics, 1)
        cpu0, wall0 = process_cpu_seconds(agent.pid), time.perf_counter()
        wait_for_drains(metrics, 3)
        cpu1, wall1 = process_cpu_seconds(agent.pid), time.perf_counter()
    return (cpu1 - cpu0) / (wall1 - wall0)


def measure_py_spy(py_spy: str, python: Path) -> float:
    with busy_pythons(python) as targets:
        rate, seconds = str(FREQUENCY), str(WINDOW + 2)
        record = [py_spy, "record", "--nonblocking", "-r", rate, "-d", seconds, "-f", "raw"]
        spies = [
            subprocess.Popen(
                [*record, "-o", "/dev/null", "-p", str(target.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for target in targets
        ]
        time.sleep(1)  # attached, past its start
        cpu0, wall0 = sum(map(process_cpu_seconds, (s.pid for s in spies))), time.perf_counter()
        time.sleep(WINDOW)
        cpu1, wall1 = sum(map(process_cpu_seconds, (s.pid for s in spies))), time.perf_counter()
        for spy in spies:
            spy.wait(60)
    return (cpu1 - cpu0) / (wall1 - wall0)


def run(directory: Path, server: str, repeats: int) -> tuple[str, list[Shares]] | None:
    """The newest CPython's label and each configuration's shares; None without py-spy
    or a CPython 3.10+."""
    found = interpreters(10)
    py_spy = _py_spy()
    if not found or py_spy is None:
        return None
    label, python = max(found, key=lambda item: _version(item[1]))
    configs = {
        f"podflame agent, {FREQUENCY} Hz, --python": lambda: measure_agent(
            directory, server, python, []
        ),
        f"podflame agent, {FREQUENCY} Hz, --no-python": lambda: measure_agent(
            directory, server, python, ["--no-python"]
        ),
        f"py-spy record -r {FREQUENCY} --nonblocking (x{BUSY_PROCESSES})": lambda: measure_py_spy(
            py_spy, python
        ),
    }
    results = {name: Shares(name) for name in configs}
    for repeat in range(repeats):
        for name, measure in configs.items():
            results[name].cpu_share.append(measure())
            share = results[name].cpu_share[-1]
            print(f"python round {repeat + 1}: {name}: {100 * share:.2f} %", flush=True)
    return label, list(results.values())


def section(label: str, results: list[Shares], repeats: int) -> list[str]:
    with_python, without, spy = (statistics.median(r.cpu_share) for r in results)
    lines = [
        "## Python unwinding",
        "",
        f"{BUSY_PROCESSES} busy CPython processes ({label}, tests/fixtures/python/target.py "
        f"`busy`); {repeats} interleaved rounds per configuration. The agent drains every "
        f"{AGENT_INTERVAL} s and ships to a local `podflame server`; its CPU share is measured "
        "from its first drain to its third, py-spy's (both processes together) over as "
        "long. The agent samples every process on the machine, so its share includes "
        "other work; `--no-python` beside it shows what naming Python frames adds. Shares "
        "are of one core.",
        "",
        "| configuration | profiler CPU / wall time (median) |",
        "|---|---|",
        *(f"| {r.name} | {100 * statistics.median(r.cpu_share):.2f} % |" for r in results),
        "",
        f"- Python frames add {100 * (with_python - without):+.2f} points to the agent's CPU; "
        f"py-spy uses {100 * spy:.2f} % for the same two processes.",
        f"- Goal: agent CPU at most 0.5 % of one core at {FREQUENCY} Hz with two busy Python "
        f"processes: {100 * with_python:.2f} %, {'met' if with_python <= 0.005 else 'NOT met'}.",
    ]
    return lines


def _wait_for_metrics(url: str, timeout: float = 600) -> None:
    """Until the agent serves /metrics (it compiles BPF first: a minute on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=5)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _py_spy() -> str | None:
    import shutil

    return shutil.which("py-spy", path=f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin")


def _version(python: Path) -> tuple[int, ...]:
    out = subprocess.run(
        [str(python), "-c", "import sys; print(*sys.version_info[:3])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return tuple(int(part) for part in out.split())


def main() -> int:
    """Only this section (`python -m benchmarks.python`), printed as markdown."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podflame-bench-python-") as tmp:
        directory = Path(tmp)
        port = free_port()
        server = [*PODFLAME, "server", "--port", str(port), "--storage", f"chdb://{directory}/db"]
        with background(server, directory / "server.log", settle=5):
            found = run(directory, f"http://127.0.0.1:{port}", args.repeats)
    if found is None:
        print("no py-spy or no CPython 3.10+ here")
        return 1
    print("\n".join(section(*found, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
