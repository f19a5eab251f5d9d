import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import Ingest, batch


@pytest.fixture
def labelled(ingest: Ingest) -> None:
    api1 = {"namespace": "shop", "pod": "api-1", "comm": "api", "pid": "10", "team": "red"}
    api2 = {"namespace": "shop", "pod": "api-2", "comm": "api", "pid": "9", "zone": "b"}
    host = {"node": "n1", "comm": "sshd", "team": ""}
    ingest(batch([["a"]], [(api1, [(0, 1)]), (api2, [(0, 1)]), (host, [(0, 1)])]))


@pytest.mark.usefixtures("labelled")
@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("", ["comm", "namespace", "node", "pid", "pod", "team", "zone"]),
        ('{pod="api-1"}', ["comm", "namespace", "pid", "pod", "team"]),
        # An empty value is no value: the host process has no team.
        ('{comm="sshd"}', ["comm", "node"]),
        ('{comm="none"}', []),
    ],
)
def test_label_names(api: TestClient, query: str, names: list[str]) -> None:
    response = api.get("/api/v1/labels", params={"query": query})
    assert response.status_code == 200, response.text
    assert response.json() == {"names": names}


@pytest.mark.usefixtures("labelled")
@pytest.mark.parametrize(
    ("name", "query", "values"),
    [
        ("pod", "", ["api-1", "api-2"]),
        ("comm", "", ["api", "sshd"]),
        ("comm", '{namespace="shop"}', ["api"]),
        ("pid", "", ["9", "10"]),  # numerically
        ("team", "", ["red"]),
        ("zone", '{pod=~"api-.*"}', ["b"]),
        ("absent", "", []),
    ],
)
def test_label_values(api: TestClient, name: str, query: str, values: list[str]) -> None:
    response = api.get(f"/api/v1/labels/{name}/values", params={"query": query})
    assert response.status_code == 200, response.text
    assert response.json() == {"name": name, "values": values, "truncated": False}


@pytest.mark.usefixtures("labelled")
def test_label_values_limit(api: TestClient) -> None:
    body = api.get("/api/v1/labels/pod/values", params={"limit": 1}).json()
    assert body == {"name": "pod", "values": ["api-1"], "truncated": True}


@pytest.mark.parametrize(
    ("path", "params", "status", "parameter"),
    [
        ("/api/v1/labels/1pod/values", {}, 400, "name"),
        ("/api/v1/labels/po-d/values", {}, 400, "name"),
        ("/api/v1/labels/pod/values", {"limit": "0"}, 422, None),
        ("/api/v1/labels/pod/values", {"query": "{"}, 400, "query"),
        ("/api/v1/labels", {"from": "later"}, 400, "from"),
        ("/api/v1/labels", {"query": '{pod=~"("}'}, 400, "query"),
    ],
)
def test_label_errors_are_json(
    api: TestClient, path: str, params: dict[str, str], status: int, parameter: str | None
) -> None:
    response = api.get(path, params=params)
    assert response.status_code == status
    assert response.json()["error"]
    assert response.json().get("parameter") == parameter
