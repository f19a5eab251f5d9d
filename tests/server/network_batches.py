"""net_wait batches with known latencies, for the network tests."""

import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from podflame.model import Batch
from podflame.model.network import bucket_of
from podflame.server.clickhouse_store import ClickHouseStore
from podflame.server.network_queries import NetworkReader
from podflame.server.store import LatencyQuery


def histogram(
    labels: dict[str, str],
    syscall: str,
    latencies_ns: Sequence[int],
    *,
    errors: int = 0,
    eagain: int = 0,
) -> dict[str, Any]:
    """A LatencyHistogram as JSON, counting each latency in its bucket."""
    return {
        "labels": dict(labels),
        "syscall": syscall,
        "count": len(latencies_ns),
        "errors": errors,
        "eagain": eagain,
        "sum_ns": sum(latencies_ns),
        "max_ns": max(latencies_ns, default=0),
        "buckets": _buckets(latencies_ns),
    }


def connection(
    labels: dict[str, str],
    address: str,
    port: int,
    result: str,
    latencies_ns: Sequence[int],
    peer: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Connection as JSON: len(latencies_ns) connect() calls with one result."""
    return {
        "labels": dict(labels),
        "address": address,
        "port": port,
        "result": result,
        "count": len(latencies_ns),
        "max_ns": max(latencies_ns, default=0),
        "buckets": _buckets(latencies_ns),
        "peer": dict(peer or {}),
    }


def net_batch(
    latency: Sequence[dict[str, Any]] = (),
    connections: Sequence[dict[str, Any]] = (),
    *,
    stacks: Sequence[Sequence[str]] = (),
    series: Sequence[tuple[dict[str, str], Sequence[tuple[int, int]]]] = (),
    end_ns: int | None = None,
    batch_id: str | None = None,
) -> dict[str, Any]:
    """A net_wait wire batch as JSON; series are (labels, [(stack index, ns waited), ...])."""
    end_ns = time.time_ns() if end_ns is None else end_ns
    body = {
        "batch_id": batch_id or uuid.uuid4().hex,
        "profile_type": "net_wait",
        "period": 1,
        "start_time_ns": end_ns - 10 * 10**9,
        "end_time_ns": end_ns,
        "stacks": [list(stack) for stack in stacks],
        "series": [
            {"labels": dict(labels), "samples": [{"stack": s, "value": v} for s, v in samples]}
            for labels, samples in series
        ],
        "latency": list(latency),
        "connections": list(connections),
    }
    Batch.model_validate(body)  # valid unless a test breaks it on purpose afterwards
    return body


def _buckets(latencies_ns: Sequence[int]) -> dict[int, int]:
    return dict(Counter(bucket_of(ns) for ns in latencies_ns))


def statement_of(
    store: ClickHouseStore, client: Client, query: LatencyQuery
) -> tuple[str, dict[str, Any]]:
    """The statement the store runs for `query`, recorded rather than run (the row
    estimate that decides between rows and hourly sums does run)."""
    statements: list[tuple[str, dict[str, Any]]] = []

    def record(sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        if sql.startswith("EXPLAIN ESTIMATE"):
            return [tuple(row) for row in client.query(sql, parameters=parameters).result_rows]
        statements.append((sql, parameters))
        return []

    NetworkReader(f"`{store.database}`", record).latency(query)
    ((sql, parameters),) = statements
    return sql, parameters
