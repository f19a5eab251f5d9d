import uuid
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from fastapi.testclient import TestClient

from podflame.server.app import create_app, ui_directory
from podflame.server.clickhouse_store import ClickHouseStore
from tests.server.conftest import batch


@pytest.fixture
def closed_store_api(chdb_path: Path) -> Iterator[TestClient]:
    """An app whose store has gone away, as when ClickHouse is down."""
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}")
    database = f"t_{uuid.uuid4().hex}"
    store = ClickHouseStore(client, database=database)
    store.close()
    yield TestClient(create_app(store))
    with clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}") as cleanup:
        cleanup.command(f"DROP DATABASE IF EXISTS {database}")


def test_probes(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ready"}


def test_storage_down_is_503_with_retry_after(closed_store_api: TestClient) -> None:
    assert closed_store_api.get("/healthz").status_code == 200
    responses = [
        closed_store_api.get("/readyz"),
        closed_store_api.get("/api/v1/top"),
        closed_store_api.post("/api/v1/ingest", json=batch([["a"]], [({}, [(0, 1)])])),
    ]
    for response in responses:
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert "storage" in response.json()["error"]


def test_openapi_documents_the_ingest_body(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()
    body = schema["paths"]["/api/v1/ingest"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Batch"}
    components = schema["components"]["schemas"]
    assert {"batch_id", "stacks", "series", "period"} <= components["Batch"]["properties"].keys()
    assert components["Batch"]["properties"]["series"]["items"] == {
        "$ref": "#/components/schemas/Series"
    }
    assert {"Series", "StackValue", "IngestResponse", "TopResponse"} <= components.keys()
    parameters = schema["paths"]["/api/v1/top"]["get"]["parameters"]
    assert {"query", "from", "until", "type", "limit"} <= {p["name"] for p in parameters}


def test_docs_page(api: TestClient) -> None:
    response = api.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()


def test_unknown_path_is_404_json(api: TestClient) -> None:
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert "error" in response.json()


def test_wrong_method_is_json(api: TestClient) -> None:
    # The UI mount at / answers paths the API routes do not take: 404, not 405.
    response = api.get("/api/v1/ingest")
    assert response.status_code == 404
    assert "error" in response.json()


def test_ui_is_served_at_the_root(api: TestClient) -> None:
    if not (ui_directory() / "index.html").exists():
        pytest.skip("ui/index.html is not written yet")
    response = api.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
