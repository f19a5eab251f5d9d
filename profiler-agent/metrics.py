"""The agent's /metrics endpoint in the Prometheus text format.

The agent's stages keep their own counters (dataclasses); this module only
gathers them at scrape time. A scrape runs on the HTTP server's thread and
reads plain ints, so it never blocks or slows the drain.
"""

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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

    def __init__(self, host: str, port: int, collect: Callable[[], Iterable[Sample]]) -> None:
        handler = _handler(collect)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
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


def _handler(collect: Callable[[], Iterable[Sample]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
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
