"""The server's own metrics, served at /metrics through prometheus_client.

Requests are counted by an ASGI middleware, by route template (never the raw
path, which would make one series per pod name in a query), method and status;
ingested batches and samples by a thin wrapper around the store; storage
errors by the error handlers. Each keeps plain numbers under its own lock and
is a collector (`prometheus_client.registry.Collector`) that turns them into
metric families at scrape time; `create_app` registers them in a registry of
its own (never the library's global one), so scrapes never touch the store.
"""

import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from podflame.model import Batch
from podflame.server.auth import INGEST_PATHS
from podflame.server.store import IngestResult, ProfileStore

# The text format the server has always served (generate_latest writes it).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Seconds; from a cached probe (~1 ms) to the query timeout's order of magnitude.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BUCKET_LABELS = (*map(floatToGoString, LATENCY_BUCKETS), "+Inf")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# Clients may send any token as a method; only these get a series of their own.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STORAGE_ERROR_KINDS = ("unavailable", "timeout")


@dataclass
class Histogram:
    # Non-cumulative counts per bucket of LATENCY_BUCKETS, plus one for +Inf.
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        index = next((i for i, le in enumerate(LATENCY_BUCKETS) if value <= le), -1)
        self.counts[index] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running, buckets = 0, []
        for le, count in zip(_BUCKET_LABELS, self.counts, strict=True):
            running += count
            buckets.append((le, float(running)))
        return buckets


class RequestMetrics(Collector):
    """HTTP requests answered and their latency, and bytes received on the ingest paths."""

    def __init__(self) -> None:
        # Ingest runs in worker threads, requests on the event loop.
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str], Histogram] = defaultdict(Histogram)
        self._received_bytes = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[method, route, str(status)] += 1
            self._latency[method, route].observe(seconds)

    def count_received(self, size: int) -> None:
        with self._lock:
            self._received_bytes += size

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "podflame_http_requests_total",
            "HTTP requests answered.",
            labels=["method", "route", "status"],
        )
        latency = HistogramMetricFamily(
            "podflame_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            labels=["method", "route"],
        )
        with self._lock:
            for series, count in sorted(self._requests.items()):
                requests.add_metric(series, count)
            for route, histogram in sorted(self._latency.items()):
                latency.add_metric(route, histogram.cumulative(), histogram.total)
            received = self._received_bytes
        yield requests
        yield latency
        yield CounterMetricFamily(
            "podflame_ingest_received_bytes_total",
            "Request body bytes received on the ingest paths, as sent (before decompression).",
            value=received,
        )


class IngestMetrics(Collector):
    """Batches and sample rows the store accepted (counted by MeteredStore)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches = 0
        self._samples = 0

    def count(self, result: IngestResult) -> None:
        with self._lock:
            self._batches += 1
            self._samples += result.stored_samples

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            batches, samples = self._batches, self._samples
        yield CounterMetricFamily("podflame_ingested_batches_total", "Batches stored.", batches)
        yield CounterMetricFamily("podflame_ingested_samples_total", "Sample rows stored.", samples)


class StorageErrorMetrics(Collector):
    """Requests the store failed, by kind (counted by the error handlers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(STORAGE_ERROR_KINDS, 0)

    def count(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] += 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "podflame_storage_errors_total",
            "Requests failed by the store, by kind.",
            labels=["kind"],
        )
        with self._lock:
            for kind in STORAGE_ERROR_KINDS:
                family.add_metric([kind], self._counts[kind])
        yield family


class ProcessMetrics(Collector):
    """The server process's memory and CPU time, read at scrape time."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory of the server.", resident_bytes()
        )
        yield CounterMetricFamily(
            "process_cpu_seconds_total", "CPU time of the server.", time.process_time()
        )


@dataclass(frozen=True)
class Telemetry:
    """The server's collectors and the registry /metrics renders (one per app)."""

    requests: RequestMetrics = field(default_factory=RequestMetrics)
    ingest: IngestMetrics = field(default_factory=IngestMetrics)
    storage_errors: StorageErrorMetrics = field(default_factory=StorageErrorMetrics)
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        for collector in (self.requests, self.ingest, self.storage_errors, ProcessMetrics()):
            self.registry.register(collector)


class MeteredStore:
    """The app's store, counting what ingest stores; every other call passes through."""

    def __init__(self, store: ProfileStore, ingest: IngestMetrics) -> None:
        self._store = store
        self._ingest = ingest

    def ingest(self, batch: Batch, first_send: bool = False) -> IngestResult:
        result = self._store.ingest(batch, first_send)
        self._ingest.count(result)
        return result

    def __getattr__(self, name: str) -> Any:
        # The profile queries (ProfileStore) pass through unchanged.
        return getattr(self._store, name)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, requests: RequestMetrics) -> None:
        self.app = app
        self.requests = requests

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
            self.requests.observe(method, route_label(scope), status, seconds)
            if scope["path"] in INGEST_PATHS:
                self.requests.count_received(received)


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
