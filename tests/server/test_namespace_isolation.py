"""A query token limited to namespace `shop` never sees another namespace's stacks, labels,
label values or profile types, in any endpoint.

The operations come from the app's own OpenAPI schema, and each must have an entry in
ENDPOINTS saying how it is probed: a new endpoint without one fails
test_every_operation_is_probed. Every data endpoint is probed with requests that try
to reach other namespaces (naming one, negations, regexes, a second namespace matcher,
the other side of a diff, their label names and types); its answers to the shop token
must hold none of the other namespaces' secrets and some of shop's, while the same
probes with an unrestricted token do find the secrets (so the probes reach them).
"""

import gzip
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from podflame.server.app import create_app
from podflame.server.auth import TokenEntry
from podflame.server.clickhouse_store import ClickHouseStore
from tests.server.conftest import MAX_INGEST_BYTES, batch
from tests.server.network_batches import connection, histogram, net_batch
from tests.server.test_pyroscope import PUSH, SDK_LABELS, push_request, python_pprof

ADMIN = "admin-token-0123456789"
SHOP = "shop-reader-0123456789"
AGENT = "agent-token-0123456789"
TOKENS = [
    TokenEntry(token=ADMIN, scopes=["ingest", "query"], name="admin"),
    TokenEntry(token=SHOP, scopes=["query"], namespaces=["shop"], name="shop"),
    TokenEntry(token=AGENT, scopes=["ingest"], name="agent"),
]
# What only other namespaces hold; no probe sends any of these.
SECRETS = [
    "bank_secret_frame",
    "bank-secret-pod",
    "bank_only_label",
    "bank_secret_value",
    "vault-x9",
    "vault_secret_frame",
    "bank_secret_type",
    "pushed_secret_frame",
]
SHOP_MARKERS = ["shop_visible_frame", "shop-pod-1", "shop_only_label", "shop", "process_cpu"]
# Everything shop holds, per type: a number shown to the shop token is this or 0.
SHOP_TOTALS = {"cpu": 24, "process_cpu": 10**7}
GUESSES = [
    "",
    '{namespace="bank"}',
    '{namespace=~".*"}',
    '{namespace!="shop"}',
    '{namespace=~"bank|shop"}',
    '{pod=~".+"}',
    '{namespace="shop", namespace="bank"}',
    '{namespace=~"shop|.*"}',
    '{namespace!~"shop"}',
]
TYPES = ["cpu", "process_cpu"]  # eBPF and Pyroscope types shared by several namespaces
LABEL_NAMES = ["namespace", "pod", "comm", "pid", "service_name"]


@pytest.fixture
def secured(store: ClickHouseStore) -> Iterator[TestClient]:
    client = TestClient(create_app(store, max_ingest_bytes=MAX_INGEST_BYTES, tokens=TOKENS))
    stacks = [
        ["main", "shop_visible_frame"],
        ["main", "bank_secret_frame"],
        ["main", "vault_secret_frame"],
    ]
    series = [
        (
            {
                "namespace": "shop",
                "pod": "shop-pod-1",
                "shop_only_label": "v",
                "comm": "api",
                "pid": "11",
            },
            [(0, 11)],
        ),
        (
            {
                "namespace": "bank",
                "pod": "bank-secret-pod",
                "bank_only_label": "bank_secret_value",
                "comm": "bank_secret_value",
                "pid": "22",
            },
            [(1, 101)],
        ),
        ({"namespace": "vault-x9", "pod": "bank-secret-pod"}, [(2, 1009)]),
    ]
    shop_again = ({"namespace": "shop", "pod": "shop-pod-1"}, [(0, 13)])
    for body in (batch(stacks, series), batch([["shop_visible_frame"]], [shop_again])):
        assert client.post("/api/v1/ingest", json=body, headers=bearer(AGENT)).status_code == 200
    assert client.post("/api/v1/ingest", json=network(), headers=bearer(AGENT)).status_code == 200
    # Pyroscope pushes: one from shop and one from bank of the shared process_cpu type,
    # and a type only bank has.
    pushes = [
        ([*SDK_LABELS, ("namespace", "shop")], {("main", "shop_visible_frame"): 10**7}),
        (
            [*SDK_LABELS, ("namespace", "bank"), ("bank_only_label", "bank_secret_value")],
            {("main", "pushed_secret_frame"): 3 * 10**7},
        ),
        (
            [*SDK_LABELS, ("__name__", "bank_secret_type"), ("namespace", "bank")],
            {("main", "pushed_secret_frame"): 10**7},
        ),
    ]
    for labels, stack in pushes:
        body = push_request([(labels, [python_pprof(stack)])])
        headers = {**bearer(AGENT), "content-type": "application/proto"}
        assert client.post(PUSH, content=body, headers=headers).status_code == 200
    yield client


