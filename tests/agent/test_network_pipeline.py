"""The agent with the network tracer, shipping to a real server: the net_wait profile.

The delay client waits 2 ms per request in wait_fast() and 20 ms in
wait_slow(); the net_wait flame graph served for its pid must split its time
between them as the client itself measured around its receive calls.
"""

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from podflame.agent.agent import Agent
from tests.agent.netlib import build, delay_server
from tests.agent.test_pipeline import parse_metrics, render_metrics, running_agent

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

FAST, SLOW, FAST_US, SLOW_US = 40, 8, 2000, 20000


def net_wait_folded(server: str, pid: int) -> list[tuple[list[str], int]]:
    params = {
        "query": f'{{pid="{pid}"}}',
        "from": "now-10m",
        "format": "folded",
        "type": "net_wait",
    }
    response = httpx.get(server + "/api/v1/export", params=params, timeout=30)
    assert response.status_code == 200, response.text
    lines = [line.rsplit(" ", 1) for line in response.text.splitlines()]
    return [(stack.split(";"), int(value)) for stack, value in lines]


def wait_until_captured(agent: Agent, pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while pid not in agent.processes.pids():
        assert time.monotonic() < deadline, f"{pid} was never announced"
        time.sleep(0.05)


def test_net_wait_profile_splits_waiting_time_between_the_waiting_functions(
    podflame_server: str, tmp_path: Path
) -> None:
    binaries = {name: build(name, tmp_path) for name in ("delay_server", "delay_client")}
    with (
        delay_server(binaries["delay_server"], "127.0.0.1") as port,
        running_agent(podflame_server) as agent,
    ):
        client = subprocess.Popen(
            [str(binaries["delay_client"]), "127.0.0.1", str(port)]
            + [str(n) for n in (FAST, SLOW, FAST_US, SLOW_US)]
            + ["recv", "wait"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None and client.stdin is not None
        measured = dict(item.split("=") for item in client.stdout.readline().split())
        # The agent captures a process (memory map, binaries) when the kernel
        # side announces it; right after the agent starts, that can lag behind
        # a short client by the whole burst of processes announced at start.
        wait_until_captured(agent, client.pid)
        client.stdin.close()
        assert client.wait(60) == 0
    metrics = parse_metrics(render_metrics(agent))  # after the last drain
    assert metrics["podflame_agent_network_calls_total"] >= FAST + SLOW
    stacks = net_wait_folded(podflame_server, client.pid)
    fast = sum(value for stack, value in stacks if "wait_fast" in stack)
    slow = sum(value for stack, value in stacks if "wait_slow" in stack)
    assert fast and slow, stacks
    for stack, _ in stacks:
        waiting = [f for f in stack if f in ("wait_fast", "wait_slow")]
        assert len(waiting) <= 1, stack  # connect() comes from main itself
        assert "main" in stack[: stack.index(waiting[0]) if waiting else None], stack
    # The share the client measured around its receive calls (ideally 1/3:
    # 40 x 2 ms against 8 x 20 ms; a loaded machine answers late).
    fast_us, slow_us = float(measured["fast_total_us"]), float(measured["slow_total_us"])
    assert fast / (fast + slow) == pytest.approx(fast_us / (fast_us + slow_us), abs=0.03)
    # Values are nanoseconds: the slow requests alone waited SLOW x 20 ms.
    assert slow >= 0.98 * SLOW * SLOW_US * 1000
