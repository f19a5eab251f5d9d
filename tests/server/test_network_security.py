"""Network endpoints behind bearer tokens: a namespace-limited token sees only its namespaces'
latency and connections, on the real app and chDB."""

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from podflame.server.app import create_app
from podflame.server.auth import TokenEntry
from podflame.server.clickhouse_store import ClickHouseStore
from tests.server.conftest import MAX_INGEST_BYTES
from tests.server.network_batches import connection, histogram, net_batch

ADMIN = "net-admin-token-0123"
AGENT = "net-agent-token-0123"
SHOP = "net-shop-reader-0123"
TWO = "net-two-readers-0123"
TOKENS = [
    TokenEntry(token=ADMIN, scopes=["ingest", "query"]),
    TokenEntry(token=AGENT, scopes=["ingest"]),
    TokenEntry(token=SHOP, scopes=["query"], namespaces=["shop"]),
    TokenEntry(token=TWO, scopes=["query"], namespaces=["shop", "bank.v2"]),
]
# bankxv2 would match an unescaped "bank.v2" regex.
NAMESPACES = {"shop": 10, "bank": 20, "bankxv2": 40, "bank.v2": 30}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(store: ClickHouseStore) -> TestClient:
    client = TestClient(create_app(store, max_ingest_bytes=MAX_INGEST_BYTES, tokens=TOKENS))
    latency, connections = [], []
    for namespace, calls in NAMESPACES.items():
        labels = {"namespace": namespace, "pod": f"{namespace}-1", "workload": namespace}
        latency.append(histogram(labels, "recvfrom", [1000] * calls))
        # Every namespace's pods connect to the bank database.
        bank_db = {"namespace": "bank", "pod": "db-0"}
        connections.append(connection(labels, "10.0.0.5", 5432, "ok", [1000] * calls, bank_db))
    body = net_batch(latency, connections, end_ns=time.time_ns() - 60 * 10**9)
    response = client.post("/api/v1/ingest", json=body, headers=bearer(AGENT))
    assert response.status_code == 200, response.text
    return client


def get(client: TestClient, path: str, token: str, **params: str) -> Any:
    response = client.get(path, params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


def namespaces_seen(client: TestClient, token: str, query: str = "") -> dict[str, int]:
    body = get(client, "/api/v1/network/latency", token, group_by="namespace", query=query)
    return {group["labels"]["namespace"]: group["count"] for group in body["groups"]}


def peer_sources(client: TestClient, token: str, query: str = "") -> dict[str, int]:
    body = get(client, "/api/v1/network/peers", token, query=query)
    return {peer["source"]["namespace"]: peer["count"] for peer in body["peers"]}


def test_a_namespace_token_sees_only_its_namespaces(secured: TestClient) -> None:
    assert namespaces_seen(secured, SHOP) == {"shop": 10}
    assert namespaces_seen(secured, SHOP, '{namespace="bank"}') == {}
    assert namespaces_seen(secured, SHOP, '{namespace=~"bank.*"}') == {}
    assert namespaces_seen(secured, TWO) == {"bank.v2": 30, "shop": 10}
    assert namespaces_seen(secured, ADMIN) == NAMESPACES
    body = get(secured, "/api/v1/network/latency", SHOP, group_by="", step="60")
    assert [group["count"] for group in body["groups"]] == [10]
    assert sum(point["count"] for point in body["groups"][0]["points"]) == 10


def test_a_namespace_token_sees_only_its_namespaces_connections(secured: TestClient) -> None:
    assert peer_sources(secured, SHOP) == {"shop": 10}
    # Selecting the destination's namespace selects sources in it, not connections to it.
    assert peer_sources(secured, SHOP, '{namespace="bank"}') == {}
    assert peer_sources(secured, TWO) == {"bank.v2": 30, "shop": 10}
    assert peer_sources(secured, ADMIN) == NAMESPACES


@pytest.mark.parametrize("path", ["/api/v1/network/latency", "/api/v1/network/peers"])
def test_network_endpoints_need_a_query_token(secured: TestClient, path: str) -> None:
    assert secured.get(path).status_code == 401
    assert secured.get(path, headers=bearer(AGENT)).status_code == 403
    assert secured.get(path, headers=bearer(SHOP)).status_code == 200