def network() -> dict[str, Any]:
    """Latency and connections of a shop pod and of the other namespaces' pods."""
    shop = {"namespace": "shop", "pod": "shop-pod-1", "comm": "api", "pid": "11"}
    bank = {"namespace": "bank", "pod": "bank-secret-pod", "comm": "bank_secret_value"}
    vault = {"namespace": "vault-x9", "pod": "bank-secret-pod"}
    latency = [
        histogram(shop, "recvfrom", [2_000_000] * 3),
        histogram(bank, "recvfrom", [20_000_000] * 5, errors=1),
        histogram(vault, "sendto", [1_000] * 7),
    ]
    connections = [
        connection(shop, "10.0.0.1", 5432, "ok", [100_000], peer={"namespace": "shop"}),
        connection(bank, "10.0.0.2", 5432, "ECONNREFUSED", [1_000], peer={"pod": "vault-x9"}),
        connection(vault, "10.0.0.3", 80, "ok", [2_000]),
    ]
    return net_batch(latency, connections)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


Probe = Callable[[TestClient, str], list[httpx.Response]]


def selections(path: str) -> Probe:
    """GET `path` with every guessing selector, type and (for labels) label name."""

    def probe(client: TestClient, token: str) -> list[httpx.Response]:
        params = [
            {"query": query, "type": kind, "from": "now-1h", **extra}
            for query in GUESSES
            for kind in TYPES
            for extra in _extras(path)
        ]
        return [client.get(_path(path, p), params=p, headers=bearer(token)) for p in params]

    return probe


def _extras(path: str) -> list[dict[str, str]]:
    if "{name}" in path:
        return [{"name": name} for name in LABEL_NAMES]
    if path.endswith("/export"):
        return [{"format": f} for f in ("folded", "pprof", "speedscope")]
    return [{}]


def _path(path: str, params: dict[str, str]) -> str:
    return path.replace("{name}", params.pop("name")) if "{name}" in path else path


def diffs(client: TestClient, token: str) -> list[httpx.Response]:
    sides = [
        {"left": '{namespace="shop"}', "right": '{namespace="bank"}'},
        {"left": '{namespace=~".*"}'},
        {"left": "", "right": '{namespace!="shop"}'},
    ]
    return [
        client.get(
            "/api/v1/diff",
            params={**side, "type": kind, "left_from": "now-1h"},
            headers=bearer(token),
        )
        for side in sides
        for kind in TYPES
    ]


def plain_get(path: str) -> Probe:
    def probe(client: TestClient, token: str) -> list[httpx.Response]:
        return [client.get(path, headers=bearer(token))]

    return probe


def ingest(path: str) -> Probe:
    """A query token cannot write (and the refusal says nothing of the store)."""

    def probe(client: TestClient, token: str) -> list[httpx.Response]:
        body = push_request([(SDK_LABELS, [python_pprof()])])
        headers = {**bearer(token), "content-type": "application/proto"}
        return [client.post(path, content=body, headers=headers, params={"name": "x"})]

    return probe


def network_views(path: str) -> Probe:
    """GET a network endpoint with every guessing selector and several groupings."""

    def probe(client: TestClient, token: str) -> list[httpx.Response]:
        groupings = ["pod,syscall", "namespace", "comm,pid"] if path.endswith("latency") else [""]
        params = [
            {"query": query, "from": "now-1h", **({"group_by": group} if group else {})}
            for query in GUESSES
            for group in groupings
        ]
        return [client.get(path, params=p, headers=bearer(token)) for p in params]

    return probe


