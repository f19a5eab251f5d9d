"""Property-based requests from the app's own OpenAPI schema: no endpoint answers 5xx,
and a request answered with 4xx leaves the store as it was (no partial write).

Schemathesis generates parameters and bodies for every operation (valid and
invalid ones) and calls the real app on the real chDB store over ASGI.
test_ingest_fuzz.py adds the bodies a schema cannot describe (pprof, gzip).
"""

from typing import Any

import pytest
import schemathesis
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

from podflame.server.app import create_app
from podflame.server.clickhouse_store import ClickHouseStore
from tests.server.conftest import MAX_INGEST_BYTES, batch
from tests.server.network_batches import connection, histogram, net_batch
from tests.server.storeprint import StoreWatch

STACKS = [["main", "serve", "parse"], ["main", "serve"], ["main", "gc_[k]"]]
LABELS = {"namespace": "shop", "pod": "api-1", "workload": "api", "comm": "api", "pid": "7"}


@pytest.fixture
def app_schema(store: ClickHouseStore) -> Any:
    app = create_app(store, max_ingest_bytes=MAX_INGEST_BYTES)
    # Some data, so the queries aggregate something rather than nothing.
    body = batch(STACKS, [(LABELS, [(0, 5), (1, 3)]), ({"pod": "other"}, [(2, 1)])])
    assert TestClient(app).post("/api/v1/ingest", json=body).status_code == 200
    network = net_batch(
        [histogram(LABELS, "recvfrom", [1000, 20_000, 3_000_000], errors=1, eagain=2)],
        [connection(LABELS, "10.0.0.5", 5432, "ECONNREFUSED", [50_000], {"pod": "db-0"})],
        stacks=STACKS,
        series=[(LABELS, [(0, 7_000)])],
    )
    assert TestClient(app).post("/api/v1/ingest", json=network).status_code == 200
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def operations() -> list[str]:
    """Every operation of the schema, so each becomes its own test case."""
    schema = create_app(None).openapi()  # type: ignore[arg-type]  # the schema needs no store
    return [f"{method.upper()} {path}" for path, item in schema["paths"].items() for method in item]


# Not through schemathesis' pytest plugin (its lazy fixtures do not run on
# pytest 9): the same strategies, driven by Hypothesis directly.
@pytest.mark.parametrize("operation", operations())
def test_no_server_errors(
    app_schema: Any, operation: str, store: ClickHouseStore, chdb_client: Client
) -> None:
    method, path = operation.split(" ", 1)
    api_operation = app_schema[path][method]
    watch = StoreWatch(chdb_client, store.database)

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        # Shrinking a failure is for debugging; the failing example is reported either way.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=api_operation.as_strategy())
    def check(case: Any) -> None:
        watch.before()
        response = case.call()
        case.validate_response(response, checks=[not_a_server_error])
        if 400 <= response.status_code < 500:
            assert watch.rejected_wrote_nothing(), response.text
        else:
            watch.accepted()

    check()
