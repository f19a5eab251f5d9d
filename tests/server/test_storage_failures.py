"""Real storage failures in chDB: tables detached, or refusing rows by a constraint.

Ingest answers 503 with Retry-After, queries 503 JSON (never 500); a batch
that failed part-way (one table written, the next one refusing it) is
completed by the agent's retry with the same batch_id, nothing stored twice.
"""

import gzip
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient

from podflame.server.clickhouse_store import ClickHouseStore
from podflame.server.errors import RETRY_AFTER_SECONDS
from tests.server.conftest import batch, folded
from tests.server.network_batches import connection, histogram, net_batch
from tests.server.test_pyroscope import (
    PROTO,
    PUSH,
    PY_STACKS,
    SDK_LABELS,
    expected,
    push_request,
    python_pprof,
)

LABELS = {"node": "n1", "namespace": "shop", "pod": "cart-1", "comm": "cart", "pid": "42"}
NETWORK_TABLES = ("network_latency", "network_peers")


@contextmanager
def detached(client: Client, store: ClickHouseStore, *tables: str) -> Iterator[None]:
    """The tables gone from the store's database until the block ends, as a failed disk would."""
    for table in tables:
        client.command(f"DETACH TABLE {store.database}.{table}")
    try:
        yield
    finally:
        for table in tables:
            client.command(f"ATTACH TABLE {store.database}.{table}")


@contextmanager
def refusing(client: Client, store: ClickHouseStore, table: str, check: str) -> Iterator[None]:
    """`table` refuses any insert with a row failing `check` until the block ends.

    Reads still work, so the failure comes in the middle of a batch's writes.
    """
    client.command(f"ALTER TABLE {store.database}.{table} ADD CONSTRAINT refuse CHECK {check}")
    try:
        yield
    finally:
        client.command(f"ALTER TABLE {store.database}.{table} DROP CONSTRAINT refuse")


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert response.headers["content-type"] == "application/json"
    assert "storage failed" in response.json()["error"]


