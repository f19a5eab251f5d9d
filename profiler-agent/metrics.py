"""The agent's /metrics endpoint in the Prometheus text format.

The agent's stages keep their own counters (dataclasses); this module only
gathers them at scrape time. A scrape runs on the HTTP server's thread and
reads plain ints, so it never blocks or slows the drain.

Each connection has its own thread and a deadline per read and write
(CONNECTION_TIMEOUT), and at most MAX_CONNECTIONS are served at once (more
are closed at once): a client that sends nothing or reads slowly holds one
thread for seconds, never the endpoint.
"""

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds a connection may take per read or write; a scrape needs milliseconds.
CONNECTION_TIMEOUT = 5.0
MAX_CONNECTIONS = 16


@dataclass(frozen=True)
class Sample:
    name: str
    kind: str  # "counter" or "gauge"
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(samples: Iterable[Sample]) -> str:
    """Prometheus text exposition: HELP and TYPE once per metric name, then its samples."""
    lines: list[str] = []
    described: set[str] = set()
    for sample in samples:
        if sample.name not in described:
            described.add(sample.name)
            lines.append(f"# HELP {sample.name} {sample.help}")
            lines.append(f"# TYPE {sample.name} {sample.kind}")
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels)
        series = f"{sample.name}{{{labels}}}" if labels else sample.name
        lines.append(f"{series} {sample.value:g}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves `collect()` at /metrics on a background thread."""

    def __init__(
        self,
        host: str,
        port: int,
        collect: Callable[[], Iterable[Sample]],
        timeout: float = CONNECTION_TIMEOUT,
    ) -> None:
        self._server = _BoundedServer((host, port), _handler(collect, timeout))
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
    collect: Callable[[], Iterable[Sample]], connection_timeout: float
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # StreamRequestHandler sets it on the socket: each read and write of the
        # request and the answer fails past it, and the connection is closed.
        timeout = connection_timeout

        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            body = render(collect()).encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes are routine; errors still reach the log through send_error

    return Handler
