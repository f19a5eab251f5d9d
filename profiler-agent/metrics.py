"""The agent's /metrics endpoint: its parts' prometheus_client collectors, served.

Each part keeps its own counters (dataclasses of ints, dicts) and exports them
through a collector (`prometheus_client.registry.Collector`) that reads them at
scrape time; the composition root (`agent.build_agent`) registers those in one
CollectorRegistry per agent (never the library's global one). A scrape runs on
the HTTP server's thread and reads plain ints, so it never blocks or slows the
drain.

Each connection has its own thread and a deadline per read and write
(CONNECTION_TIMEOUT), and at most MAX_CONNECTIONS are served at once (more
are closed at once): a client that sends nothing or reads slowly holds one
thread for seconds, never the endpoint.
"""

import logging
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger(__name__)

# The text format the agent has always served (generate_latest writes it).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
PREFIX = "podflame_agent_"
# Seconds a connection may take per read or write; a scrape needs milliseconds.
CONNECTION_TIMEOUT = 5.0
MAX_CONNECTIONS = 16

# A part's in-memory caches and their entries (`Symbolizer.cache_sizes`, ...).
CacheSizes = Callable[[], Mapping[str, int]]


def labelled(
    family: CounterMetricFamily | GaugeMetricFamily, values: Mapping[str, float]
) -> CounterMetricFamily | GaugeMetricFamily:
    """`family` (made with one label name) with one sample per key, in key order."""
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class StageCounters(Collector):
    """A part's counters, a dataclass of ints, as podflame_agent_<prefix>_<field>_total."""

    def __init__(self, prefix: str, counters: "DataclassInstance") -> None:
        self._prefix, self._counters = prefix, counters

    def collect(self) -> Iterator[Metric]:
        for name, value in asdict(self._counters).items():
            yield CounterMetricFamily(
                f"{PREFIX}{self._prefix}_{name}_total", f"{self._prefix}: {name}.", value=value
            )


class CacheEntries(Collector):
    """One gauge for every part's caches: entries per cache, labelled by its name."""

    def __init__(self, sources: Sequence[CacheSizes]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        sizes: dict[str, int] = {}
        for source in self._sources:
            sizes.update(source())
        family = GaugeMetricFamily(
            PREFIX + "cache_entries", "Entries per agent cache.", labels=["cache"]
        )
        yield labelled(family, sizes)


class MetricsServer:
    """Serves `registry` at /metrics on a background thread."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        timeout: float = CONNECTION_TIMEOUT,
    ) -> None:
        self._server = _BoundedServer((host, port), _handler(registry, timeout))
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics")

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        self._thread.start()
        log.info("metrics at http://%s:%d/metrics", *self._server.server_address[:2])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def registry_of(collectors: Iterable[Collector]) -> CollectorRegistry:
    """A registry of its own with these collectors, each guarded (a part that fails to
    report costs its own metrics, counted, never the scrape); two that export one metric
    name fail here (auto_describe collects each once to learn its names)."""
    registry = CollectorRegistry(auto_describe=True)
    failures = CollectorFailures()
    for collector in collectors:
        registry.register(Guarded(collector, failures))
    registry.register(failures)
    return registry


class CollectorFailures(Collector):
    """Scrapes in which a part's collector raised, by the collector's class."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            PREFIX + "collector_errors",
            "Scrapes that lost a part's metrics because its collector raised.",
            labels=["collector"],
        )
        yield labelled(family, self.counts)


class Guarded(Collector):
    """A collector whose error leaves out its own metrics only: what it yields is
    gathered first, so a scrape never carries half of a part."""

    def __init__(self, collector: Collector, failures: CollectorFailures) -> None:
        self._collector, self._failures = collector, failures

    def collect(self) -> Iterator[Metric]:
        try:
            metrics = list(self._collector.collect())
        except Exception:  # a bug in one part must not cut /metrics off
            name = type(self._collector).__name__
            if not self._failures.counts[name]:
                log.exception("metrics of %s left out of the scrape", name)
            self._failures.counts[name] += 1
            return iter(())
        return iter(metrics)


# What socketserver hands its request methods (a stream socket, for HTTP).
_Request = socket.socket | tuple[bytes, socket.socket]


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS at once."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: _Request, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # busy: closed now, the client may retry
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: _Request, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: _Request, client_address: Any) -> None:
        # A client that timed out or went away: not worth a traceback on stderr.
        log.debug("metrics connection from %s failed", client_address, exc_info=True)


def _handler(
    registry: CollectorRegistry, connection_timeout: float
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # StreamRequestHandler sets it on the socket: each read and write of the
        # request and the answer fails past it, and the connection is closed.
        timeout = connection_timeout

        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes are routine; errors still reach the log through send_error

    return Handler
