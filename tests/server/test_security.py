"""Bearer tokens, namespace-limited reads and request limits, on the real app and chDB."""

import gzip
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import clickhouse_connect
import httpx
import pytest
from fastapi.testclient import TestClient

from podflame.model.profile import TRUNCATED_FRAME
from podflame.server.app import create_app
from podflame.server.auth import Authenticator, TokenEntry, TokensFileError, load_tokens
from podflame.server.clickhouse_store import ClickHouseStore
from podflame.server.deps import QueryLimits
from podflame.server.limits import IngestLimits
from podflame.server.main import build_server
from podflame.server.settings import ServerSettings
from tests.server.conftest import MAX_INGEST_BYTES, batch, folded

ADMIN = "admin-token-0123456789"
AGENT = "agent-token-0123456789"
SHOP = "shop-reader-0123456789"
TWO = "two-readers-0123456789"
TOKENS = [
    TokenEntry(token=ADMIN, scopes=["ingest", "query"], name="admin"),
    TokenEntry(token=AGENT, scopes=["ingest"]),
    TokenEntry(token=SHOP, scopes=["query"], namespaces=["shop"]),
    TokenEntry(token=TWO, scopes=["query"], namespaces=["shop", "bank.v2"]),
]
STACKS = [["main", "shop_handler"], ["main", "bank_handler"], ["main", "bank2_handler"]]
SERIES = [
    ({"namespace": "shop", "pod": "shop-1", "workload": "shop"}, [(0, 10)]),
    ({"namespace": "bank", "pod": "bank-1", "workload": "bank"}, [(1, 20)]),
    # Would match an unescaped "bank.v2" regex read as "bank" + any char + "v2".
    ({"namespace": "bankxv2", "pod": "x-1", "workload": "x"}, [(1, 40)]),
    ({"namespace": "bank.v2", "pod": "bank2-1", "workload": "bank2"}, [(2, 30)]),
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(store: ClickHouseStore) -> TestClient:
    app = create_app(store, max_ingest_bytes=MAX_INGEST_BYTES, tokens=TOKENS)
    client = TestClient(app)
    response = client.post("/api/v1/ingest", json=batch(STACKS, SERIES), headers=bearer(AGENT))
    assert response.status_code == 200, response.text
    return client


def test_without_a_token_the_api_is_401_with_a_challenge(secured: TestClient) -> None:
    for method, path in [("GET", "/api/v1/top"), ("GET", "/api/v1/flamegraph"),
                         ("POST", "/api/v1/ingest"), ("POST", "/ingest"),
                         ("POST", "/push.v1.PusherService/Push")]:  # fmt: skip
        response = secured.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "bearer token" in response.json()["error"]


BAD_HEADERS = [
    "Bearer wrong-token-0123456789",
    f"Basic {ADMIN}",
    ADMIN,
    "Bearer ",
    f"bearer{ADMIN}",
]


@pytest.mark.parametrize("header", BAD_HEADERS)
def test_unknown_or_malformed_credentials_are_401(secured: TestClient, header: str) -> None:
    response = secured.get("/api/v1/top", headers={"Authorization": header})
    assert response.status_code == 401


def test_open_paths_need_no_token(secured: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert secured.get(path).status_code == 200, path


def test_wrong_scope_is_403(secured: TestClient) -> None:
    response = secured.get("/api/v1/top", headers=bearer(AGENT))
    assert response.status_code == 403
    assert "'query'" in response.json()["error"]
    response = secured.post("/api/v1/ingest", json=batch(STACKS, SERIES), headers=bearer(SHOP))
    assert response.status_code == 403
    assert "'ingest'" in response.json()["error"]


def test_bearer_scheme_is_case_insensitive(secured: TestClient) -> None:
    assert secured.get("/api/v1/top", headers={"Authorization": f"bearer {ADMIN}"}).is_success


def test_namespace_token_sees_only_its_namespace(secured: TestClient) -> None:
    def get(path: str, token: str, **params: str) -> httpx.Response:
        response = secured.get(path, params=params, headers=bearer(token))
        assert response.status_code == 200, response.text
        return response

    assert get("/api/v1/export", SHOP).text == "main;shop_handler 10\n"
    assert get("/api/v1/export", SHOP, query='{namespace="bank"}').text == ""
    assert get("/api/v1/export", TWO).text == "main;bank2_handler 30\nmain;shop_handler 10\n"
    assert get("/api/v1/top", SHOP).json()["total"] == 10
    assert get("/api/v1/top", ADMIN).json()["total"] == 100
    values = get("/api/v1/labels/namespace/values", SHOP).json()["values"]
    assert values == ["shop"]
    assert get("/api/v1/labels/pod/values", TWO).json()["values"] == ["bank2-1", "shop-1"]
    assert get("/api/v1/labels/pod/values", ADMIN).json()["values"] == [
        "bank-1", "bank2-1", "shop-1", "x-1"]  # fmt: skip
    graph = get("/api/v1/flamegraph", SHOP).json()
    assert graph["total"] == 10
    assert "bank_handler" not in graph["names"]
    diff = get("/api/v1/diff", SHOP, left='{namespace="shop"}', right='{namespace="bank"}').json()
    assert (diff["left_total"], diff["right_total"]) == (10, 0)
    points = get("/api/v1/timeline", SHOP).json()["points"]
    assert sum(value for _, value in points) == 10


def test_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps([{"token": SHOP, "scopes": ["query"], "namespaces": ["shop"]}]))
    (entry,) = load_tokens(path)
    principal = Authenticator([entry]).authenticate(SHOP)
    assert principal is not None
    assert principal.namespaces == ("shop",)
    assert Authenticator([entry]).authenticate(SHOP + "x") is None
    twice = {"token": SHOP, "scopes": ["query"]}
    for bad in (
        [{"token": "short", "scopes": ["query"]}],
        [{"token": SHOP, "scopes": ["admin"]}],
        [{"token": SHOP, "scopes": ["query"], "namespaces": []}],
        [{"token": SHOP, "scopes": []}],
        [twice, twice],
        "not a list",
    ):
        path.write_text(json.dumps(bad))
        with pytest.raises(TokensFileError):
            load_tokens(path)


@pytest.mark.parametrize("namespace", ["", " ", " shop", "shop\n", "sh op", "\x00", "a" * 254])
def test_a_tokens_file_with_an_invalid_namespace_is_refused(tmp_path: Path, namespace: str) -> None:
    """Issue 16: `namespaces: [""]` was accepted, a token that can read nothing, silently."""
    path = tmp_path / "tokens.json"
    good = {"token": "x" * 16, "scopes": ["ingest"]}
    bad = {"token": SHOP, "scopes": ["query"], "namespaces": ["shop", namespace], "name": "ops"}
    path.write_text(json.dumps([good, bad]))
    with pytest.raises(TokensFileError) as refused:
        load_tokens(path)
    message = str(refused.value)
    assert "entry 2 ('ops'): namespaces:" in message, message
    assert f"{namespace!r} is not a namespace name" in message, message
    bad["namespaces"] = ["shop", "kube-system", "bank.v2", "a" * 253]
    path.write_text(json.dumps([good, bad]))
    assert load_tokens(path)[1].namespaces == bad["namespaces"]


def test_settings_parse_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODFLAME_RETENTION", "2w")
    monkeypatch.setenv("PODFLAME_MAX_RANGE", "6h")
    settings = ServerSettings()
    assert settings.retention_days == 14
    assert settings.max_range_delta == timedelta(hours=6)
    assert ServerSettings(retention="30", max_range="90").retention_days == 30
    assert ServerSettings(max_range="90").max_range_delta == timedelta(seconds=90)
    for bad in ({"retention": "36h"}, {"retention": "0d"}, {"max_range": "soon"}):
        with pytest.raises(ValueError):
            ServerSettings(**bad)


def test_body_over_the_limit_is_413(api: TestClient) -> None:
    declared = api.post("/api/v1/ingest", content=b"x" * (MAX_INGEST_BYTES + 1))
    assert declared.status_code == 413
    assert "PODFLAME_MAX_INGEST_BYTES" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:
        # No Content-Length: the limit holds while streaming.
        for _ in range(3):
            yield b"x" * (MAX_INGEST_BYTES // 2)

    streamed = api.post("/ingest", params={"name": "app"}, content=chunks())
    assert streamed.status_code == 413
    bomb = gzip.compress(b" " * (MAX_INGEST_BYTES + 1))
    headers = {"Content-Encoding": "gzip"}
    assert api.post("/api/v1/ingest", content=bomb, headers=headers).status_code == 413


def test_agent_batches_are_bounded_in_stacks_and_frames(store: ClickHouseStore) -> None:
    limits = IngestLimits(max_stack_frames=4, max_stacks_per_push=3, max_frames_per_push=9)
    api = TestClient(create_app(store, max_ingest_bytes=MAX_INGEST_BYTES, ingest_limits=limits))
    deep = [f"f{depth}" for depth in range(1000)]
    labels = {"namespace": "shop"}
    body = batch([deep, ["main", "work"]], [(labels, [(0, 5), (1, 2)])])
    assert api.post("/api/v1/ingest", json=body).status_code == 200
    assert folded(api) == {f"{TRUNCATED_FRAME};f997;f998;f999": 5, "main;work": 2}
    # Frames are counted after the cut: 4 + 4 + 2 = 10.
    over = batch([deep, deep[1:], ["a", "b"]], [(labels, [(0, 1)])])
    too_many = batch([["a"]] * 4, [(labels, [(0, 1)])])
    for document, setting in ((over, "max_frames_per_push"), (too_many, "max_stacks_per_push")):
        response = api.post("/api/v1/ingest", json=document)
        assert response.status_code == 413, response.text
        assert response.json()["limit"] == setting
        assert f"PODFLAME_{setting.upper()}" in response.json()["error"]
    assert folded(api) == {f"{TRUNCATED_FRAME};f997;f998;f999": 5, "main;work": 2}


def test_ingest_limits_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODFLAME_MAX_STACK_FRAMES", "300")
    monkeypatch.setenv("PODFLAME_MAX_PROFILE_TYPES", "7")
    limits = IngestLimits.from_settings(ServerSettings())
    assert (limits.max_stack_frames, limits.max_profile_types) == (300, 7)
    assert limits.max_pprof_lines == IngestLimits().max_pprof_lines
    monkeypatch.setenv("PODFLAME_MAX_STACK_FRAMES", "1")  # a cut keeps one frame and its mark
    with pytest.raises(ValueError, match="max_stack_frames"):
        ServerSettings()


def test_time_range_over_the_limit_is_400(store: ClickHouseStore) -> None:
    limits = QueryLimits(max_range=timedelta(hours=6), max_nodes=100)
    api = TestClient(create_app(store, limits=limits))
    assert api.get("/api/v1/top", params={"from": "now-6h"}).status_code == 200
    for path, params, parameter in [
        ("/api/v1/top", {"from": "now-7h"}, "from"),
        ("/api/v1/flamegraph", {"from": "now-1d"}, "from"),
        ("/api/v1/diff", {"left_from": "now-1h", "right_from": "now-7h"}, "right_from"),
    ]:
        response = api.get(path, params=params)
        assert response.status_code == 400, path
        assert response.json()["parameter"] == parameter
        assert "PODFLAME_MAX_RANGE" in response.json()["error"]
    too_many = api.get("/api/v1/flamegraph", params={"max_nodes": "101"})
    assert too_many.status_code == 400
    assert too_many.json()["parameter"] == "max_nodes"


def test_query_timeout_is_504(chdb_path: Path, store: ClickHouseStore) -> None:
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}")
    # The same database as `store`, on a client whose queries may run 0.1 ms.
    slow = ClickHouseStore(client, database=store.database)
    slow.limit_query_time(0.0001)
    try:
        api = TestClient(create_app(slow))
        response = api.get("/api/v1/top")
        assert response.status_code == 504, response.text
        assert "timed out" in response.json()["error"]
        metrics = api.get("/metrics").text
        assert 'podflame_storage_errors_total{kind="timeout"} 1' in metrics
    finally:
        client.close()


def test_a_bad_tokens_file_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('[{"token": "short"}]')
    settings = ServerSettings(storage=f"chdb://{tmp_path / 'never-opened'}", tokens_file=path)
    with pytest.raises(SystemExit, match="invalid tokens file"):
        build_server(settings)
    assert not (tmp_path / "never-opened").exists()
