"""Grafana's Pyroscope datasource against podflame, on real profiles: the calls it makes
(Connect, binary protobuf built from server/querier.proto's messages, and the JSON curl
sends), against a real server holding what the real BPF agent sampled from two pods
of known CPU splits, with tokens as Grafana sends them.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message

from podflame.server import querier_pb2 as pb
from tests.conftest import compile_c, running_server
from tests.e2e.pods import Pod, Workload, pod_agent, release, run_workloads
from tests.fixtures import FIXTURES
from tests.server.connect_client import (
    ConnectFailure,
    call,
    call_json,
    function_totals,
    parse_json,
    selector_request,
)

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

CPU = "cpu:cpu:nanoseconds:cpu:nanoseconds"
ADMIN = "grafana-admin-0123456789"
SHOP_READER = "grafana-shop-0123456789"
CHECKOUT = Pod("shop", "checkout", "checkout-7f9c4", "app")  # burn_a 70 %, burn_b 30 %
REPORT = Pod("batch", "report", "report-0", "worker")  # burn_a 30 %, burn_b 70 %
CPU_SECONDS = 3  # per pod: about 300 samples at 99 Hz, a share's standard error < 3 points
# /api/v1/top and the flame graph read the same samples; 3 points is the bound.
SHARE_TOLERANCE = 0.03
SAMPLING_NOISE = 0.10


@dataclass(frozen=True)
class Profiled:
    url: str
    start_ms: int
    end_ms: int


@pytest.fixture(scope="module")
def grafana(tmp_path_factory: pytest.TempPathFactory, require_bpf: None) -> Iterator[Profiled]:
    """One BPF run for the module: both pods sampled by the real agent, shipped with a token."""
    tmp_path = tmp_path_factory.mktemp("grafana")
    tokens = [
        {"token": ADMIN, "scopes": ["ingest", "query"]},
        {"token": SHOP_READER, "scopes": ["query"], "namespaces": ["shop"]},
    ]
    (tmp_path / "tokens.json").write_text(json.dumps(tokens))
    burnmix = compile_c(FIXTURES / "burnmix.c", tmp_path / "burnmix")
    workloads = [
        Workload(CHECKOUT, [str(burnmix), "7", "3", str(CPU_SECONDS)]),
        Workload(REPORT, [str(burnmix), "3", "7", str(CPU_SECONDS)]),
    ]
    extra = ["--tokens-file", str(tmp_path / "tokens.json")]
    with running_server(tmp_path, extra=extra) as url:
        start_ms = int(time.time() * 1000) - 60_000
        with pod_agent(url, token=ADMIN, network=False) as provider:  # Grafana reads CPU
            run_workloads(provider, workloads, tmp_path)
        release(workloads)
        yield Profiled(url, start_ms, int(time.time() * 1000) + 60_000)


@pytest.fixture(scope="module")
def client(grafana: Profiled) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=grafana.url, timeout=60) as session:
        yield session


def rpc(
    client: httpx.Client, method: str, request: Message, answer: type[Any], token: str = ADMIN
) -> Any:
    return call(client, method, request, answer, token=token)


def flame(client: httpx.Client, run: Profiled, selector: str, token: str = ADMIN) -> pb.FlameGraph:
    request = selector_request(CPU, selector, run.start_ms, run.end_ms)
    answer = rpc(
        client, "SelectMergeStacktraces", request, pb.SelectMergeStacktracesResponse, token
    )
    return answer.flamegraph


def api_v1(client: httpx.Client, run: Profiled, path: str, query: str, token: str = ADMIN) -> Any:
    params = {
        "query": query,
        "type": "cpu",
        "from": str(run.start_ms / 1000),
        "until": str(run.end_ms / 1000),
    }
    response = client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(("pod", "burn_a"), [(CHECKOUT, 0.70), (REPORT, 0.30)])
def test_flame_graph_shares_match_top(
    client: httpx.Client, grafana: Profiled, pod: Pod, burn_a: float
) -> None:
    selector = f'{{service_name="{pod.namespace}/{pod.workload}"}}'
    graph = flame(client, grafana, selector)
    assert graph.names[graph.levels[0].values[3]] == "total"
    assert graph.levels[0].values[1] == graph.total > 0
    top = api_v1(client, grafana, "/api/v1/top", selector)
    assert top["total"] == graph.total
    shares = {name: value / graph.total for name, value in function_totals(graph).items()}
    for function in top["functions"]:
        if function["name"] in ("burn_a", "burn_b", "spin", "run", "main"):
            expected = function["total"] / top["total"]
            assert shares[function["name"]] == pytest.approx(expected, abs=SHARE_TOLERANCE)
    assert shares["burn_a"] == pytest.approx(burn_a, abs=SAMPLING_NOISE)
    assert shares["burn_b"] == pytest.approx(1 - burn_a, abs=SAMPLING_NOISE)


def test_select_series_sums_to_the_flame_graph_total(
    client: httpx.Client, grafana: Profiled
) -> None:
    total = flame(client, grafana, '{namespace=~"shop|batch"}').total
    request = pb.SelectSeriesRequest(
        profile_typeID=CPU,
        label_selector='{namespace=~"shop|batch"}',
        start=grafana.start_ms,
        end=grafana.end_ms,
        group_by=["pod"],
        step=1.0,
    )
    answer = rpc(client, "SelectSeries", request, pb.SelectSeriesResponse)
    assert sorted(s.labels[0].value for s in answer.series) == [CHECKOUT.pod, REPORT.pod]
    assert sum(p.value for s in answer.series for p in s.points) == total
    for series in answer.series:
        stamps = [p.timestamp for p in series.points]
        assert stamps == sorted(stamps) and all(t % 1000 == 0 for t in stamps)
        pod_total = flame(client, grafana, f'{{pod="{series.labels[0].value}"}}').total
        assert sum(p.value for p in series.points) == pod_total


def test_labels_match_api_v1(client: httpx.Client, grafana: Profiled) -> None:
    matchers = [f'{{__profile_type__="{CPU}", namespace="shop"}}']
    names = rpc(
        client,
        "LabelNames",
        pb.LabelNamesRequest(matchers=matchers, start=grafana.start_ms, end=grafana.end_ms),
        pb.LabelNamesResponse,
    ).names
    expected = api_v1(client, grafana, "/api/v1/labels", '{namespace="shop"}')["names"]
    assert list(names) == expected
    assert {"service_name", "pod", "namespace", "comm", "pid"} <= set(names)
    for name in ("pod", "service_name", "comm", "pid"):
        request = pb.LabelValuesRequest(
            name=name, matchers=matchers, start=grafana.start_ms, end=grafana.end_ms
        )
        values = rpc(client, "LabelValues", request, pb.LabelValuesResponse).names
        path = f"/api/v1/labels/{name}/values"
        assert list(values) == api_v1(client, grafana, path, '{namespace="shop"}')["values"]
    request = pb.LabelValuesRequest(name="service_name", start=grafana.start_ms, end=grafana.end_ms)
    services = rpc(client, "LabelValues", request, pb.LabelValuesResponse).names
    assert {"shop/checkout", "batch/report"} <= set(services)


def test_profile_types_is_the_health_check(client: httpx.Client, grafana: Profiled) -> None:
    types = rpc(client, "ProfileTypes", pb.ProfileTypesRequest(), pb.ProfileTypesResponse)
    assert CPU in [item.ID for item in types.profile_types]
    with pytest.raises(ConnectFailure) as failure:
        call(client, "ProfileTypes", pb.ProfileTypesRequest(), pb.ProfileTypesResponse)
    assert failure.value.status == 401


def test_bad_selector_is_invalid_argument(client: httpx.Client, grafana: Profiled) -> None:
    with pytest.raises(ConnectFailure) as failure:
        flame(client, grafana, '{pod="checkout"')
    assert failure.value.status == 400
    assert failure.value.body["code"] == "invalid_argument"
    assert "selector" in failure.value.body["message"]


def test_a_namespace_token_sees_only_its_namespace(client: httpx.Client, grafana: Profiled) -> None:
    request = pb.LabelValuesRequest(name="namespace", start=grafana.start_ms, end=grafana.end_ms)
    seen = rpc(client, "LabelValues", request, pb.LabelValuesResponse, SHOP_READER).names
    assert list(seen) == ["shop"]
    assert "batch" in rpc(client, "LabelValues", request, pb.LabelValuesResponse).names
    everything = flame(client, grafana, "", SHOP_READER)
    assert everything.total == flame(client, grafana, '{namespace="shop"}').total > 0
    assert flame(client, grafana, '{namespace="batch"}', SHOP_READER).total == 0
    series = pb.SeriesRequest(
        label_names=["namespace", "pod"], start=grafana.start_ms, end=grafana.end_ms
    )
    sets = rpc(client, "Series", series, pb.SeriesResponse, SHOP_READER).labels_set
    assert {
        pair.value for labels in sets for pair in labels.labels if pair.name == "namespace"
    } == {"shop"}
    assert REPORT.pod not in str(sets)


def test_the_same_queries_in_json(client: httpx.Client, grafana: Profiled) -> None:
    span = {"start": str(grafana.start_ms), "end": str(grafana.end_ms)}
    selector = f'{{pod="{CHECKOUT.pod}"}}'
    body = {"profileTypeID": CPU, "labelSelector": selector, **span}
    response = call_json(client, "SelectMergeStacktraces", body, token=ADMIN)
    assert isinstance(response.json()["flamegraph"]["total"], str)  # int64 as a string
    graph = parse_json(response, pb.SelectMergeStacktracesResponse).flamegraph
    assert graph == flame(client, grafana, selector)
    series = call_json(client, "SelectSeries", {**body, "step": 1}, token=ADMIN).json()
    assert sum(p["value"] for p in series["series"][0]["points"]) == graph.total
    names = call_json(client, "LabelNames", {"matchers": [selector], **span}, token=ADMIN).json()
    assert names["names"] == api_v1(client, grafana, "/api/v1/labels", selector)["names"]
    bad = call_json(
        client, "SelectMergeStacktraces", {**body, "labelSelector": "{pod="}, token=ADMIN
    )
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_argument"


def test_drilldown_render_matches_the_flame_graph(client: httpx.Client, grafana: Profiled) -> None:
    selector = f'{{pod="{CHECKOUT.pod}"}}'
    params = {"query": CPU + selector, "from": str(grafana.start_ms), "until": str(grafana.end_ms)}
    response = client.get(
        "/pyroscope/render", params=params, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    graph = flame(client, grafana, selector)
    assert body["flamebearer"]["levels"] == [list(level.values) for level in graph.levels]
    assert body["flamebearer"]["numTicks"] == sum(body["timeline"]["samples"]) == graph.total
    shop_only = client.get(
        "/pyroscope/render",
        params={**params, "query": CPU + f'{{pod="{REPORT.pod}"}}'},
        headers={"Authorization": f"Bearer {SHOP_READER}"},
    )
    assert shop_only.json()["flamebearer"]["numTicks"] == 0
