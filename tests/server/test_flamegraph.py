import time

import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import Ingest, batch

NS_PER_S = 10**9
STACKS = [["main", "a", "b"], ["main", "a"], ["main", "c_[k]"]]


@pytest.fixture
def two_versions(ingest: Ingest) -> None:
    v1 = {"namespace": "shop", "workload": "api", "pod": "api-1", "version": "v1", "pid": "7"}
    v2 = {"namespace": "shop", "workload": "api", "pod": "api-2", "version": "v2", "pid": "8"}
    ingest(batch(STACKS, [(v1, [(0, 3), (1, 2), (2, 5)]), (v2, [(0, 1), (2, 1)])]))


@pytest.mark.usefixtures("two_versions")
def test_flamegraph_golden(api: TestClient) -> None:
    response = api.get("/api/v1/flamegraph", params={"query": '{version="v1"}'})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "unit": "nanoseconds",
        "total": 10,
        "truncated": False,
        "names": ["total", "main", "a", "b", "c_[k]"],
        "nodes": [
            [-1, 0, 0, 10],
            [0, 1, 0, 10],
            [1, 2, 2, 5],
            [2, 3, 3, 3],
            [1, 4, 5, 5],
        ],
    }


@pytest.mark.usefixtures("two_versions")
def test_flamegraph_truncates_into_other(api: TestClient) -> None:
    body = api.get("/api/v1/flamegraph", params={"max_nodes": 3}).json()
    assert body["truncated"] is True
    assert body["names"] == ["total", "main", "other"]
    assert body["nodes"] == [[-1, 0, 0, 12], [0, 1, 0, 12], [1, 2, 12, 12]]


def test_flamegraph_of_nothing(api: TestClient) -> None:
    body = api.get("/api/v1/flamegraph").json()
    assert body == {
        "unit": "nanoseconds",
        "total": 0,
        "truncated": False,
        "names": ["total"],
        "nodes": [[-1, 0, 0, 0]],
    }


@pytest.mark.parametrize(
    ("params", "status", "parameter"),
    [
        ({"query": "{pod=}"}, 400, "query"),
        ({"query": '{comm=~"(?=x)"}'}, 400, "query"),
        ({"from": "soon"}, 400, "from"),
        ({"type": "heap"}, 400, None),
        ({"max_nodes": "0"}, 422, None),
        ({"max_nodes": "many"}, 422, None),
    ],
)
def test_flamegraph_bad_input_is_json(
    api: TestClient, params: dict[str, str], status: int, parameter: str | None
) -> None:
    response = api.get("/api/v1/flamegraph", params=params)
    assert response.status_code == status
    body = response.json()
    assert body["error"]
    assert body.get("parameter") == parameter
    if status == 422:
        assert "max_nodes" in body["error"]


@pytest.mark.usefixtures("two_versions")
def test_diff_of_two_versions_golden(api: TestClient) -> None:
    params = {"left": '{version="v1"}', "right": '{version="v2"}'}
    response = api.get("/api/v1/diff", params=params)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "unit": "nanoseconds",
        "left_total": 10,
        "right_total": 2,
        "truncated": False,
        "names": ["total", "main", "a", "b", "c_[k]"],
        "nodes": [
            [-1, 0, 0, 10, 0, 2],
            [0, 1, 0, 10, 0, 2],
            [1, 2, 2, 5, 0, 1],
            [2, 3, 3, 3, 1, 1],
            [1, 4, 5, 5, 1, 1],
        ],
    }


@pytest.mark.usefixtures("two_versions")
def test_diff_right_defaults_to_left(api: TestClient) -> None:
    body = api.get("/api/v1/diff", params={"left": '{pod="api-2"}'}).json()
    assert body["left_total"] == body["right_total"] == 2
    assert all(row[2:4] == row[4:6] for row in body["nodes"])


def test_diff_before_and_after_with_one_selector(api: TestClient, ingest: Ingest) -> None:
    now = time.time_ns()
    pod = {"pod": "api-1"}
    ingest(batch([["old"]], [(pod, [(0, 4)])], end_ns=now - 2 * 3600 * NS_PER_S))
    ingest(batch([["new"]], [(pod, [(0, 6)])], end_ns=now))
    params = {"left": '{pod="api-1"}', "left_from": "now-3h", "left_until": "now-1h"}
    right = {"right_from": "now-1h", "right_until": "now"}
    body = api.get("/api/v1/diff", params={**params, **right}).json()
    assert body["names"] == ["total", "new", "old"]
    assert body["nodes"] == [[-1, 0, 0, 4, 0, 6], [0, 1, 0, 0, 6, 6], [0, 2, 4, 4, 0, 0]]


@pytest.mark.usefixtures("two_versions")
def test_diff_truncation_by_share(api: TestClient) -> None:
    params = {"left": '{version="v1"}', "right": '{version="v2"}', "max_nodes": "4"}
    body = api.get("/api/v1/diff", params=params).json()
    # Shares left/right: a 50%/50%, c_[k] 50%/50%: a needs two rows, c_[k] one.
    assert [body["names"][row[1]] for row in body["nodes"]] == ["total", "main", "c_[k]", "other"]
    assert body["nodes"][3] == [1, 3, 5, 5, 1, 1]


@pytest.mark.parametrize(
    ("params", "parameter", "text"),
    [
        ({"left": "{pod="}, "left", "position 5"),
        ({"right": '{pod="x"'}, "right", "position 8"),
        ({"right": '{comm=~"(?=x)"}'}, "right", "comm"),
        ({"left_from": "yesterday"}, "left_from", "yesterday"),
        ({"right_until": "later"}, "right_until", "later"),
        ({"left_from": "now", "left_until": "now-1h"}, "left_from", "left_until"),
    ],
)
def test_diff_errors_name_the_side(
    api: TestClient, params: dict[str, str], parameter: str, text: str
) -> None:
    response = api.get("/api/v1/diff", params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["parameter"] == parameter
    assert text in body["error"]
