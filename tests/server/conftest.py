"""Server test fixtures on a real embedded chDB.

chDB opens one data path per process, so the whole session shares one
client; each test gets a database of its own and so starts empty.
"""

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient

from podflame.model import Batch
from podflame.server.app import create_app
from podflame.server.clickhouse_store import ClickHouseStore

MAX_INGEST_BYTES = 1024 * 1024

Ingest = Callable[..., httpx.Response]


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="session")
def chdb_client(chdb_path: Path) -> Iterator[Client]:
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}")
    yield client
    client.close()


@pytest.fixture
def store(chdb_client: Client) -> Iterator[ClickHouseStore]:
    database = f"t_{uuid.uuid4().hex}"
    yield ClickHouseStore(chdb_client, database=database)
    chdb_client.command(f"DROP DATABASE IF EXISTS {database}")


@pytest.fixture
def api(store: ClickHouseStore) -> TestClient:
    return TestClient(create_app(store, max_ingest_bytes=MAX_INGEST_BYTES))


def batch(
    stacks: list[list[str]],
    series: list[tuple[dict[str, str], list[tuple[int, int]]]],
    *,
    batch_id: str | None = None,
    end_ns: int | None = None,
) -> dict[str, Any]:
    """A wire batch as JSON; series are (labels, [(stack index, value), ...])."""
    end_ns = time.time_ns() if end_ns is None else end_ns
    body = {
        "batch_id": batch_id or uuid.uuid4().hex,
        "profile_type": "cpu",
        "period": 10_000_000,
        "start_time_ns": end_ns - 10**9,
        "end_time_ns": end_ns,
        "stacks": stacks,
        "series": [
            {"labels": labels, "samples": [{"stack": s, "value": v} for s, v in samples]}
            for labels, samples in series
        ],
    }
    Batch.model_validate(body)  # the tests' batches must be valid unless broken on purpose
    return body


@pytest.fixture
def ingest(api: TestClient) -> Ingest:
    def post(body: dict[str, Any]) -> httpx.Response:
        response: httpx.Response = api.post("/api/v1/ingest", json=body)
        assert response.status_code == 200, response.text
        return response

    return post


def folded(api: TestClient, query: str = "", **params: str) -> dict[str, int]:
    """GET /api/v1/export as {stack: value}, checking each line's shape."""
    response = api.get("/api/v1/export", params={"query": query, **params})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    result = {}
    for line in response.text.splitlines():
        stack, value = line.rsplit(" ", 1)
        result[stack] = int(value)
    return result