def rows(client: Client, store: ClickHouseStore, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {store.database}.{table}").result_rows[0][0])


def cpu_batch() -> dict[str, Any]:
    return batch([["main", "work"], ["main", "idle"]], [(LABELS, [(0, 30), (1, 12)])])


def network_batch() -> dict[str, Any]:
    return net_batch(
        [histogram(LABELS, "recvfrom", [1_000, 2_000, 50_000])],
        [connection(LABELS, "10.0.0.7", 5432, "ok", [300_000, 400_000])],
        stacks=[["main", "recv"]],
        series=[(LABELS, [(0, 53_000)])],
    )


@pytest.mark.parametrize("table", ["samples", "stacks"])
def test_ingest_is_503_while_a_table_is_gone_and_the_retry_stores_it_once(
    api: TestClient, store: ClickHouseStore, chdb_client: Client, table: str
) -> None:
    body = cpu_batch()
    with detached(chdb_client, store, table):
        assert_unavailable(api.post("/api/v1/ingest", json=body))
        assert_unavailable(api.post("/api/v1/ingest", json=body))
    assert folded(api) == {}
    assert api.post("/api/v1/ingest", json=body).status_code == 200
    assert api.post("/api/v1/ingest", json=body).status_code == 200
    assert folded(api) == {"main;work": 30, "main;idle": 12}


@pytest.mark.parametrize("failing", NETWORK_TABLES)
def test_a_table_gone_fails_the_batch_before_anything_is_written(
    api: TestClient, store: ClickHouseStore, chdb_client: Client, failing: str
) -> None:
    # The writer first asks every table it will write what it holds already.
    body = network_batch()
    with detached(chdb_client, store, failing):
        assert_unavailable(api.post("/api/v1/ingest", json=body))
    for table in ("samples", *NETWORK_TABLES):
        if table != failing:
            assert rows(chdb_client, store, table) == 0, table
    assert api.post("/api/v1/ingest", json=body).status_code == 200
    for table in ("samples", *NETWORK_TABLES):
        assert rows(chdb_client, store, table) == 1, table


@pytest.mark.parametrize("failing", NETWORK_TABLES)
def test_a_batch_failed_between_tables_is_completed_by_its_retry(
    api: TestClient, store: ClickHouseStore, chdb_client: Client, failing: str
) -> None:
    body = network_batch()
    with refusing(chdb_client, store, failing, "pid != 42"):
        assert_unavailable(api.post("/api/v1/ingest", json=body))
    # What a query may see until the retry: the tables written before the
    # failing one (samples, then network_latency, then network_peers).
    written = {"samples": 1, "network_latency": 1 if failing == "network_peers" else 0}
    for table, count in written.items():
        assert rows(chdb_client, store, table) == count, table
    for _ in range(2):
        assert api.post("/api/v1/ingest", json=body).status_code == 200
    for table in ("samples", *NETWORK_TABLES):
        assert rows(chdb_client, store, table) == 1, table
    latency = api.get("/api/v1/network/latency", params={"query": '{pod="cart-1"}'}).json()
    assert [group["count"] for group in latency["groups"]] == [3]
    assert folded(api, type="net_wait") == {"main;recv": 53_000}


def test_pyroscope_ingest_paths_are_503_then_stored_once(
    api: TestClient, store: ClickHouseStore, chdb_client: Client
) -> None:
    push = gzip.compress(push_request([(SDK_LABELS, [python_pprof()])]))
    push_headers = {**PROTO, "content-encoding": "gzip"}
    now = int(time.time())
    legacy = {"name": "legacy.cpu{env=prod}", "from": str(now - 10), "until": str(now)}
    with detached(chdb_client, store, "samples"):
        response = api.post(PUSH, content=push, headers=push_headers)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
        assert response.json()["code"] == "unavailable"
        assert_unavailable(api.post("/ingest", params=legacy, content=b"main;work 7\n"))
    for _ in range(2):
        assert api.post(PUSH, content=push, headers=push_headers).status_code == 200
        assert api.post("/ingest", params=legacy, content=b"main;work 7\n").status_code == 200
    assert rows(chdb_client, store, "samples") == rows_after_one_copy(api)


def rows_after_one_copy(api: TestClient) -> int:
    """Sample rows one copy of each upload stores: one per stack of each."""
    python = folded(api, type="process_cpu", query='{service_name="shop"}')
    assert python == expected(PY_STACKS)
    legacy = folded(api, type="process_cpu", query='{service_name="legacy"}')
    assert legacy == {"main;work": 7 * 10_000_000}  # 7 samples at 100 Hz, in ns
    return len(python) + len(legacy)


QUERIES = [
    ("/api/v1/flamegraph", {}),
    ("/api/v1/top", {}),
    ("/api/v1/timeline", {}),
    ("/api/v1/export", {}),
    ("/api/v1/labels", {}),
    ("/api/v1/labels/pod/values", {}),
    ("/api/v1/diff", {"left": '{pod="a"}', "right": '{pod="b"}'}),
    ("/api/v1/network/latency", {}),
    ("/api/v1/network/peers", {}),
    ("/readyz", {}),
]


def test_every_query_is_503_json_while_storage_is_gone(
    api: TestClient, store: ClickHouseStore, chdb_client: Client
) -> None:
    assert api.post("/api/v1/ingest", json=cpu_batch()).status_code == 200
    tables = ("samples", "stacks", *NETWORK_TABLES)
    with detached(chdb_client, store, *tables):
        for path, params in QUERIES:
            response = api.get(path, params=params)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS), path
            assert response.json()["error"].startswith("storage failed"), path
        metrics = api.get("/metrics").text
    assert 'podflame_storage_errors_total{kind="unavailable"} 0' not in metrics
    for path, params in QUERIES:
        assert api.get(path, params=params).status_code == 200, path