QUERIER = "/querier.v1.QuerierService/"
TYPE_IDS = {
    "cpu": "cpu:cpu:nanoseconds:cpu:nanoseconds",
    "process_cpu": "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
}


def _connect(client: TestClient, token: str, method: str, body: dict[str, Any]) -> httpx.Response:
    """A Connect JSON call, as curl or Grafana's Drilldown app makes it."""
    headers = {**bearer(token), "content-type": "application/json"}
    return client.post(QUERIER + method, content=json.dumps(body), headers=headers)


def _last_hour() -> dict[str, str]:
    now_ms = int(time.time() * 1000)
    return {"start": str(now_ms - 3_600_000), "end": str(now_ms + 60_000)}


def connect_selections(method: str) -> Probe:
    """A Select call with every guessing selector and type (and groupings for series)."""

    def probe(client: TestClient, token: str) -> list[httpx.Response]:
        extras: list[dict[str, Any]] = [{}]
        if method == "SelectSeries":
            extras = [{"groupBy": group, "step": 60} for group in ([], ["namespace"], ["pod"])]
        bodies = [
            {"profileTypeID": TYPE_IDS[kind], "labelSelector": query, **_last_hour(), **extra}
            for query in GUESSES
            for kind in TYPES
            for extra in extras
        ]
        return [_connect(client, token, method, body) for body in bodies]

    return probe


def connect_labels(method: str) -> Probe:
    """LabelNames, LabelValues and Series with every guess, with and without a type."""

    def probe(client: TestClient, token: str) -> list[httpx.Response]:
        matchers = [[query] for query in GUESSES]
        matchers += [[f'{{__profile_type__="{TYPE_IDS[kind]}"}}'] for kind in TYPES]
        extras: list[dict[str, Any]] = [{}]
        if method == "LabelValues":
            extras = [{"name": name} for name in LABEL_NAMES]
        elif method == "Series":
            extras = [{}, {"labelNames": ["namespace", "pod", "service_name"]}]
        bodies = [{"matchers": m, **_last_hour(), **extra} for m in matchers for extra in extras]
        return [_connect(client, token, method, body) for body in bodies]

    return probe


def connect_diffs(client: TestClient, token: str) -> list[httpx.Response]:
    pairs = [('{namespace="shop"}', '{namespace="bank"}'), ('{namespace=~".*"}', "")]
    bodies = [
        {
            side: {"profileTypeID": TYPE_IDS[kind], "labelSelector": query, **_last_hour()}
            for side, query in zip(("left", "right"), pair, strict=True)
        }
        for pair in pairs
        for kind in TYPES
    ]
    return [_connect(client, token, "Diff", body) for body in bodies]


def connect_types(client: TestClient, token: str) -> list[httpx.Response]:
    return [_connect(client, token, "ProfileTypes", {})]


def renders(client: TestClient, token: str) -> list[httpx.Response]:
    """The Profiles Drilldown app's flamebearer JSON, with every guess and type."""
    params = [
        {"query": f"{TYPE_IDS[kind]}{query or '{}'}", "from": "now-1h"}
        for query in GUESSES
        for kind in TYPES
    ]
    return [client.get("/pyroscope/render", params=p, headers=bearer(token)) for p in params]


def render_diffs(client: TestClient, token: str) -> list[httpx.Response]:
    pairs = [('{namespace="shop"}', '{namespace="bank"}'), ('{namespace=~".*"}', "{}")]
    params = [
        {
            "leftQuery": TYPE_IDS[kind] + left,
            "rightQuery": TYPE_IDS[kind] + right,
            "leftFrom": "now-1h",
            "rightFrom": "now-1h",
        }
        for left, right in pairs
        for kind in TYPES
    ]
    return [client.get("/pyroscope/render-diff", params=p, headers=bearer(token)) for p in params]


@dataclass(frozen=True)
class Endpoint:
    probe: Probe
    # "data": shows stored data (the shop token sees shop's, never the others');
    # "write": refused to a query token; "open": holds no stored data at all.
    kind: str


