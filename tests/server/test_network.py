"""Network latency and peers: net_wait batches in through HTTP, summed in real chDB, out as
the contract's JSON (GET /api/v1/network/latency and /api/v1/network/peers)."""

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient

from podflame.model import Batch
from podflame.model.network import bucket_bounds, bucket_of
from podflame.server import network_queries, schema
from podflame.server.clickhouse_store import ClickHouseStore
from podflame.server.schema import MIGRATIONS
from podflame.server.selector import parse_selector
from podflame.server.store import LabelSelection, LatencyQuery
from podflame.server.timerange import TimeRange
from tests.server.conftest import Ingest
from tests.server.network_batches import connection, histogram, net_batch, statement_of

MS = 10**6
US = 10**3
# A minute boundary 20 minutes ago: batches land at known offsets from it.
BASE_S = (int(time.time()) // 60 - 20) * 60
WINDOW = {"from": str(BASE_S - 60), "until": str(BASE_S + 600)}
WEB = {"namespace": "shop", "workload": "web", "pod": "web-1", "container": "app",
       "node": "n1", "comm": "web", "pid": "7", "team": "checkout"}  # fmt: skip
WEB2 = {**WEB, "pod": "web-2", "pid": "8"}
DB = {"namespace": "bank", "workload": "db", "pod": "db-0", "node": "n2", "comm": "pg",
      "pid": "9"}  # fmt: skip
HOST = {"node": "n1", "comm": "curl", "pid": "100"}
SHOP_CONNECT, CONNECT_SHOP = ("shop", "connect"), ("connect", "shop")


def at(seconds: int) -> int:
    """Unix ns, `seconds` after BASE_S."""
    return (BASE_S + seconds) * 10**9


def midpoint_us(nanoseconds: int) -> float:
    low, high = bucket_bounds(bucket_of(nanoseconds))
    return (low + high - 1) / 2 / 1000


def latency(api: TestClient, **params: str) -> dict[str, Any]:
    response = api.get("/api/v1/network/latency", params={**WINDOW, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def peers(api: TestClient, **params: str) -> list[dict[str, Any]]:
    response = api.get("/api/v1/network/peers", params={**WINDOW, **params})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["peers"]
    return found


def groups_by_labels(body: dict[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    return {tuple(group["labels"].values()): group for group in body["groups"]}


@pytest.fixture
def web_traffic(ingest: Ingest) -> None:
    """web-1: 100 recvfrom (50 at 1 ms, 40 at 2 ms, 10 at 20 ms) in two batches, 3 errors,
    40 EAGAIN; 5 connects of 100 us; web-2: 30 recvfrom of 300 us; db-0: 10 sendto of 50 us."""
    ingest(net_batch([histogram(WEB, "recvfrom", [1 * MS] * 50 + [20 * MS] * 10, errors=1,
                                eagain=15),
                      histogram(WEB, "connect", [100 * US] * 5)], end_ns=at(5)))  # fmt: skip
    ingest(net_batch([histogram(WEB, "recvfrom", [2 * MS] * 40, errors=2, eagain=25),
                      histogram(WEB2, "recvfrom", [300 * US] * 30),
                      histogram(DB, "sendto", [50 * US] * 10)], end_ns=at(125)))  # fmt: skip


def test_counts_errors_eagain_and_percentiles_per_pod_and_syscall(
    api: TestClient, web_traffic: None
) -> None:
    body = latency(api)
    assert body["group_by"] == ["pod", "syscall"]
    assert [group["count"] for group in body["groups"]] == [100, 30, 10, 5]
    recv = groups_by_labels(body)["web-1", "recvfrom"]
    assert recv["labels"] == {"pod": "web-1", "syscall": "recvfrom"}
    assert (recv["count"], recv["errors"], recv["eagain"]) == (100, 3, 40)
    # The 50th call is one of the 1 ms ones, the 90th a 2 ms one, the 99th a 20 ms one.
    assert recv["p50_us"] == midpoint_us(1 * MS)
    assert recv["p90_us"] == midpoint_us(2 * MS)
    # The 20 ms bucket's midpoint is above the slowest call: the exact max bounds it.
    assert recv["p99_us"] == min(midpoint_us(20 * MS), 20_000.0)
    assert recv["max_us"] == 20_000.0
    for value, exact in ((recv["p50_us"], 1000), (recv["p90_us"], 2000), (recv["p99_us"], 20000)):
        assert abs(value - exact) / exact < 1 / 16
    assert "points" not in recv
    connect = groups_by_labels(body)["web-1", "connect"]
    assert (connect["count"], connect["p50_us"], connect["max_us"]) == (5, 100.0, 100.0)


def test_only_eagain_calls_have_no_percentiles(api: TestClient, ingest: Ingest) -> None:
    ingest(net_batch([histogram(WEB, "recvfrom", [], eagain=12)], end_ns=at(5)))
    (group,) = latency(api)["groups"]
    assert (group["count"], group["eagain"]) == (0, 12)
    assert group["p50_us"] is group["p90_us"] is group["p99_us"] is group["max_us"] is None


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        ("pod", {("web-1",): 105, ("web-2",): 30, ("db-0",): 10}),
        ("syscall", {("recvfrom",): 130, ("sendto",): 10, ("connect",): 5}),
        ("namespace,syscall", {("shop", "recvfrom"): 130, ("bank", "sendto"): 10, SHOP_CONNECT: 5}),
        ("syscall,namespace", {("recvfrom", "shop"): 130, ("sendto", "bank"): 10, CONNECT_SHOP: 5}),
        ("team", {("checkout",): 135, ("",): 10}),  # a label from the Map; absent reads ""
        ("pid", {("7",): 105, ("8",): 30, ("9",): 10}),
        ("", {(): 145}),
    ],
)
def test_group_by_any_labels_and_syscall(
    api: TestClient, web_traffic: None, group_by: str, expected: dict[tuple[str, ...], int]
) -> None:
    body = latency(api, group_by=group_by)
    assert body["group_by"] == [name for name in group_by.split(",") if name]
    found = {key: group["count"] for key, group in groups_by_labels(body).items()}
    assert found == expected
    counts = [group["count"] for group in body["groups"]]
    assert counts == sorted(counts, reverse=True)


def test_group_by_merges_histograms(api: TestClient, web_traffic: None) -> None:
    (shop,) = [g for g in latency(api, group_by="namespace")["groups"] if g["labels"] == {
        "namespace": "shop"}]  # fmt: skip
    # 135 calls: 30 of 300 us and 5 of 100 us below the 50 of 1 ms, so the median is 1 ms.
    assert shop["count"] == 135
    assert shop["p50_us"] == midpoint_us(1 * MS)
    assert shop["p90_us"] == midpoint_us(2 * MS)
    assert (shop["errors"], shop["eagain"], shop["max_us"]) == (3, 40, 20_000.0)


def test_selectors_pick_processes_and_syscalls(api: TestClient, web_traffic: None) -> None:
    body = latency(api, query='{syscall="connect"}')
    assert [(g["labels"], g["count"]) for g in body["groups"]] == [
        ({"pod": "web-1", "syscall": "connect"}, 5)]  # fmt: skip
    body = latency(api, query='{pod=~"web-.*", syscall!="connect"}', group_by="pod")
    assert [(g["labels"]["pod"], g["count"]) for g in body["groups"]] == [
        ("web-1", 100), ("web-2", 30)]  # fmt: skip
    assert latency(api, query='{namespace="none"}')["groups"] == []


def test_time_range_is_half_open(api: TestClient, web_traffic: None) -> None:
    first = latency(api, group_by="", **{"from": str(BASE_S), "until": str(BASE_S + 125)})
    assert first["groups"][0]["count"] == 65  # the batch at +125 s is left out
    second = latency(api, group_by="", **{"from": str(BASE_S + 125), "until": str(BASE_S + 126)})
    assert second["groups"][0]["count"] == 80


def test_limit_keeps_the_groups_with_most_calls(api: TestClient, web_traffic: None) -> None:
    body = latency(api, limit="2")
    assert [tuple(g["labels"].values()) for g in body["groups"]] == [
        ("web-1", "recvfrom"), ("web-2", "recvfrom")]  # fmt: skip


def test_step_gives_points_per_step_for_every_group(api: TestClient, web_traffic: None) -> None:
    window = {"from": str(BASE_S), "until": str(BASE_S + 180)}
    body = latency(api, group_by="pod", step="60", **window)
    web1 = groups_by_labels(body)["web-1",]
    starts = [(BASE_S + offset) * 1000 for offset in (0, 60, 120)]
    assert [point["timestamp"] for point in web1["points"]] == starts
    # +5 s: 50 x 1 ms, 10 x 20 ms and 5 x 100 us; +125 s: 40 x 2 ms.
    assert [point["count"] for point in web1["points"]] == [65, 0, 40]
    first, empty, last = web1["points"]
    assert first["p50_us"] == midpoint_us(1 * MS)
    assert empty == {"timestamp": starts[1], "count": 0, "p50_us": None, "p90_us": None,
                     "p99_us": None}  # fmt: skip
    # The 2 ms bucket's midpoint is above 2 ms, the slowest call of that step.
    assert midpoint_us(2 * MS) > 2000.0
    assert last["p50_us"] == last["p99_us"] == 2000.0
    assert sum(point["count"] for point in web1["points"]) == web1["count"]
    assert [p["count"] for p in groups_by_labels(body)["db-0",]["points"]] == [0, 0, 10]


def test_points_align_to_the_step_and_cover_limited_groups(
    api: TestClient, web_traffic: None
) -> None:
    # From 30 s past BASE_S, steps of 60 s still start at BASE_S: multiples since the epoch.
    window = {"from": str(BASE_S + 30), "until": str(BASE_S + 130)}
    body = latency(api, step="60", limit="1", **window)
    (group,) = body["groups"]
    assert group["labels"] == {"pod": "web-1", "syscall": "recvfrom"}
    assert [(p["timestamp"], p["count"]) for p in group["points"]] == [
        (BASE_S * 1000, 0), ((BASE_S + 60) * 1000, 0), ((BASE_S + 120) * 1000, 40)]  # fmt: skip


def test_peers_with_errno_names_in_progress_and_destinations(
    api: TestClient, ingest: Ingest
) -> None:
    db = {"namespace": "bank", "pod": "db-0", "workload": "db"}
    ingest(net_batch(connections=[
        connection(WEB, "10.1.2.3", 5432, "ok", [180 * US] * 8 + [900 * US] * 2, db),
        connection(WEB, "10.1.2.3", 5432, "ECONNREFUSED", [40 * US] * 2, db),
        connection(WEB, "10.1.2.3", 5432, "EINPROGRESS", [5 * US] * 3, db),
        connection(HOST, "2001:db8::1", 443, "ETIMEDOUT", [3000 * MS]),
    ], end_ns=at(5)))  # fmt: skip
    ingest(net_batch(connections=[
        connection(WEB2, "10.1.2.3", 5432, "ok", [200 * US] * 4, db),
        connection(WEB, "10.1.2.3", 5432, "ECONNREFUSED", [40 * US], db),
        connection(WEB, "10.9.9.9", 80, "ok", [1 * MS]),
    ], end_ns=at(65)))  # fmt: skip
    found = peers(api)
    assert [peer["count"] for peer in found] == [16, 4, 1, 1]
    web_db = found[0]
    assert web_db["source"] == {"namespace": "shop", "workload": "web", "pod": "web-1",
                                "container": "app"}  # fmt: skip
    assert (web_db["address"], web_db["port"], web_db["destination"]) == ("10.1.2.3", 5432, db)
    assert web_db["errors"] == {"ECONNREFUSED": 3}
    assert web_db["in_progress"] == 3
    # Of the 13 completed calls (EINPROGRESS not timed): 3 of 40 us, 10 of 180 us, 2 of 900 us.
    assert web_db["p50_us"] == midpoint_us(180 * US)
    assert web_db["p99_us"] == midpoint_us(900 * US)
    assert found[1]["source"]["pod"] == "web-2"
    by_address = {peer["address"]: peer for peer in found[2:]}
    host = by_address["2001:db8::1"]
    assert host["source"] == {"node": "n1", "comm": "curl"}
    assert (host["destination"], host["errors"], host["in_progress"]) == ({}, {"ETIMEDOUT": 1}, 0)
    assert host["p50_us"] == min(midpoint_us(3000 * MS), 3_000_000.0)
    assert by_address["10.9.9.9"]["errors"] == {}
    assert peers(api, query='{pod="web-2"}') == [found[1]]
    assert len(peers(api, limit="2")) == 2


def test_a_retried_batch_is_stored_once(api: TestClient, ingest: Ingest) -> None:
    body = net_batch(
        [histogram(WEB, "recvfrom", [1 * MS] * 7, errors=1, eagain=2)],
        [connection(WEB, "10.1.2.3", 80, "ECONNREFUSED", [10 * US] * 3)],
        end_ns=at(5),
        batch_id="net-retry-0001",
    )
    for _ in range(3):
        ingest(body)
    (group,) = latency(api)["groups"]
    assert (group["count"], group["errors"], group["eagain"]) == (7, 1, 2)
    (peer,) = peers(api)
    assert (peer["count"], peer["errors"]) == (3, {"ECONNREFUSED": 3})
    # Another batch with the same content but its own id is more traffic.
    ingest({**body, "batch_id": "net-retry-0002"})
    assert latency(api)["groups"][0]["count"] == 14


def test_a_batch_with_latency_and_stacks_stores_both(api: TestClient, ingest: Ingest) -> None:
    ingest(net_batch(
        [histogram(WEB, "recvfrom", [2 * MS] * 3)],
        stacks=[["main", "fetch", "recv"]], series=[(WEB, [(0, 6 * MS)])], end_ns=at(5),
    ))  # fmt: skip
    assert latency(api)["groups"][0]["count"] == 3
    export = api.get("/api/v1/export", params={"type": "net_wait", **WINDOW})
    assert export.text == f"main;fetch;recv {6 * MS}\n"


@pytest.mark.parametrize(
    ("params", "parameter", "words"),
    [
        ({"group_by": "pod,bad-name"}, "group_by", "'bad-name' is not a label name"),
        ({"group_by": "pod,pod"}, "group_by", "twice"),
        ({"group_by": ",".join(f"l{i}" for i in range(9))}, "group_by", "at most"),
        ({"group_by": "pod,"}, "group_by", "'' is not a label name"),
        ({"query": "{pod=}"}, "query", "expected a quoted string"),
        ({"query": '{pod=~"("}'}, "query", "missing )"),
        ({"from": "yesterday"}, "from", "neither Unix seconds"),
        ({"from": "now-32d", "until": "now"}, "from", "PODFLAME_MAX_RANGE"),
        ({"step": "1", "from": "now-1d", "until": "now"}, "step", "more than"),
    ],
)
def test_bad_parameters_are_400_naming_them(
    api: TestClient, web_traffic: None, params: dict[str, str], parameter: str, words: str
) -> None:
    response = api.get("/api/v1/network/latency", params={**WINDOW, **params})
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == parameter
    assert words in response.json()["error"]


def test_bad_peers_selector_is_400_with_position(api: TestClient, ingest: Ingest) -> None:
    ingest(net_batch(connections=[connection(WEB, "10.0.0.1", 80, "ok", [MS])], end_ns=at(5)))
    response = api.get("/api/v1/network/peers", params={"query": '{ns=~"["}'})
    assert response.status_code == 400
    assert response.json()["position"] == 5


def test_points_over_the_budget_are_400(api: TestClient, ingest: Ingest) -> None:
    pods = [{**WEB, "pod": f"web-{n}"} for n in range(30)]
    ingest(net_batch([histogram(labels, "read", [MS]) for labels in pods], end_ns=at(-5)))
    # 30 groups x 10,001 steps of 1 s: over 100,000 points, though each group alone is not.
    window = {"from": str(BASE_S - 10_000), "until": str(BASE_S + 1)}
    response = api.get("/api/v1/network/latency", params={"step": "1", **window})
    assert response.status_code == 400
    assert "30 groups of 10001 points" in response.json()["error"]
    points = latency(api, step="1", limit="9", **window)["groups"][0]["points"]
    assert [point["count"] for point in points[-6:]] == [1, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda b: b["latency"][0]["buckets"].update({"40": 2**32}), "buckets[40]"),
        (lambda b: b["latency"][0].update(sum_ns=2**64), "sum_ns"),
        (lambda b: b["latency"][0]["labels"].update(pid="x"), "pid"),
        (lambda b: b["connections"][0].update(max_ns=2**64), "connections[0].max_ns"),
    ],
)
def test_values_the_tables_cannot_hold_are_400_and_store_nothing(
    api: TestClient, change: Any, words: str
) -> None:
    body = net_batch(
        [histogram(WEB, "read", [MS])],
        [connection(WEB, "10.0.0.1", 80, "ok", [MS])],
        stacks=[["main"]],
        series=[(WEB, [(0, MS)])],
        end_ns=at(5),
    )
    change(body)
    response = api.post("/api/v1/ingest", json=body)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]
    assert latency(api)["groups"] == []
    assert peers(api) == []
    assert api.get("/api/v1/export", params={"type": "net_wait", **WINDOW}).text == ""


