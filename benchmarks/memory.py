"""The agent's resident memory with many live processes, each sampled and symbolized.

Goal (issue 3): under 200 MB with 1,000 live processes.
"""

import subprocess
import time
from pathlib import Path

from benchmarks.common import PODFLAME, free_port, resident_bytes
from benchmarks.overhead import background, metric, wait_for_drains
from tests.fixtures import build_burn7030

GOAL_BYTES = 200 << 20


def start_processes(binary: Path, count: int) -> list[subprocess.Popen[bytes]]:
    """`count` processes that each burn 30 ms of CPU (so they get sampled), then wait."""
    command = [str(binary), "-w", "0.03"]
    return [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        for _ in range(count)
    ]


def run(directory: Path, server: str, processes: int) -> list[str]:
    binary = build_burn7030(directory / "burn7030-memory")
    port = free_port()
    command = [*PODFLAME, "agent", "--server", server, "--frequency", "99", "--interval", "5",
               "--metrics-port", str(port)]  # fmt: skip
    metrics = f"http://127.0.0.1:{port}/metrics"
    with background(command, directory / "agent-memory.log", settle=5) as agent:
        wait_for_drains(metrics, 1)
        idle_rss = resident_bytes(agent.pid)
        children = start_processes(binary, processes)
        try:
            time.sleep(2)
            drains = metric(metrics, "podflame_agent_drains_total")
            wait_for_drains(metrics, int(drains) + 2)
            held = metric(metrics, "podflame_agent_processes")
            rss = resident_bytes(agent.pid)
            file_backed = resident_bytes(agent.pid, "RssFile")
        finally:
            for child in children:
                child.kill()
                child.wait()
    verdict = "met" if rss < GOAL_BYTES else "NOT met"
    mb = 2**20
    return [
        "| live processes | held by the agent | RSS idle | RSS with them | of which file-backed |",
        "|---|---|---|---|---|",
        f"| {processes} | {held:.0f} | {idle_rss / mb:.0f} MB | {rss / mb:.0f} MB "
        f"| {file_backed / mb:.0f} MB |",
        "",
        f"Goal: under {GOAL_BYTES >> 20} MB with 1,000 live processes: {verdict}. Processes",
        "that burned too little CPU to be sampled are not held. File-backed memory is mostly",
        "the LLVM and Clang code BCC ran to compile the BPF program once at start; the kernel",
        "can reclaim it, but it counts in RSS.",
    ]