ENDPOINTS: dict[str, Endpoint] = {
    "GET /api/v1/export": Endpoint(selections("/api/v1/export"), "data"),
    "GET /api/v1/top": Endpoint(selections("/api/v1/top"), "data"),
    "GET /api/v1/flamegraph": Endpoint(selections("/api/v1/flamegraph"), "data"),
    "GET /api/v1/timeline": Endpoint(selections("/api/v1/timeline"), "data"),
    "GET /api/v1/labels": Endpoint(selections("/api/v1/labels"), "data"),
    "GET /api/v1/labels/{name}/values": Endpoint(
        selections("/api/v1/labels/{name}/values"), "data"
    ),
    "GET /api/v1/diff": Endpoint(diffs, "data"),
    "GET /api/v1/network/latency": Endpoint(network_views("/api/v1/network/latency"), "data"),
    "GET /api/v1/network/peers": Endpoint(network_views("/api/v1/network/peers"), "data"),
    "GET /api/v1/profile-types": Endpoint(plain_get("/api/v1/profile-types"), "data"),
    "POST /api/v1/ingest": Endpoint(ingest("/api/v1/ingest"), "write"),
    "POST /push.v1.PusherService/Push": Endpoint(ingest(PUSH), "write"),
    "POST /ingest": Endpoint(ingest("/ingest"), "write"),
    f"POST {QUERIER}ProfileTypes": Endpoint(connect_types, "data"),
    f"POST {QUERIER}LabelNames": Endpoint(connect_labels("LabelNames"), "data"),
    f"POST {QUERIER}LabelValues": Endpoint(connect_labels("LabelValues"), "data"),
    f"POST {QUERIER}Series": Endpoint(connect_labels("Series"), "data"),
    f"POST {QUERIER}SelectMergeStacktraces": Endpoint(
        connect_selections("SelectMergeStacktraces"), "data"
    ),
    f"POST {QUERIER}SelectMergeProfile": Endpoint(connect_selections("SelectMergeProfile"), "data"),
    f"POST {QUERIER}SelectSeries": Endpoint(connect_selections("SelectSeries"), "data"),
    f"POST {QUERIER}Diff": Endpoint(connect_diffs, "data"),
    "GET /pyroscope/render": Endpoint(renders, "data"),
    "GET /pyroscope/render-diff": Endpoint(render_diffs, "data"),
    "GET /metrics": Endpoint(plain_get("/metrics"), "open"),
    "GET /healthz": Endpoint(plain_get("/healthz"), "open"),
    "GET /readyz": Endpoint(plain_get("/readyz"), "open"),
}


def operations() -> list[str]:
    schema = create_app(None).openapi()  # type: ignore[arg-type]  # the schema needs no store
    return sorted(f"{m.upper()} {path}" for path, item in schema["paths"].items() for m in item)


def test_every_operation_is_probed() -> None:
    """Add an entry to ENDPOINTS for a new endpoint: say how to reach its data."""
    assert set(operations()) == set(ENDPOINTS)


def text_of(responses: list[httpx.Response]) -> str:
    """Everything the caller got back, pprof decompressed, JSON unescaped."""
    parts = []
    for response in responses:
        content = response.content
        if content[:2] == b"\x1f\x8b":
            content = gzip.decompress(content)
        parts.append(content.decode("utf-8", "replace"))
        if response.headers.get("content-type", "").startswith("application/json"):
            parts.append(repr(response.json()))
    return "\n".join(parts)


def kind_of(response: httpx.Response) -> str:
    """The podflame type a request asked for: its `type` parameter or Connect body's ID."""
    params = response.request.url.params
    if "type" in params:
        return params["type"]
    if any(name in params for name in ("query", "leftQuery")):
        return params.get("query", params.get("leftQuery", "")).split(":")[0]
    body = json.loads(response.request.content)
    type_id: str = body.get("left", body).get("profileTypeID", "")
    return type_id.split(":")[0]


