import time

import pytest
from fastapi.testclient import TestClient

from podflame.server.routers.timeline import default_step, fill
from tests.server.conftest import Ingest, batch

NS_PER_S = 10**9
# An hour boundary two hours ago: recent enough for the retention TTL.
T0 = (int(time.time()) // 3600 - 2) * 3600


@pytest.fixture
def three_batches(ingest: Ingest) -> None:
    pod = {"pod": "api-1"}
    other = {"pod": "db-1"}
    ingest(batch([["a"]], [(pod, [(0, 5)]), (other, [(0, 100)])], end_ns=(T0 + 10) * NS_PER_S))
    ingest(batch([["a"], ["b"]], [(pod, [(0, 1), (1, 2)])], end_ns=(T0 + 59) * NS_PER_S))
    ingest(batch([["b"]], [(pod, [(0, 7)])], end_ns=(T0 + 185) * NS_PER_S))


@pytest.mark.usefixtures("three_batches")
def test_timeline_sums_per_step_and_fills_zeros(api: TestClient) -> None:
    params = {"query": '{pod="api-1"}', "from": str(T0), "until": str(T0 + 240), "step": "60"}
    response = api.get("/api/v1/timeline", params=params)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "unit": "nanoseconds",
        "step": 60,
        "points": [[T0, 8], [T0 + 60, 0], [T0 + 120, 0], [T0 + 180, 7]],
    }


@pytest.mark.usefixtures("three_batches")
def test_timeline_buckets_align_to_the_step_not_the_start(api: TestClient) -> None:
    params = {"from": str(T0 + 30), "until": str(T0 + 61), "step": "60"}
    # [T0+30, T0+61) holds the batch at T0+59 (and none at T0+10).
    assert api.get("/api/v1/timeline", params=params).json()["points"] == [[T0, 3], [T0 + 60, 0]]


@pytest.mark.usefixtures("three_batches")
def test_timeline_default_step(api: TestClient) -> None:
    body = api.get("/api/v1/timeline", params={"from": str(T0), "until": str(T0 + 3600)}).json()
    assert body["step"] == 15
    assert len(body["points"]) == 240
    assert sum(value for _, value in body["points"]) == 115


def test_default_step_gives_100_to_300_points() -> None:
    for seconds in (3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400):
        points = seconds / default_step(seconds)
        assert 100 <= points <= 300, seconds
    assert default_step(60) == 1


def test_fill() -> None:
    assert fill([(120, 4)], 60, 181.5, 60) == [(60, 0), (120, 4), (180, 0)]
    assert fill([], 60, 60, 60) == []


@pytest.mark.parametrize(
    ("params", "status", "parameter"),
    [
        ({"step": "0"}, 422, None),
        ({"step": str(2**32)}, 422, None),  # past UInt32: was a 503 from ClickHouse
        ({"step": "1", "from": "now-7d"}, 400, "step"),
        ({"query": "{pod"}, 400, "query"),
        ({"until": "never"}, 400, "until"),
    ],
)
def test_timeline_bad_input_is_json(
    api: TestClient, params: dict[str, str], status: int, parameter: str | None
) -> None:
    response = api.get("/api/v1/timeline", params=params)
    assert response.status_code == status
    assert response.json()["error"]
    assert response.json().get("parameter") == parameter
