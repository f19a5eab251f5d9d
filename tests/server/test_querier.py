"""querier.v1 over Connect (Grafana's Pyroscope datasource) on ingested synthetic batches:
the encodings, max_nodes, SelectSeries' group_by and step, errors and JSON."""

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient
from google.protobuf.message import Message

from podflame.model.profile import CPU as CPU_TYPE
from podflame.model.profile import ProfileType
from podflame.server import pyroscope_types, querier
from podflame.server import querier_pb2 as pb
from podflame.server.app import create_app
from podflame.server.clickhouse_store import ClickHouseStore
from tests.server.conftest import batch
from tests.server.connect_client import (
    ConnectFailure,
    bars,
    call,
    call_json,
    parse_json,
    selector_request,
)
from tests.server.test_pyroscope import PUSH, SDK_LABELS, push_request, python_pprof

CPU = "cpu:cpu:nanoseconds:cpu:nanoseconds"
STACKS = [["main", "a", "b"], ["main", "a"], ["main", "c_[k]", "d"], ["main", "c_[k]"]]
# 60 s apart, so a 60 s step puts them in two steps.
T0_MS = (int(time.time()) // 60 - 5) * 60_000
T1_MS = T0_MS + 60_000
API = {"namespace": "shop", "workload": "api", "pod": "api-1", "comm": "api", "pid": "7"}
WEB = {"namespace": "shop", "workload": "web", "pod": "web-1", "comm": "nginx", "pid": "8"}
HOST = {"comm": "postgres", "pid": "9"}  # no Kubernetes: service_name is the process name


@pytest.fixture(scope="module")
def api(chdb_client: Client) -> Iterator[TestClient]:
    """One store for the module with both batches ingested once: the tests only read it."""
    database = f"t_{uuid.uuid4().hex}"
    client = TestClient(create_app(ClickHouseStore(chdb_client, database=database)))
    for body in (
        batch(STACKS, [(API, [(0, 3), (1, 2), (2, 4), (3, 1)])], end_ns=T0_MS * 10**6),
        batch(STACKS, [(WEB, [(0, 7)]), (HOST, [(1, 11)])], end_ns=T1_MS * 10**6),
    ):
        assert client.post("/api/v1/ingest", json=body).status_code == 200
    yield client
    chdb_client.command(f"DROP DATABASE IF EXISTS {database}")


def merge(api: TestClient, selector: str, **fields: Any) -> pb.FlameGraph:
    request = selector_request(CPU, selector, T0_MS - 1000, T1_MS + 1000, **fields)
    return call(
        api, "SelectMergeStacktraces", request, pb.SelectMergeStacktracesResponse
    ).flamegraph


def test_flame_graph_levels_are_pyroscope_encoded(api: TestClient) -> None:
    graph = merge(api, '{pod="api-1"}')
    assert list(graph.names) == ["total", "main", "a", "b", "c_[k]", "d"]
    # [offset from the end of the previous bar of the level, total, self, name index]
    assert [list(level.values) for level in graph.levels] == [
        [0, 10, 0, 0],
        [0, 10, 0, 1],
        [0, 5, 2, 2, 0, 5, 1, 4],
        # A bar's self comes first, then its children: b starts at 2 (after a's self),
        # d at 6 (after c_[k]'s self), 1 after b's end.
        [2, 3, 3, 3, 1, 4, 4, 5],
    ]
    assert graph.names[graph.levels[0].values[3]] == "total"
    assert graph.total == 10
    assert graph.max_self == 4


def test_max_nodes_merges_into_other_as_api_v1(api: TestClient) -> None:
    graph = merge(api, "", max_nodes=4)
    params = {"max_nodes": 4, "from": str(T0_MS // 1000 - 1), "until": str(T1_MS // 1000 + 1)}
    flat = api.get("/api/v1/flamegraph", params=params).json()
    assert flat["truncated"]
    found = bars(graph)
    # The same nodes, named and valued alike.
    assert sorted((n, t, s) for _, _, t, s, n in found) == sorted(
        (flat["names"][n], t, s) for _, n, s, t in flat["nodes"]
    )
    assert len(found) <= 4
    assert "other" in graph.names
    assert graph.total == flat["total"] == 10 + 7 + 11
    # Every bar holds its children.
    for depth, x, total, own, _ in found:
        children = [t for d, cx, t, _, _ in found if d == depth + 1 and x <= cx < x + total]
        assert own + sum(children) == total


def test_select_series_groups_and_steps(api: TestClient) -> None:
    request = pb.SelectSeriesRequest(
        profile_typeID=CPU,
        label_selector='{namespace="shop"}',
        start=T0_MS - 60_000,
        end=T1_MS + 60_000,
        group_by=["pod"],
        step=60.0,
    )
    answer = call(api, "SelectSeries", request, pb.SelectSeriesResponse)
    got = {
        tuple((p.name, p.value) for p in s.labels): [(pt.timestamp, pt.value) for pt in s.points]
        for s in answer.series
    }
    assert got == {
        (("pod", "api-1"),): [(T0_MS, 10.0)],
        (("pod", "web-1"),): [(T1_MS, 7.0)],
    }
    # Ungrouped, 2 minutes a step: one series, one point holding both batches.
    request.ClearField("group_by")
    request.label_selector = ""
    request.step = 120.0
    (only,) = call(api, "SelectSeries", request, pb.SelectSeriesResponse).series
    assert list(only.labels) == []
    assert sum(p.value for p in only.points) == 28 == merge(api, "").total
    assert all(p.timestamp % 120_000 == 0 for p in only.points)


def test_select_series_limit_keeps_the_largest(api: TestClient) -> None:
    request = pb.SelectSeriesRequest(
        profile_typeID=CPU,
        start=T0_MS - 1000,
        end=T1_MS + 1000,
        group_by=["comm"],
        step=60,
        limit=2,
    )
    answer = call(api, "SelectSeries", request, pb.SelectSeriesResponse)
    assert [s.labels[0].value for s in answer.series] == ["api", "postgres"]  # 10 and 11, not 7


def test_service_name_is_derived_for_ebpf_profiles(api: TestClient) -> None:
    request = pb.LabelValuesRequest(
        name="service_name",
        matchers=[f'{{__profile_type__="{CPU}"}}'],
        start=T0_MS - 1000,
        end=T1_MS + 1000,
    )
    values = call(api, "LabelValues", request, pb.LabelValuesResponse).names
    assert list(values) == ["postgres", "shop/api", "shop/web"]
    graph = merge(api, '{service_name="shop/web"}')
    assert graph.total == 7
    names = call(
        api,
        "LabelNames",
        pb.LabelNamesRequest(start=T0_MS - 1000, end=T1_MS + 1000),
        pb.LabelNamesResponse,
    ).names
    assert {"service_name", "namespace", "pod", "comm", "pid"} <= set(names)
    assert not [name for name in names if name.startswith("__")]


def test_profile_types_have_pyroscope_ids(store: ClickHouseStore) -> None:
    api = TestClient(create_app(store))  # a store of its own: the push adds a type
    body = push_request([(SDK_LABELS, [python_pprof()])])
    pushed = api.post(PUSH, content=body, headers={"content-type": "application/proto"})
    assert pushed.status_code == 200, pushed.text
    answer = call(api, "ProfileTypes", pb.ProfileTypesRequest(), pb.ProfileTypesResponse)
    ids = [item.ID for item in answer.profile_types]
    assert ids[:2] == [CPU, "net_wait:net_wait:nanoseconds:net_wait:nanoseconds"]
    assert "process_cpu:cpu:nanoseconds:cpu:nanoseconds" in ids
    cpu = answer.profile_types[0]
    assert (cpu.name, cpu.sample_type, cpu.sample_unit) == ("cpu", "cpu", "nanoseconds")


def test_series_lists_label_sets(api: TestClient) -> None:
    request = pb.SeriesRequest(
        matchers=['{namespace="shop"}'],
        label_names=["service_name", "__profile_type__"],
        start=T0_MS - 1000,
        end=T1_MS + 1000,
    )
    answer = call(api, "Series", request, pb.SeriesResponse)
    sets = sorted(tuple((p.name, p.value) for p in labels.labels) for labels in answer.labels_set)
    assert sets == [
        (("__profile_type__", CPU), ("service_name", "shop/api")),
        (("__profile_type__", CPU), ("service_name", "shop/web")),
    ]


def test_diff_has_both_sides(api: TestClient) -> None:
    sides = [
        selector_request(CPU, f'{{pod="{pod}"}}', T0_MS - 1000, T1_MS + 1000)
        for pod in ("api-1", "web-1")
    ]
    graph = call(
        api, "Diff", pb.DiffRequest(left=sides[0], right=sides[1]), pb.DiffResponse
    ).flamegraph
    assert (graph.leftTicks, graph.rightTicks, graph.total) == (10, 7, 17)
    assert list(graph.levels[0].values) == [0, 10, 0, 0, 7, 0, 0]
    # b: left 3 at x 2 (after a's self of 2); right 7 at x 0 (a has no self there).
    b = list(graph.names).index("b")
    assert [2, 3, 3, 0, 7, 7, b] == list(graph.levels[3].values[:7])


def test_select_merge_profile_is_pprof(api: TestClient) -> None:
    request = pb.SelectMergeProfileRequest(
        profile_typeID=CPU, label_selector='{pod="api-1"}', start=T0_MS - 1000, end=T1_MS + 1000
    )
    profile = call(api, "SelectMergeProfile", request, pb.Profile)
    assert sum(sample.value[0] for sample in profile.sample) == 10
    assert profile.string_table[profile.sample_type[0].unit] == "nanoseconds"


def test_json_as_curl_sends_it(api: TestClient) -> None:
    body = {
        "profileTypeID": CPU,
        "labelSelector": '{pod="api-1"}',
        "start": str(T0_MS - 1000),
        "end": str(T1_MS + 1000),
        "maxNodes": "100",
    }
    response = call_json(api, "SelectMergeStacktraces", body)
    assert response.json()["flamegraph"]["total"] == "10"  # int64 as a string
    graph = parse_json(response, pb.SelectMergeStacktracesResponse).flamegraph
    assert graph == merge(api, '{pod="api-1"}')


@pytest.mark.parametrize(
    ("selector", "fragment"),
    [('{pod="api-1"', "expected"), ('{pod=~"("}', "regex"), ('{__name__="x"}', "__name__")],
)
def test_bad_selectors_are_invalid_argument(api: TestClient, selector: str, fragment: str) -> None:
    with pytest.raises(ConnectFailure) as failure:
        merge(api, selector)
    assert failure.value.status == 400
    assert failure.value.body["code"] == "invalid_argument"
    assert fragment in failure.value.body["message"]


def test_errors_are_connect_errors(api: TestClient) -> None:
    unknown = selector_request("nope:x:y:z:w", "", 0, 0)
    with pytest.raises(ConnectFailure) as failure:
        call(api, "SelectMergeStacktraces", unknown, pb.SelectMergeStacktracesResponse)
    assert failure.value.body == {
        "code": "invalid_argument",
        "message": "unknown profile type 'nope:x:y:z:w' (see ProfileTypes)",
    }
    garbage = api.post(
        "/querier.v1.QuerierService/LabelNames",
        content=b"\xff\xff",
        headers={"content-type": "application/proto"},
    )
    assert garbage.status_code == 400 and garbage.json()["code"] == "invalid_argument"
    text = api.post(
        "/querier.v1.QuerierService/LabelNames",
        content=b"x",
        headers={"content-type": "text/plain"},
    )
    assert text.status_code == 415 and text.json()["code"] == "unimplemented"
    steps = pb.SelectSeriesRequest(profile_typeID=CPU, start=1, end=86_400_000, step=1)
    with pytest.raises(ConnectFailure) as failure:
        call(api, "SelectSeries", steps, pb.SelectSeriesResponse)
    assert (
        failure.value.body["code"] == "invalid_argument"
        and "points" in failure.value.body["message"]
    )


def test_calls_podflame_does_not_serve_are_unimplemented(api: TestClient) -> None:
    response = api.post(
        "/querier.v1.QuerierService/SelectMergeSpanProfile",
        content=b"",
        headers={"content-type": "application/proto"},
    )
    assert response.status_code == 404
    assert response.json()["code"] == "unimplemented"


def test_render_is_flamebearer_json(api: TestClient) -> None:
    """The Profiles Drilldown app's /pyroscope/render: the same levels, and a timeline."""
    params = {
        "query": f'{CPU}{{pod="api-1"}}',
        "from": str(T0_MS - 60_000),
        "until": str(T1_MS + 60_000),
        "max-nodes": "100",
    }
    body = api.get("/pyroscope/render", params=params).json()
    graph = merge(api, '{pod="api-1"}')
    assert body["flamebearer"] == {
        "names": list(graph.names),
        "levels": [list(level.values) for level in graph.levels],
        "numTicks": 10,
        "maxSelf": 4,
    }
    assert body["metadata"] == {
        "format": "single",
        "spyName": "",
        "sampleRate": 1_000_000_000,  # nanoseconds: the app shows seconds
        "units": "samples",
        "name": "cpu",
    }
    timeline = body["timeline"]
    assert timeline["durationDelta"] == 15
    assert timeline["startTime"] == (T0_MS - 60_000) // 1000
    assert len(timeline["samples"]) == 180 // 15
    assert sum(timeline["samples"]) == 10
    # T0 is 60 s after the start: the fifth 15 s step.
    assert timeline["samples"][4] == 10


def test_render_diff_has_both_sides(api: TestClient) -> None:
    span = {"from": str(T0_MS - 1000), "until": str(T1_MS + 1000)}
    params = {
        "leftQuery": f'{CPU}{{pod="api-1"}}',
        "rightQuery": f'{CPU}{{pod="web-1"}}',
        **{f"left{k.title()}": v for k, v in span.items()},
        **{f"right{k.title()}": v for k, v in span.items()},
    }
    body = api.get("/pyroscope/render-diff", params=params).json()
    assert (body["leftTicks"], body["rightTicks"], body["flamebearer"]["numTicks"]) == (10, 7, 17)
    assert body["metadata"]["format"] == "double"
    assert body["flamebearer"]["levels"][0] == [0, 10, 0, 0, 7, 0, 0]


def test_render_errors_name_the_parameter(api: TestClient) -> None:
    bad = api.get("/pyroscope/render", params={"query": f'{CPU}{{pod="x"'})
    assert bad.status_code == 400 and bad.json()["parameter"] == "query"
    unknown = api.get("/pyroscope/render", params={"query": 'nope{pod="x"}'})
    assert unknown.status_code == 400 and unknown.json()["parameter"] == "query"


def test_select_series_refuses_too_many_points(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(querier, "MAX_SERIES_POINTS", 2)  # the data has 3 (comm, step) points
    request = pb.SelectSeriesRequest(
        profile_typeID=CPU, start=T0_MS - 1000, end=T1_MS + 1000, group_by=["comm"], step=60
    )
    with pytest.raises(ConnectFailure) as failure:
        call(api, "SelectSeries", request, pb.SelectSeriesResponse)
    assert failure.value.body["code"] == "invalid_argument"
    assert "more than 2 points" in failure.value.body["message"]
    request.ClearField("group_by")  # 2 steps: allowed
    assert len(call(api, "SelectSeries", request, pb.SelectSeriesResponse).series) == 1


def test_pushed_types_get_back_their_pyroscope_ids() -> None:
    # As server/pyroscope.py describes what it records.
    pushed = "process_cpu pushed by Pyroscope SDKs (pprof sample type samples)"
    samples = ProfileType("process_cpu_samples", "count", pushed)
    legacy_text = "process_cpu sent to the legacy Pyroscope /ingest"
    legacy = ProfileType("process_cpu", "nanoseconds", legacy_text)
    assert pyroscope_types.type_id(samples).id == "process_cpu:samples:count:samples:count"
    assert pyroscope_types.type_id(legacy).id == "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
    known = pyroscope_types.type_ids([CPU_TYPE, samples, legacy])
    # The first three parts decide: Pyroscope's own period for these samples still matches.
    resolve = pyroscope_types.resolve_type
    assert resolve("process_cpu:samples:count:cpu:nanoseconds", known) == samples.name
    assert resolve("cpu", known) == "cpu"
    with pytest.raises(pyroscope_types.UnknownTypeId):
        resolve("process_cpu:samples:bytes:cpu:nanoseconds", known)
    # Pushed in another unit than its name's, so stored as process_cpu_bytes
    # (server/profile_types.py): its ID keeps the pushed name and sample type.
    in_bytes = ProfileType("process_cpu_bytes", "bytes", f"{pushed}, in bytes")
    assert pyroscope_types.type_id(in_bytes).id == "process_cpu:samples:bytes:samples:bytes"


def test_stack_trace_selector_keeps_the_stacks_under_the_call_site(api: TestClient) -> None:
    # As the Profiles Drilldown app focuses on a function: call_site root first.
    site = pb.StackTraceSelector(call_site=[pb.CallSiteLocation(name=n) for n in ("main", "a")])
    graph = merge(api, '{pod="api-1"}', stack_trace_selector=site)
    assert graph.total == 3 + 2  # main;a;b and main;a, not main;c_[k]...
    assert set(graph.names) == {"total", "main", "a", "b"}
    request = pb.SelectMergeProfileRequest(
        profile_typeID=CPU, label_selector='{pod="api-1"}', start=T0_MS - 1000, end=T1_MS + 1000
    )
    request.stack_trace_selector.CopyFrom(site)
    profile = call(api, "SelectMergeProfile", request, pb.Profile)
    assert sum(sample.value[0] for sample in profile.sample) == 5
    body = {
        "profileTypeID": CPU,
        "labelSelector": '{pod="api-1"}',
        "start": str(T0_MS - 1000),
        "end": str(T1_MS + 1000),
        "stackTraceSelector": {"callSite": [{"name": "main"}, {"name": "c_[k]"}]},
    }
    response = call_json(api, "SelectMergeStacktraces", body)
    assert response.json()["flamegraph"]["total"] == "5"  # 4 + 1


@pytest.mark.parametrize(
    ("method", "request_message", "feature"),
    [
        (
            "SelectMergeStacktraces",
            pb.SelectMergeStacktracesRequest(
                profile_typeID=CPU, stack_trace_selector=pb.StackTraceSelector(go_pgo=pb.GoPGO())
            ),
            "go_pgo",
        ),
        (
            "SelectMergeProfile",
            pb.SelectMergeProfileRequest(profile_typeID=CPU, profile_id_selector=["7c9e6679"]),
            "profile_id_selector",
        ),
        (
            "SelectSeries",
            pb.SelectSeriesRequest(
                profile_typeID=CPU,
                stack_trace_selector=pb.StackTraceSelector(
                    call_site=[pb.CallSiteLocation(name="main")]
                ),
                step=60,
            ),
            "stack_trace_selector",
        ),
        (
            "SelectMergeStacktraces",
            pb.SelectMergeStacktracesRequest(profile_typeID=CPU, format=pb.PROFILE_FORMAT_TREE),
            "TREE",
        ),
    ],
)
def test_features_podflame_lacks_are_unimplemented_naming_them(
    api: TestClient, method: str, request_message: Message, feature: str
) -> None:
    """Refused rather than answered for every stack as if the field were not there."""
    response = api.post(
        f"/querier.v1.QuerierService/{method}",
        content=request_message.SerializeToString(),
        headers={"content-type": "application/proto"},
    )
    assert response.status_code == 404
    assert response.json()["code"] == "unimplemented"
    assert feature in response.json()["message"]
