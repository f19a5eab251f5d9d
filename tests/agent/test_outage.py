"""`podflame agent` processes against a server that is killed, blackholed or down.

Issue 8: the agent spools what the server has not acknowledged, replays it in
order, nothing is stored twice, and SIGTERM stops it within 5 s whatever the
server does.
"""

import gzip
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from pydantic import AnyHttpUrl

from podflame.agent.agent import build_agent
from podflame.agent.settings import AgentSettings
from podflame.model import Batch
from tests.agent.outage import blackhole, kill, rows_per_sample, start_server
from tests.conftest import PODFLAME, free_port, stop
from tests.fixtures import build_burn7030

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

EXIT_BOUND = 5.0  # seconds from SIGTERM to exit (issue 8)


@contextmanager
def agent_process(server: str, spool: Path, log: Path, *flags: str) -> Iterator["Agent"]:
    command = [
        *PODFLAME,
        "agent",
        "--server",
        server,
        "--spool-dir",
        str(spool),
        "--metrics-port",
        "0",
        *flags,
    ]
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    agent = Agent(process, log)
    try:
        agent.wait_for_log("sampling all CPUs", timeout=180)  # BCC compiles first
        yield agent
    finally:
        stop(process)


class Agent:
    def __init__(self, process: "subprocess.Popen[bytes]", log: Path) -> None:
        self.process, self.log = process, log

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text():
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no {text!r} in the agent's log"
            time.sleep(0.2)

    def terminate(self) -> float:
        """SIGTERM; the seconds until the process is gone."""
        start = time.monotonic()
        self.process.terminate()
        code = self.process.wait(60)
        elapsed = time.monotonic() - start
        assert code == 0, self.log.read_text()[-3000:]
        return elapsed


def spooled(directory: Path) -> list[Batch]:
    return [
        Batch.model_validate_json(gzip.decompress(path.read_bytes()))
        for path in sorted(directory.glob("*.batch.gz"))
    ]


def value_of(batches: list[Batch], pid: int) -> int:
    return sum(
        sample.value
        for batch in batches
        for series in batch.series
        if series.labels.get("pid") == str(pid)
        for sample in series.samples
    )


def stored(url: str, pid: int) -> int:
    params = {"query": f'{{pid="{pid}"}}', "from": "now-1h"}
    total: int = httpx.get(url + "/api/v1/top", params=params, timeout=60).json()["total"]
    return total


def wait_for(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


@pytest.mark.parametrize("away", ["blackholed", "down"])
def test_sigterm_with_the_server_away_exits_in_time_and_spools_the_last_batch(
    tmp_path: Path, away: str
) -> None:
    burn = build_burn7030(tmp_path / "burn7030")
    spool = tmp_path / "spool"
    log = tmp_path / "agent.log"
    with blackhole() as hole:
        server = hole.url if away == "blackholed" else f"http://127.0.0.1:{free_port()}"
        # One drain, at the signal: the last interval's batch is the only one.
        with agent_process(server, spool, log, "--interval", "60") as agent:
            workload = subprocess.Popen([str(burn), "1.0"], stdout=subprocess.DEVNULL)
            assert workload.wait(60) == 0
            pid = workload.pid
            exit_seconds = agent.terminate()
    assert exit_seconds < EXIT_BOUND, f"exited {exit_seconds:.2f} s after SIGTERM"
    last = spooled(spool)
    assert value_of(last, pid) > 0, "the workload's samples wait in the spool"

    # A restarted agent with the server up sends them; then it stops in time again.
    port = free_port()
    process = start_server(tmp_path, port)
    try:
        url = f"http://127.0.0.1:{port}"
        # It only replays the spool: CPU sampling alone (the network programs would
        # add their compile to the start, and nothing here reads what they trace).
        with agent_process(url, spool, log, "--interval", "60", "--no-network") as agent:
            wait_for(lambda: not spooled(spool))
            exit_seconds = agent.terminate()
        assert stored(url, pid) == value_of(last, pid)
    finally:
        stop(process)
    assert exit_seconds < EXIT_BOUND, f"exited {exit_seconds:.2f} s after SIGTERM, server up"


@pytest.mark.parametrize("outage", [12, pytest.param(60, marks=pytest.mark.soak)])
def test_server_killed_and_restarted_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, outage: int
) -> None:
    """A CPU-bound workload runs while the server is SIGKILLed for `outage` seconds and
    restarted on the same chDB: the CPU time stored for it is what it used (3 %)."""
    burn = build_burn7030(tmp_path / "burn7030")
    spool = tmp_path / "spool"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    try:
        flags = ("--interval", "1", "--frequency", "499", "--no-network")
        with agent_process(url, spool, tmp_path / "agent.log", *flags) as agent:
            workload = subprocess.Popen(
                [str(burn), "-w", str(outage + 8)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            wait_for(lambda: stored(url, workload.pid) > 0)  # shipping before the outage
            kill(server)
            time.sleep(outage)
            waiting = len(spooled(spool))
            server = start_server(tmp_path, port)
            assert workload.stdout is not None
            used = float(workload.stdout.readline().split("cpu_seconds=")[1].split()[0])
            time.sleep(2)  # the drain after the busy phase ended
            agent.terminate()  # the server is up: the last batch is sent
            workload.communicate(timeout=10)
        assert not spooled(spool), "everything was replayed"
        total = stored(url, workload.pid)
    finally:
        stop(server)
    assert waiting >= outage // 2, f"only {waiting} batches spooled in a {outage} s outage"
    assert total / 1e9 == pytest.approx(used, rel=0.03), (total / 1e9, used)
    rows = rows_per_sample(tmp_path / "chdb", f"pid = {workload.pid}")
    assert rows and max(rows.values()) == 1, "a (time, stack) stored twice: a batch twice"


def test_drains_go_on_while_the_server_never_answers(tmp_path: Path) -> None:
    """In-process agent, server blackholed: the drain loop keeps spooling batches (the sender
    alone waits), and /metrics shows what waits and the spool's counters."""
    with blackhole() as hole:
        settings = AgentSettings(
            server=AnyHttpUrl(hole.url),
            interval=0.5,
            metrics_port=0,
            network=False,
            spool_dir=tmp_path / "spool",
        )
        agent = build_agent(settings)
        stop_event = threading.Event()
        thread = threading.Thread(target=agent.run, args=(stop_event,))
        thread.start()
        try:
            wait_for(lambda: agent.stats.drains >= 4, timeout=60)
            # Sending in the drain loop would have needed a send (a connection) per drain.
            connections = hole.connections
            values = parse_metrics(generate_latest(agent.registry).decode())
        finally:
            stop_event.set()
            thread.join(30)
    assert connections == 1, "one send, waiting for an answer that never comes"
    assert not thread.is_alive()
    assert values["podflame_agent_shipper_pending_batches"] >= 4
    assert values["podflame_agent_shipper_pending_bytes"] > 0
    assert values["podflame_agent_shipper_batches_sent_total"] == 0
    assert values["podflame_agent_spool_batches_recovered_total"] == 0
    assert len(spooled(tmp_path / "spool")) >= 5, "the last drain was spooled too"


def parse_metrics(text: str) -> dict[str, float]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}
