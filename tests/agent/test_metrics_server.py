"""The agent's /metrics server: a client that sends nothing or reads slowly holds one
connection for CONNECTION_TIMEOUT at most, never the endpoint (issue 16)."""

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from podflame.agent.metrics import MAX_CONNECTIONS, MetricsServer, registry_of
from podflame.agent.settings import AgentSettings
from podflame.agent.stats import AgentStats, AgentStatsCollector


@contextmanager
def metrics_server(timeout: float) -> Iterator[str]:
    registry = registry_of([AgentStatsCollector(AgentStats(drains=3))])
    server = MetricsServer("127.0.0.1", 0, registry, timeout=timeout)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}/metrics"
    finally:
        server.close()


def idle_connection(url: str, stack: ExitStack) -> socket.socket:
    """Connected, sending nothing."""
    port = int(url.split(":")[2].split("/")[0])
    sock = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
    sock.settimeout(10)
    return sock


def test_a_silent_client_does_not_stop_a_scrape_and_is_dropped() -> None:
    with metrics_server(timeout=0.5) as url, ExitStack() as stack:
        silent = idle_connection(url, stack)
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200
        assert "podflame_agent_drains_total 3" in response.text
        started = time.monotonic()
        assert silent.recv(1024) == b""  # closed by the server, not by our 10 s timeout
        assert time.monotonic() - started < 10


def test_connections_past_the_cap_are_closed_at_once() -> None:
    with metrics_server(timeout=30) as url, ExitStack() as stack:
        for _ in range(MAX_CONNECTIONS):
            idle_connection(url, stack)
        extra = idle_connection(url, stack)
        assert extra.recv(1024) == b""  # within its 10 s timeout, long before 30 s


def test_metrics_listen_on_loopback_unless_told_otherwise() -> None:
    settings = AgentSettings.model_validate({"server": "http://127.0.0.1:1"})
    assert settings.metrics_host == "127.0.0.1"


class BrokenAfterStart(Collector):
    """Reports at registration, raises at every scrape after (as a part whose BPF module
    closed once did)."""

    def __init__(self) -> None:
        self.started = False

    def collect(self) -> Iterator[Metric]:
        if self.started:
            raise RuntimeError("BPF programs closed")
        yield CounterMetricFamily("podflame_agent_broken_total", "A part.", value=1)


def test_a_collector_that_raises_costs_its_own_metrics_counted_not_the_scrape() -> None:
    broken = BrokenAfterStart()
    registry = registry_of([AgentStatsCollector(AgentStats(drains=3)), broken])
    broken.started = True
    server = MetricsServer("127.0.0.1", 0, registry)
    server.start()
    try:
        for scrape in (1, 2):
            response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
            assert response.status_code == 200
            assert "podflame_agent_drains_total 3" in response.text
            assert "podflame_agent_broken_total" not in response.text
            expected = (
                f'podflame_agent_collector_errors_total{{collector="BrokenAfterStart"}} {scrape}.0'
            )
            assert expected in response.text, response.text
    finally:
        server.close()
