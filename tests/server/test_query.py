import time

import pytest
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient

from podflame.server.clickhouse_store import ClickHouseStore
from tests.server.conftest import Ingest, batch, folded

NS_PER_S = 10**9


@pytest.fixture
def two_pods(ingest: Ingest) -> None:
    """Two processes with column labels and extra (Map) labels."""
    stacks = [["main", "burn"], ["main", "idle"]]
    burn = {"namespace": "shop", "pod": "api-1", "comm": "burn", "pid": "10", "team": "red"}
    bur = {"namespace": "shop", "pod": "api-2", "comm": "bur", "pid": "11", "team": "blue"}
    ingest(batch(stacks, [(burn, [(0, 100)]), (bur, [(1, 7)])]))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"main;burn": 100, "main;idle": 7}),
        ("{}", {"main;burn": 100, "main;idle": 7}),
        ('{pod="api-1"}', {"main;burn": 100}),
        ('{pod!="api-1"}', {"main;idle": 7}),
        ('{pod=~"api-.*"}', {"main;burn": 100, "main;idle": 7}),
        ('{pod!~"api-1|db"}', {"main;idle": 7}),
        ('{comm=~"bur"}', {"main;idle": 7}),  # anchored: must not match "burn"
        ('{comm=~"bu"}', {}),
        ('{comm!~"bur"}', {"main;burn": 100}),
        ('{pid="11"}', {"main;idle": 7}),
        ('{pid=~"1[01]"}', {"main;burn": 100, "main;idle": 7}),
        ('{team="red"}', {"main;burn": 100}),
        ('{team!="red"}', {"main;idle": 7}),
        ('{team=~"bl.e"}', {"main;idle": 7}),
        ('{team!~"b.*"}', {"main;burn": 100}),
        ('{team=~"re"}', {}),
        ('{absent=""}', {"main;burn": 100, "main;idle": 7}),
        ('{absent!=""}', {}),
        ('{namespace="shop", team="blue", comm=~"b.*"}', {"main;idle": 7}),
        ('{namespace="shop", team="red", comm="bur"}', {}),
    ],
)
@pytest.mark.usefixtures("two_pods")
def test_selectors(api: TestClient, query: str, expected: dict[str, int]) -> None:
    assert folded(api, query) == expected


def test_top_self_and_total_with_recursion(api: TestClient, ingest: Ingest) -> None:
    stacks = [["a", "b", "a"], ["a", "b"], ["a", "c_[k]"]]
    ingest(batch(stacks, [({"pid": "1"}, [(0, 10), (1, 5), (2, 2)])]))
    response = api.get("/api/v1/top", params={"type": "cpu"})
    assert response.status_code == 200
    assert response.json() == {
        "unit": "nanoseconds",
        "total": 17,
        "functions": [
            {"name": "a", "self": 10, "total": 17},  # counted once on a;b;a
            {"name": "b", "self": 5, "total": 15},
            {"name": "c_[k]", "self": 2, "total": 2},
        ],
    }


def test_top_orders_ties_by_total_then_name_and_limits(api: TestClient, ingest: Ingest) -> None:
    # x, y and z all have self 3; z has the largest total.
    stacks = [["r", "y"], ["r", "x"], ["z"], ["z", "w"]]
    ingest(batch(stacks, [({}, [(0, 3), (1, 3), (2, 3), (3, 2)])]))
    names = [f["name"] for f in api.get("/api/v1/top").json()["functions"]]
    assert names == ["z", "x", "y", "w", "r"]
    limited = api.get("/api/v1/top", params={"limit": 2}).json()
    assert [f["name"] for f in limited["functions"]] == ["z", "x"]
    assert limited["total"] == 11


def test_top_of_nothing(api: TestClient) -> None:
    assert api.get("/api/v1/top").json() == {"unit": "nanoseconds", "total": 0, "functions": []}


def test_time_range_selects_batches_by_end_time(api: TestClient, ingest: Ingest) -> None:
    now = time.time_ns()
    ingest(batch([["old"]], [({}, [(0, 1)])], end_ns=now - 3600 * NS_PER_S))
    ingest(batch([["new"]], [({}, [(0, 2)])], end_ns=now))
    assert folded(api) == {"new": 2}
    assert folded(api, **{"from": "now-2h"}) == {"old": 1, "new": 2}
    start, end = str(now / NS_PER_S - 3700), str(now / NS_PER_S - 3500)
    assert folded(api, **{"from": start, "until": end}) == {"old": 1}


def test_stacks_shared_by_batches_are_stored_once(
    api: TestClient, ingest: Ingest, store: ClickHouseStore, chdb_client: Client
) -> None:
    ingest(batch([["a", "b"]], [({}, [(0, 1)])]))
    ingest(batch([["a", "b"], ["c"], ["a", "b"]], [({}, [(0, 1), (1, 1), (2, 1)])]))
    assert folded(api) == {"a;b": 3, "c": 1}
    rows = chdb_client.query(f"SELECT count() FROM {store.database}.stacks").result_rows
    assert rows == [(2,)]


def test_bad_selector_is_400_with_position(api: TestClient) -> None:
    for path in ("/api/v1/export", "/api/v1/top"):
        response = api.get(path, params={"query": "{pid=}"})
        assert response.status_code == 400
        assert response.json() == {
            "error": "invalid query: expected a quoted string",
            "position": 5,
            "parameter": "query",
        }


def test_regex_rejected_by_clickhouse_is_400_with_position(api: TestClient) -> None:
    response = api.get("/api/v1/export", params={"query": '{pod="x", comm=~"(?=lookahead)"}'})
    assert response.status_code == 400
    body = response.json()
    assert body["position"] == 16
    assert "comm" in body["error"]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"from": "yesterday"}, "from"),
        ({"until": "2024-01-02"}, "until"),
        ({"from": "now", "until": "now-1h"}, "from"),
    ],
)
def test_bad_time_is_400_naming_the_parameter(
    api: TestClient, params: dict[str, str], parameter: str
) -> None:
    response = api.get("/api/v1/top", params=params)
    assert response.status_code == 400
    assert response.json()["parameter"] == parameter
    assert f"'{parameter}'" in response.json()["error"]


def test_unknown_type_and_format_are_400(api: TestClient) -> None:
    response = api.get("/api/v1/export", params={"type": "heap"})
    assert response.status_code == 400
    assert "heap" in response.json()["error"]
    response = api.get("/api/v1/export", params={"format": "svg"})
    assert response.status_code == 400
    assert "svg" in response.json()["error"]


def test_bad_limit_is_422_json(api: TestClient) -> None:
    response = api.get("/api/v1/top", params={"limit": "0"})
    assert response.status_code == 422
    assert "query.limit" in response.json()["error"]


def test_profile_types(api: TestClient) -> None:
    response = api.get("/api/v1/profile-types")
    listed = response.json()
    assert [item["name"] for item in listed] == ["cpu", "net_wait"]
    assert listed[0] == {
        "name": "cpu",
        "unit": "nanoseconds",
        "description": "On-CPU time sampled with the cpu-clock perf event.",
    }
    assert listed[1]["unit"] == "nanoseconds"
