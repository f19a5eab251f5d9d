"""Server test fixtures on a real embedded chDB.

chDB opens one data path per process, so the whole session shares one
client; each test gets a database of its own and so starts empty.

Migrating a new database is most of what a server test costs (a dozen DDL
statements, each a chDB command), so databases are reused: a test's database
is emptied afterwards (TRUNCATE) and handed to a later test, whose store
migrates it again (nothing left to do but the retention TTL). Only a database
whose migrated tables are exactly what migration made is reused (tables made
later, such as profile_types, are dropped first); one whose tables a test
altered or dropped is dropped.
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


Schema = dict[str, str]  # table -> its CREATE statement, the database's name left out


class DatabasePool:
    """Migrated, empty databases for the tests' stores, one test at a time each."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.free: list[str] = []
        self.migrated: Schema | None = None  # what a fresh migration makes

    def take(self) -> str:
        return self.free.pop() if self.free else f"t_{uuid.uuid4().hex}"

    def opened(self, database: str) -> None:
        """Right after the store migrated `database`, before the test runs."""
        if self.migrated is None:
            self.migrated = self.schema(database)

    def give_back(self, database: str) -> None:
        schema = self.schema(database)
        migrated = self.migrated
        if migrated is None or any(schema.get(t) != query for t, query in migrated.items()):
            self.client.command(f"DROP DATABASE IF EXISTS {database}")
            return
        # Tables made after migration (profile_types, created on first use): dropped,
        # as a new database would not have them.
        for table in schema.keys() - migrated.keys():
            self.client.command(f"DROP TABLE {database}.`{table}`")
        for table in migrated:
            if table != "schema_version":  # written by migrations only: kept, as it was
                self.client.command(f"TRUNCATE TABLE {database}.`{table}`")
            # What a test may switch off (test_ingest_groups stops merges) is not in the
            # schema: switched back on, as a new table has it.
            for switch in ("MERGES", "TTL MERGES"):
                self.client.command(f"SYSTEM START {switch} {database}.`{table}`")
        self.free.append(database)

    def schema(self, database: str) -> Schema:
        rows = self.client.query(
            "SELECT name, create_table_query FROM system.tables WHERE database = {db:String}",
            parameters={"db": database},
        ).result_rows
        schema = {name: query.replace(database, "{db}") for name, query in rows}
        if "schema_version" in schema:  # the versions recorded, as a migration left them
            versions = self.client.query(
                f"SELECT version FROM {database}.schema_version ORDER BY version"
            ).result_rows
            schema["schema_version"] += f" -- {versions}"
        return schema


@pytest.fixture(scope="session")
def database_pool(chdb_client: Client) -> DatabasePool:
    return DatabasePool(chdb_client)


@pytest.fixture
def store(chdb_client: Client, database_pool: DatabasePool) -> Iterator[ClickHouseStore]:
    database = database_pool.take()
    opened = ClickHouseStore(chdb_client, database=database)
    database_pool.opened(database)
    yield opened
    database_pool.give_back(database)


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