def totals(response: httpx.Response) -> list[int]:
    """The sums an answer shows, where sums are what it shows."""
    path, params = response.request.url.path, response.request.url.params
    if path.startswith(QUERIER):
        return connect_totals(path.removeprefix(QUERIER), response.json())
    if path == "/pyroscope/render":
        return [
            response.json()["flamebearer"]["numTicks"],
            sum(response.json()["timeline"]["samples"]),
        ]
    if path == "/pyroscope/render-diff":
        return [response.json()["leftTicks"], response.json()["rightTicks"]]
    if path.endswith("/export") and params.get("format") == "folded":
        return [sum(int(line.rsplit(" ", 1)[1]) for line in response.text.splitlines())]
    if path.endswith(("/top", "/flamegraph")):
        return [response.json()["total"]]
    if path.endswith("/timeline"):
        return [sum(value for _, value in response.json()["points"])]
    if path.endswith("/diff"):
        return [response.json()["left_total"], response.json()["right_total"]]
    return []


def connect_totals(method: str, body: dict[str, Any]) -> list[int]:
    if method == "SelectMergeStacktraces":
        return [int(body["flamegraph"].get("total", 0))]
    if method == "SelectSeries":
        points = [p for series in body.get("series", []) for p in series.get("points", [])]
        return [round(sum(p.get("value", 0) for p in points))]
    if method == "SelectMergeProfile":
        return [sum(int(s.get("value", ["0"])[0]) for s in body.get("sample", []))]
    if method == "Diff":
        graph = body["flamegraph"]
        return [int(graph.get("leftTicks", 0)), int(graph.get("rightTicks", 0))]
    return []


@pytest.mark.parametrize("operation", operations())
def test_a_shop_token_sees_nothing_of_other_namespaces(secured: TestClient, operation: str) -> None:
    endpoint = ENDPOINTS[operation]
    responses = endpoint.probe(secured, SHOP)
    seen = text_of(responses)
    leaked = [secret for secret in SECRETS if secret in seen]
    assert not leaked, (operation, leaked)
    statuses = {response.status_code for response in responses}
    if endpoint.kind == "write":
        assert statuses == {403}, statuses
        return
    assert statuses == {200}, (statuses, seen[:500])
    if endpoint.kind == "data":
        sums = [(total, kind_of(r)) for r in responses for total in totals(r)]
        assert all(total in (0, SHOP_TOTALS[kind]) for total, kind in sums), sums
        shown = any(marker in seen for marker in SHOP_MARKERS) or any(t for t, _ in sums)
        assert shown, (operation, seen[:500])
        # The same probes with a token for every namespace do reach the secrets.
        admin = endpoint.probe(secured, ADMIN)
        other_sums = [
            total for r in admin for total in totals(r) if total not in (0, SHOP_TOTALS[kind_of(r)])
        ]
        assert other_sums or any(secret in text_of(admin) for secret in SECRETS), operation
    else:
        assert not any(s in text_of(endpoint.probe(secured, ADMIN)) for s in SECRETS)


def test_unknown_type_errors_do_not_list_other_namespaces_types(secured: TestClient) -> None:
    params: dict[str, Any] = {"type": "no_such_type"}
    shop = secured.get("/api/v1/top", params=params, headers=bearer(SHOP))
    admin = secured.get("/api/v1/top", params=params, headers=bearer(ADMIN))
    assert shop.status_code == admin.status_code == 400
    assert "bank_secret_type" in admin.json()["error"]
    assert "bank_secret_type" not in shop.json()["error"]
    types = secured.get("/api/v1/profile-types", headers=bearer(SHOP)).json()
    assert [item["name"] for item in types] == ["cpu", "net_wait", "process_cpu"]


@pytest.mark.parametrize("path", ["/pyroscope/render", QUERIER + "LabelNames"])
def test_grafana_paths_need_a_token(secured: TestClient, path: str) -> None:
    if path.startswith(QUERIER):
        response = secured.post(path, content=b"{}", headers={"content-type": "application/json"})
    else:
        response = secured.get(path, params={"query": TYPE_IDS["cpu"] + "{}"})
    assert response.status_code == 401
    agent = {**bearer(AGENT), "content-type": "application/json"}
    assert secured.post(QUERIER + "LabelNames", content=b"{}", headers=agent).status_code == 403
