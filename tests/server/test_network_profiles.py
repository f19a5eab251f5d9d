"""The net_wait profile through every profile endpoint (type=net_wait): flame graph, top,
diff, export (folded, pprof, speedscope), timeline, labels, profile types; values in ns."""

import json
import time

import pytest
from fastapi.testclient import TestClient

from podflame.model import pprof
from tests.server.conftest import Ingest, batch, folded
from tests.server.network_batches import histogram, net_batch

MS = 10**6
WEB = {"namespace": "shop", "workload": "web", "pod": "web-1", "pid": "7"}
API = {"namespace": "shop", "workload": "api", "pod": "api-1", "pid": "8"}
STACKS = [
    ["main", "handle", "db_query", "recv"],
    ["main", "handle", "fetch_user", "connect"],
    ["main", "poll_loop", "recvfrom"],
]
# ns waited per stack: web-1 waits on its database, api-1 on a poll loop.
WEB_WAIT = [(0, 30 * MS), (1, 10 * MS)]
API_WAIT = [(2, 50 * MS), (0, 5 * MS)]
LIMIT = 10 * 2**20


@pytest.fixture
def net_wait(ingest: Ingest) -> dict[str, int]:
    """Folded net_wait stacks of both pods; a cpu batch beside them must not mix in."""
    end_ns = time.time_ns() - 60 * 10**9
    ingest(net_batch([histogram(WEB, "recvfrom", [MS] * 4)], stacks=STACKS,
                     series=[(WEB, WEB_WAIT), (API, API_WAIT)], end_ns=end_ns))  # fmt: skip
    ingest(batch([["main", "cpu_burn"]], [(WEB, [(0, 7 * MS)])], end_ns=end_ns))
    return {
        "main;handle;db_query;recv": 35 * MS,
        "main;handle;fetch_user;connect": 10 * MS,
        "main;poll_loop;recvfrom": 50 * MS,
    }


def get_json(api: TestClient, path: str, **params: str) -> dict[str, object]:
    response = api.get(path, params={"type": "net_wait", **params})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_net_wait_is_a_listed_profile_type(api: TestClient) -> None:
    types = api.get("/api/v1/profile-types").json()
    listed = {item["name"]: item["unit"] for item in types}
    assert listed["net_wait"] == "nanoseconds"


def test_export_folded(api: TestClient, net_wait: dict[str, int]) -> None:
    assert folded(api, type="net_wait") == net_wait
    assert folded(api, '{pod="web-1"}', type="net_wait") == {
        "main;handle;db_query;recv": 30 * MS,
        "main;handle;fetch_user;connect": 10 * MS,
    }
    assert folded(api) == {"main;cpu_burn": 7 * MS}


def test_flamegraph(api: TestClient, net_wait: dict[str, int]) -> None:
    graph = get_json(api, "/api/v1/flamegraph")
    assert graph["unit"] == "nanoseconds"
    assert graph["total"] == 95 * MS
    assert isinstance(graph["names"], list)
    assert "db_query" in graph["names"]
    assert "cpu_burn" not in graph["names"]


def test_top(api: TestClient, net_wait: dict[str, int]) -> None:
    top = get_json(api, "/api/v1/top")
    assert (top["unit"], top["total"]) == ("nanoseconds", 95 * MS)
    assert isinstance(top["functions"], list)
    costs = {item["name"]: (item["self"], item["total"]) for item in top["functions"]}
    assert costs["recvfrom"] == (50 * MS, 50 * MS)
    assert costs["recv"] == (35 * MS, 35 * MS)
    assert costs["handle"] == (0, 45 * MS)
    assert costs["main"] == (0, 95 * MS)


def test_diff(api: TestClient, net_wait: dict[str, int]) -> None:
    diff = get_json(api, "/api/v1/diff", left='{pod="web-1"}', right='{pod="api-1"}')
    assert (diff["unit"], diff["left_total"], diff["right_total"]) == (
        "nanoseconds", 40 * MS, 55 * MS)  # fmt: skip


def test_timeline(api: TestClient, net_wait: dict[str, int]) -> None:
    timeline = get_json(api, "/api/v1/timeline", step="60")
    assert timeline["unit"] == "nanoseconds"
    assert isinstance(timeline["points"], list)
    assert sum(value for _, value in timeline["points"]) == 95 * MS


def test_labels(api: TestClient, net_wait: dict[str, int]) -> None:
    values = get_json(api, "/api/v1/labels/pod/values")
    assert values["values"] == ["api-1", "web-1"]


def test_export_pprof(api: TestClient, net_wait: dict[str, int]) -> None:
    response = api.get("/api/v1/export", params={"type": "net_wait", "format": "pprof"})
    assert response.status_code == 200, response.text
    assert 'filename="podflame-net_wait-' in response.headers["content-disposition"]
    profile = pprof.decode(response.content, LIMIT)
    assert profile.sample_types == (pprof.ValueType("net_wait", "nanoseconds"),)
    totals = pprof.folded_totals(profile, 0)
    assert {";".join(stack): value for stack, value in totals.items()} == net_wait


def test_export_speedscope(api: TestClient, net_wait: dict[str, int]) -> None:
    response = api.get("/api/v1/export", params={"type": "net_wait", "format": "speedscope"})
    assert response.status_code == 200, response.text
    (profile,) = json.loads(response.content)["profiles"]
    assert profile["unit"] == "nanoseconds"
    assert sum(profile["weights"]) == sum(net_wait.values())
