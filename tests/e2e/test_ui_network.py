"""The Network view against the server's real network endpoints and the agent's real
network tracing (issue 4): a client whose replies an in-test server delays by 20 ms must
show that latency for its pod's recvfrom calls, its peer, and its net_wait stacks.

Needs /api/v1/network/latency and /api/v1/network/peers (docs/network contract). Where
the server lacks them this test skips with that reason on a developer machine and fails
in CI, like the BPF tests.
"""

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import compile_c, running_server
from tests.e2e.browser import frames, open_page, screenshot, wait_for_panel
from tests.e2e.pods import Pod, Workload, pod_agent, release, run_workloads
from tests.fixtures import FIXTURES

pytestmark = [pytest.mark.browser, pytest.mark.bpf]

DELAY_SECONDS = 0.020
CLIENT_SECONDS = 6
FRONTEND = Pod("shop", "frontend", "frontend-0", "web")
NETWORK_PATHS = ("/api/v1/network/latency", "/api/v1/network/peers")


@dataclass(frozen=True)
class Delayed:
    url: str
    port: int  # where the delaying server listened
    pod: Pod


class DelayingServer:
    """Answers each message on one TCP connection after DELAY_SECONDS."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, name="delaying-server", daemon=True)
        self.thread.start()

    def serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            while connection.recv(16):
                time.sleep(DELAY_SECONDS)
                connection.sendall(b"pong")

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=10)


def require_network_endpoints(url: str) -> None:
    paths = httpx.get(f"{url}/openapi.json", timeout=30).json()["paths"]
    missing = [path for path in NETWORK_PATHS if path not in paths]
    if not missing:
        return
    message = (
        f"the server lacks {', '.join(missing)}: the network endpoints of issue 4 are not "
        "merged into this branch yet"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def delayed(tmp_path_factory: pytest.TempPathFactory, require_bpf: None) -> Iterator[Delayed]:
    tmp_path = tmp_path_factory.mktemp("network")
    with running_server(tmp_path) as url:
        require_network_endpoints(url)
        client = compile_c(FIXTURES / "delayed_client.c", tmp_path / "delayed_client")
        server = DelayingServer()
        try:
            command = [str(client), "127.0.0.1", str(server.port), str(CLIENT_SECONDS)]
            workloads = [Workload(FRONTEND, command)]
            with pod_agent(url) as provider:
                run_workloads(provider, workloads, tmp_path)
            release(workloads)
        finally:
            server.close()
        yield Delayed(url, server.port, FRONTEND)


def milliseconds(text: str) -> float:
    found = re.fullmatch(r"([\d.,]+) (µs|ms|s)", text.strip())
    assert found, text
    value = float(found[1].replace(",", ""))
    return value * {"µs": 1e-3, "ms": 1.0, "s": 1e3}[found[2]]


def test_network_view_shows_the_injected_delay(delayed: Delayed, page: Page) -> None:
    selection = {"query": f'{{pod="{delayed.pod.pod}"}}', "from": "now-5m"}
    open_page(page, delayed.url, view="network", **selection)
    wait_for_panel(page, "network")
    latency = page.locator('[data-section="latency"] table')
    row = latency.locator("tbody tr").filter(has_text="recvfrom")
    expect(row).to_have_count(1)
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == f"pod: {delayed.pod.pod}", cells
    calls = int(cells[2].replace(",", ""))
    assert calls >= CLIENT_SECONDS / DELAY_SECONDS / 4, cells  # about one call per delay
    p50 = milliseconds(cells[5])
    # Histogram buckets are 1/8 of a power of two wide: a percentile is good to ~10 %.
    assert 0.85 * 1000 * DELAY_SECONDS <= p50 <= 3 * 1000 * DELAY_SECONDS, cells
    # The chart draws the chosen pod's calls over time, one line per system call.
    expect(page.locator('svg.line-chart g.series[data-series="recvfrom"]')).to_have_count(1)

    peers = page.locator('[data-section="peers"] table tbody tr')
    peer = peers.filter(has_text=f"127.0.0.1:{delayed.port}")
    expect(peer).to_have_count(1)
    assert peer.locator("td").nth(0).inner_text() == f"shop/{delayed.pod.pod}"

    # The net_wait graph: where the client waited (recv's caller wait_reply is hidden by
    # the frame-pointer walk starting at the libc leaf's caller frame, see burn7030.c).
    names = {frame["name"] for frame in frames(page, "network")}
    assert {"main", "ask", "recv", "send"} <= names, sorted(names)
    screenshot(page, "network")


def test_percentile_and_grouping_follow_the_url(delayed: Delayed, page: Page) -> None:
    open_page(page, delayed.url, view="network", query=f'{{pod="{delayed.pod.pod}"}}')
    wait_for_panel(page, "network")
    page.get_by_label("Group by").select_option("workload")
    expect(page).to_have_url(re.compile("group=workload"))
    wait_for_panel(page, "network")
    row = page.locator('[data-section="latency"] tbody tr').filter(has_text="recvfrom")
    expect(row.locator("td").first).to_have_text("workload: frontend")
    page.get_by_label("Percentile").select_option("p50")
    expect(page.locator("[data-section=latency] h3")).to_contain_text("p50 latency of workload")
    page.go_back()
    expect(page.get_by_label("Percentile")).to_have_value("p99")