def test_malformed_network_records_are_422(api: TestClient) -> None:
    body = net_batch([histogram(WEB, "read", [MS])], end_ns=at(5))
    body["latency"][0]["buckets"] = {"305": 1}  # past OVERFLOW_BUCKET
    response: httpx.Response = api.post("/api/v1/ingest", json=body)
    assert response.status_code == 422
    assert "latency.0.buckets" in response.json()["error"]


# Five whole hours ago: whole hours inside a range are read from the hourly projection.
HOUR0 = (int(time.time()) // 3600 - 5) * 3600


@pytest.fixture
def hours_of_traffic(ingest: Ingest) -> dict[int, list[int]]:
    """Per batch time (Unix s) the latencies of web-1's reads: batches 10 and 40 minutes into
    each of four hours, each batch's calls its own."""
    sent = {}
    for hour in range(4):
        for minute in (10, 40):
            moment = HOUR0 + hour * 3600 + minute * 60
            values = [(hour + 1) * MS] * (hour + 1) + [minute * US] * (minute // 10)
            ingest(net_batch([histogram(WEB, "read", values, eagain=1)], end_ns=moment * 10**9))
            sent[moment] = values
    return sent


@pytest.fixture(params=["rows", "hourly sums"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of reading whole hours: a few rows are read as rows unless told otherwise."""
    if request.param == "hourly sums":
        monkeypatch.setattr(network_queries, "HOURLY_FROM_ROWS", 0)
    return str(request.param)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, 4 * 3600),  # whole hours only
        (1800, 3 * 3600 + 1200),  # a partial hour at both ends
        (2 * 3600, 2 * 3600 + 2700),  # inside one hour
        (600, 600),  # empty
    ],
)
def test_ranges_over_hours_sum_exactly(
    api: TestClient, hours_of_traffic: dict[int, list[int]], read_path: str, start: int, end: int
) -> None:
    params = {"from": str(HOUR0 + start), "until": str(HOUR0 + end), "group_by": "pod"}
    values = [v for at_s, batch in hours_of_traffic.items() if start <= at_s - HOUR0 < end
              for v in batch]  # fmt: skip
    groups = latency(api, **params)["groups"]
    if not values:
        assert groups == []
        return
    (group,) = groups
    batches = sum(1 for at_s in hours_of_traffic if start <= at_s - HOUR0 < end)
    assert (group["count"], group["eagain"]) == (len(values), batches)
    assert group["max_us"] == max(values) / 1000
    ordered = sorted(values)
    assert group["p50_us"] == min(midpoint_us(ordered[len(values) // 2 - 1 + len(values) % 2]),
                                  max(values) / 1000)  # fmt: skip


def test_hourly_steps_read_whole_hours(
    api: TestClient, hours_of_traffic: dict[int, list[int]], read_path: str
) -> None:
    window = {"from": str(HOUR0 - 1800), "until": str(HOUR0 + 4 * 3600 + 5)}
    for step in ("3600", "7200", "1800"):
        (group,) = latency(api, group_by="", step=step, **window)["groups"]
        expected: dict[int, int] = {}
        for at_s, batch in hours_of_traffic.items():
            start = at_s - at_s % int(step)
            expected[start * 1000] = expected.get(start * 1000, 0) + len(batch)
        found = {point["timestamp"]: point["count"] for point in group["points"] if point["count"]}
        assert found == expected, step


def test_whole_hours_are_read_from_the_hourly_projection(
    store: ClickHouseStore,
    chdb_client: Client,
    hours_of_traffic: dict[int, list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def read_from(start: int, end: int, selector: str) -> list[str]:
        span = TimeRange(_moment(HOUR0 + start), _moment(HOUR0 + end))
        query = LatencyQuery(LabelSelection(parse_selector(selector), span), ("pod",), 10)
        sql, parameters = statement_of(store, chdb_client, query)
        plan = chdb_client.query(f"EXPLAIN {sql}", parameters=parameters).result_rows
        return [line.strip(" │└─") for (line,) in plan if "ReadFromMergeTree" in line]

    projection, table = "ReadFromMergeTree (hourly)", f"ReadFromMergeTree ({store.database}"
    # Eight rows: reading them beats reading hourly sums (granules of 8192 either way).
    assert [line.startswith(table) for line in read_from(0, 4 * 3600, "")] == [True]
    monkeypatch.setattr(network_queries, "HOURLY_FROM_ROWS", 1)
    assert read_from(0, 4 * 3600, "") == [projection]
    # A Map label's matcher too (ClickHouse would otherwise read a subcolumn the projection lacks).
    assert read_from(0, 4 * 3600, '{team="checkout", pod=~"web-.*"}') == [projection]
    ends = read_from(1800, 3 * 3600 + 1200, "")
    assert ends.count(projection) == 1 and len(ends) == 3
    assert all(line.startswith(table) for line in ends if line != projection)


def _moment(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_a_version_2_database_gains_the_hourly_projection(
    chdb_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = "t_upgrade_from_v2"
    chdb_client.command(f"DROP DATABASE IF EXISTS {database}")
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:2])  # the server before version 3
    old = ClickHouseStore(chdb_client, database=database)
    # Plus the batch column today's writer needs; version 4 is idempotent, so
    # the upgrade runs it again.
    for statement in MIGRATIONS[3]:
        chdb_client.command(schema.render(statement, database, retention_days=7)[0])
    for hour in range(3):
        values = [(hour + 1) * MS] * (10 * hour + 5)
        body = net_batch([histogram(WEB, "read", values)], end_ns=(HOUR0 + hour * 3600) * 10**9)
        old.ingest(Batch.model_validate(body))
    span = LabelSelection((), TimeRange(_moment(HOUR0), _moment(HOUR0 + 3 * 3600)))
    query = LatencyQuery(span, ("pod",), 10)
    before = old.network_latency(query)
    monkeypatch.undo()
    monkeypatch.setattr(network_queries, "HOURLY_FROM_ROWS", 0)  # 3 rows, read as sums
    store = ClickHouseStore(chdb_client, database=database)
    assert store.network_latency(query) == before
    assert [(item.count, item.max_ns) for item in before] == [(45, 3 * MS)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _mutations_done(chdb_client, database):
        time.sleep(0.2)
    sql, parameters = statement_of(store, chdb_client, query)
    plan = str(chdb_client.query(f"EXPLAIN {sql}", parameters=parameters).result_rows)
    assert "ReadFromMergeTree (hourly)" in plan
    assert store.network_latency(query) == before
    chdb_client.command(f"DROP DATABASE {database}")


def _mutations_done(client: Client, database: str) -> bool:
    pending = client.query(
        "SELECT count() FROM system.mutations WHERE database = {db:String} AND NOT is_done",
        parameters={"db": database},
    ).result_rows
    return bool(pending[0][0] == 0)
