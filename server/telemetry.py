"""The server's own metrics, served at /metrics in the Prometheus text format.

Requests are counted by an ASGI middleware, by route template (never the raw
path, which would make one series per pod name in a query), method and status;
ingested batches and samples by a thin wrapper around the store; storage
errors by the error handlers. Everything is plain ints under one lock, rendered
by hand: no client library, and scrapes never touch the store.
"""

import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from podflame.model import Batch
from podflame.server.auth import INGEST_PATHS
from podflame.server.store import IngestResult, ProfileStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; from a cached probe (~1 ms) to the query timeout's order of magnitude.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# Clients may send any token as a method; only these get a series of their own.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class Histogram:
    # Non-cumulative counts per bucket of LATENCY_BUCKETS, plus one for +Inf.
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        index = next((i for i, le in enumerate(LATENCY_BUCKETS) if value <= le), -1)
        self.counts[index] += 1
        self.total += value


class Telemetry:
    def __init__(self) -> None:
        # Ingest runs in worker threads, requests on the event loop.
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str], Histogram] = defaultdict(Histogram)
        self._storage_errors: dict[str, int] = defaultdict(int)
        self._batches = 0
        self._samples = 0
        self._received_bytes = 0

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[method, route, str(status)] += 1
            self._latency[method, route].observe(seconds)

    def count_ingest(self, result: IngestResult) -> None:
        with self._lock:
            self._batches += 1
            self._samples += result.stored_samples

    def count_received(self, size: int) -> None:
        with self._lock:
            self._received_bytes += size

    def count_storage_error(self, kind: str) -> None:
        with self._lock:
            self._storage_errors[kind] += 1

    def render(self) -> str:
        with self._lock:
            lines = list(self._lines())
        return "\n".join(lines) + "\n"

    def _lines(self) -> Iterator[str]:
        yield from _header("podflame_http_requests_total", "counter", "HTTP requests answered.")
        for (method, route, status), count in sorted(self._requests.items()):
            labels = _labels(method=method, route=route, status=status)
            yield f"podflame_http_requests_total{{{labels}}} {count}"
        name = "podflame_http_request_duration_seconds"
        yield from _header(name, "histogram", "Time to answer an HTTP request.")
        for (method, route), histogram in sorted(self._latency.items()):
            yield from _histogram(name, _labels(method=method, route=route), histogram)
        yield from _counter("podflame_ingested_batches_total", "Batches stored.", self._batches)
        yield from _counter("podflame_ingested_samples_total", "Sample rows stored.", self._samples)
        yield from _counter(
            "podflame_ingest_received_bytes_total",
            "Request body bytes received on the ingest paths, as sent (before decompression).",
            self._received_bytes,
        )
        yield from _header(
            "podflame_storage_errors_total", "counter", "Requests failed by the store, by kind."
        )
        for kind in ("unavailable", "timeout"):
            count = self._storage_errors.get(kind, 0)
            yield f'podflame_storage_errors_total{{kind="{kind}"}} {count}'
        yield from _gauge(
            "process_resident_memory_bytes", "Resident memory of the server.", resident_bytes()
        )
        yield from _counter(
            "process_cpu_seconds_total", "CPU time of the server.", time.process_time()
        )


class MeteredStore:
    """The app's store, counting what ingest stores; every other call passes through."""

    def __init__(self, store: ProfileStore, telemetry: Telemetry) -> None:
        self._store = store
        self._telemetry = telemetry

    def ingest(self, batch: Batch) -> IngestResult:
        result = self._store.ingest(batch)
        self._telemetry.count_ingest(result)
        return result

    def __getattr__(self, name: str) -> Any:
        # The store Protocol grows with the query endpoints; forward whatever it has.
        return getattr(self._store, name)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, counting_receive, status_send)
        finally:
            seconds = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.telemetry.observe_request(method, route_label(scope), status, seconds)
            if scope["path"] in INGEST_PATHS:
                self.telemetry.count_received(received)


def route_label(scope: Scope) -> str:
    """The matched API route's template; "other" for the UI's files and unknown paths."""
    route = scope.get("route")
    # The UI mount does not leave its route in this scope; nor does a 404.
    path = getattr(route, "path", None) if not isinstance(route, Mount) else None
    return path if isinstance(path, str) and path else "other"


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def _header(name: str, kind: str, help_text: str) -> Iterator[str]:
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} {kind}"


def _counter(name: str, help_text: str, value: float) -> Iterator[str]:
    yield from _header(name, "counter", help_text)
    yield f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"


def _gauge(name: str, help_text: str, value: int) -> Iterator[str]:
    yield from _header(name, "gauge", help_text)
    yield f"{name} {value}"


def _histogram(name: str, labels: str, histogram: Histogram) -> Iterator[str]:
    cumulative = 0
    for le, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), histogram.counts, strict=True):
        cumulative += count
        yield f'{name}_bucket{{{labels},le="{le}"}} {cumulative}'
    yield f"{name}_sum{{{labels}}} {histogram.total:.6f}"
    yield f"{name}_count{{{labels}}} {cumulative}"


def _labels(**labels: str) -> str:
    return ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
