"""Pyroscope-compatible ingestion: Connect Push and the legacy /ingest, on real chDB."""

import base64
import gzip
import json
import time
import uuid
from collections.abc import Sequence

import httpx
import pytest
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient

from podflame.model import pprof
from podflame.model import pprof_pb2 as pb
from podflame.model.pprof import StringTable, ValueType
from podflame.model.profile import TRUNCATED_FRAME, ProfileType
from podflame.server.app import create_app
from podflame.server.clickhouse_store import ClickHouseStore
from podflame.server.limits import IngestLimits
from tests.protobuf import bytes_field
from tests.server.conftest import MAX_INGEST_BYTES, folded

PUSH = "/push.v1.PusherService/Push"
PROTO = {"content-type": "application/proto"}
CPU = ValueType("cpu", "nanoseconds")
# What pyroscope-io 1.4.0 (Python) sends besides its tags (docs: platform.md).
SDK_LABELS = [
    ("__name__", "process_cpu"),
    ("service_name", "shop"),
    ("otel.scope.name", "com.grafana.pyroscope/python"),
    ("process.runtime.name", "cpython"),
    ("process.runtime.version", "3.11.7"),
    ("env", "prod"),
]
# Python stacks, root first, and their CPU nanoseconds.
PY_STACKS = {
    ("<module>", "main", "handle_request", "render"): 70_000_000,
    ("<module>", "main", "handle_request"): 20_000_000,
    ("<module>", "main"): 10_000_000,
}


# --- building requests by hand ---------------------------------------------------------------


def push_request(series: Sequence[tuple[Sequence[tuple[str, str]], Sequence[bytes]]]) -> bytes:
    """push.v1.PushRequest: series = 1 {labels = 1 {name = 1, value = 2}, samples = 2 {
    raw_profile = 1, ID = 2}}."""
    out = b""
    for labels, profiles in series:
        body = b"".join(
            bytes_field(1, bytes_field(1, name.encode()) + bytes_field(2, value.encode()))
            for name, value in labels
        )
        body += b"".join(
            bytes_field(2, bytes_field(1, raw) + bytes_field(2, f"id-{index}".encode()))
            for index, raw in enumerate(profiles)
        )
        out += bytes_field(1, body)
    return out


def python_pprof(
    stacks: dict[tuple[str, ...], int] = PY_STACKS,
    sample_types: Sequence[ValueType] = (CPU,),
    time_nanos: int | None = None,
) -> bytes:
    """A pprof like py-spy's: one location per function, leaf first, cpu in nanoseconds."""
    names = sorted({frame for stack in stacks for frame in stack})
    ids = {name: index for index, name in enumerate(names, start=1)}
    period = 10_000_000
    s = StringTable()
    samples = [
        pb.Sample(
            location_id=[ids[frame] for frame in reversed(stack)],
            # Several sample types: the count of samples, then the CPU time.
            value=[value // period for _ in sample_types[:-1]] + [value],
        )
        for stack, value in stacks.items()
    ]
    message = pb.Profile(
        sample_type=[pb.ValueType(type=s(t.type), unit=s(t.unit)) for t in sample_types],
        sample=samples,
        location=[pb.Location(id=i, line=[pb.Line(function_id=i)]) for i in ids.values()],
        function=[
            pb.Function(id=i, name=s(name), filename=s("/app/main.py")) for name, i in ids.items()
        ],
        time_nanos=time.time_ns() - 10**10 if time_nanos is None else time_nanos,
        duration_nanos=10**10,
        period_type=pb.ValueType(type=s(CPU.type), unit=s(CPU.unit)),
        period=period,
    )
    message.string_table.extend(s.table())
    return pprof.encode(message)


def push(api: TestClient, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    response: httpx.Response = api.post(PUSH, content=body, headers=headers or PROTO)
    return response


def stacks_of(api: TestClient, profile_type: str, query: str = "") -> dict[str, int]:
    return folded(api, query, type=profile_type)


def expected(stacks: dict[tuple[str, ...], int]) -> dict[str, int]:
    return {";".join(stack): value for stack, value in stacks.items()}


def connect_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == code
    message: str = body["message"]
    return message


# --- Connect Push ------------------------------------------------------------------------------


def test_push_like_the_python_sdk(api: TestClient) -> None:
    body = gzip.compress(push_request([(SDK_LABELS, [python_pprof()])]))
    response = push(api, body, {**PROTO, "content-encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/proto"
    assert response.content == b""  # an empty PushResponse
    assert stacks_of(api, "process_cpu") == expected(PY_STACKS)
    selector = '{service_name="shop", otel_scope_name="com.grafana.pyroscope/python", env="prod"}'
    assert stacks_of(api, "process_cpu", selector) == expected(PY_STACKS)
    assert stacks_of(api, "process_cpu", '{service_name="other"}') == {}
    # Stored apart from the eBPF profiles.
    assert folded(api) == {}
    types = {item["name"]: item["unit"] for item in api.get("/api/v1/profile-types").json()}
    assert types == {"cpu": "nanoseconds", "net_wait": "nanoseconds", "process_cpu": "nanoseconds"}


def test_a_retried_push_is_stored_once(api: TestClient) -> None:
    body = push_request([(SDK_LABELS, [python_pprof()])])
    for _ in range(3):
        assert push(api, body).status_code == 200
    assert stacks_of(api, "process_cpu") == expected(PY_STACKS)


def test_push_with_several_series_and_gzipped_profiles(api: TestClient) -> None:
    other = [("__name__", "process_cpu"), ("service_name", "cart")]
    body = push_request(
        [
            (SDK_LABELS, [gzip.compress(python_pprof()), python_pprof()]),
            (other, [gzip.compress(python_pprof({("<module>", "checkout"): 5_000_000}))]),
        ]
    )
    assert push(api, body).status_code == 200
    doubled = {stack: 2 * value for stack, value in expected(PY_STACKS).items()}
    assert stacks_of(api, "process_cpu", '{service_name="shop"}') == doubled
    assert stacks_of(api, "process_cpu", '{service_name="cart"}') == {
        "<module>;checkout": 5_000_000
    }


def test_push_as_json(api: TestClient) -> None:
    raw = base64.b64encode(gzip.compress(python_pprof())).decode()
    payload = {
        "series": [
            {
                "labels": [{"name": name, "value": value} for name, value in SDK_LABELS],
                "samples": [{"rawProfile": raw, "ID": "abc"}],
            }
        ]
    }
    response = push(api, json.dumps(payload).encode(), {"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    assert stacks_of(api, "process_cpu") == expected(PY_STACKS)


def test_every_sample_type_becomes_a_profile_type(api: TestClient) -> None:
    # Go's CPU profiles carry samples/count and cpu/nanoseconds; cpu is the default (last).
    types = (ValueType("samples", "count"), CPU)
    labels = [("__name__", "process_cpu"), ("service_name", "api")]
    assert (
        push(api, push_request([(labels, [python_pprof(sample_types=types)])])).status_code == 200
    )
    assert stacks_of(api, "process_cpu") == expected(PY_STACKS)
    counts = {stack: value // 10_000_000 for stack, value in expected(PY_STACKS).items()}
    assert stacks_of(api, "process_cpu_samples") == counts
    listed = {item["name"]: item["unit"] for item in api.get("/api/v1/profile-types").json()}
    assert listed["process_cpu_samples"] == "count"


def restarted(store: ClickHouseStore) -> TestClient:
    """A fresh server on the same store: it knows only the built-in types, the store the rest."""
    return TestClient(create_app(store, max_ingest_bytes=MAX_INGEST_BYTES))


def test_sdk_types_are_queryable_after_a_restart(api: TestClient, store: ClickHouseStore) -> None:
    assert push(api, push_request([(SDK_LABELS, [python_pprof()])])).status_code == 200
    fresh = restarted(store)
    assert stacks_of(fresh, "process_cpu") == expected(PY_STACKS)
    response = fresh.get("/api/v1/export", params={"type": "heap"})
    assert response.status_code == 400
    assert "process_cpu" in response.json()["error"]


def test_each_app_knows_the_types_of_its_own_store(api: TestClient, chdb_client: Client) -> None:
    """Profile types belong to an app and its store, not to the process: a type pushed to
    one server is unknown (400) to another on another database."""
    assert push(api, push_request([(SDK_LABELS, [python_pprof()])])).status_code == 200
    database = f"t_{uuid.uuid4().hex}"
    try:
        other = TestClient(create_app(ClickHouseStore(chdb_client, database=database)))
        response = other.get("/api/v1/export", params={"type": "process_cpu"})
        assert response.status_code == 400, response.text
        assert "unknown profile type 'process_cpu'" in response.json()["error"]
    finally:
        chdb_client.command(f"DROP DATABASE IF EXISTS {database}")


def test_the_profile_types_list_comes_from_the_store(
    api: TestClient, store: ClickHouseStore
) -> None:
    assert push(api, push_request([(SDK_LABELS, [python_pprof()])])).status_code == 200
    listed = restarted(store).get("/api/v1/profile-types").json()
    assert [item["name"] for item in listed] == ["cpu", "net_wait", "process_cpu"]
    assert listed[2]["unit"] == "nanoseconds"


def units_listed(api: TestClient) -> dict[str, str]:
    return {item["name"]: item["unit"] for item in api.get("/api/v1/profile-types").json()}


def test_a_type_pushed_in_another_unit_gets_a_type_of_its_own(api: TestClient) -> None:
    """A name keeps its first unit; a push in another unit goes to <name>_<unit>, never
    mixed into the first and never refused."""
    labels = [("__name__", "custom"), ("service_name", "shop")]
    counts = (ValueType("hits", "count"),)
    seconds = (ValueType("cpu", "seconds"),)
    for types in (counts, seconds):
        body = push_request([(labels, [python_pprof(sample_types=types)])])
        assert push(api, body).status_code == 200
    assert stacks_of(api, "custom") == expected(PY_STACKS)
    assert stacks_of(api, "custom_seconds") == expected(PY_STACKS)
    assert {"custom": "count", "custom_seconds": "seconds"}.items() <= units_listed(api).items()


def test_process_cpu_cannot_be_taken_in_another_unit(api: TestClient) -> None:
    """Issue 16: an ingest token registered process_cpu in bytes first, and every SDK's
    CPU push was refused from then on."""
    in_bytes = push_request([(SDK_LABELS, [python_pprof(sample_types=[ValueType("x", "bytes")])])])
    assert push(api, in_bytes).status_code == 200
    assert push(api, push_request([(SDK_LABELS, [python_pprof()])])).status_code == 200
    assert stacks_of(api, "process_cpu") == expected(PY_STACKS)
    listed = units_listed(api)
    assert (listed["process_cpu"], listed["process_cpu_bytes"]) == ("nanoseconds", "bytes")


def test_one_push_of_a_name_in_two_units_keeps_them_apart(api: TestClient) -> None:
    custom = [("__name__", "custom"), ("service_name", "shop")]
    bytes_type = [ValueType("space", "bytes")]
    body = push_request(
        [(custom, [python_pprof()]), (custom, [python_pprof(sample_types=bytes_type)])]
    )
    assert push(api, body).status_code == 200
    assert {"custom": "nanoseconds", "custom_bytes": "bytes"}.items() <= units_listed(api).items()
    assert stacks_of(api, "custom_bytes") == expected(PY_STACKS)


def test_types_recorded_before_are_read_as_stored(store: ClickHouseStore) -> None:
    """The profile_types table is unchanged: rows recorded by an older server still list,
    and pushes of their names in their units go to them."""
    store.profile_types([ProfileType("old_type", "bytes", "recorded before")])
    api = TestClient(create_app(store, max_ingest_bytes=MAX_INGEST_BYTES))
    assert units_listed(api)["old_type"] == "bytes"
    labels = [("__name__", "old_type"), ("service_name", "shop")]
    body = push_request([(labels, [python_pprof(sample_types=[ValueType("s", "bytes")])])])
    assert push(api, body).status_code == 200
    assert stacks_of(api, "old_type") == expected(PY_STACKS)


def test_a_name_recorded_in_a_wrong_unit_before_does_not_refuse_sdks(
    store: ClickHouseStore,
) -> None:
    """A row left by an older server (process_cpu in bytes) keeps its unit, since its
    samples are in it; SDK pushes go to process_cpu_nanoseconds instead of a 400."""
    store.profile_types([ProfileType("process_cpu", "bytes", "taken first")])
    api = TestClient(create_app(store, max_ingest_bytes=MAX_INGEST_BYTES))
    assert push(api, push_request([(SDK_LABELS, [python_pprof()])])).status_code == 200
    assert stacks_of(api, "process_cpu_nanoseconds") == expected(PY_STACKS)


def test_the_number_of_runtime_types_is_capped(store: ClickHouseStore) -> None:
    limits = IngestLimits(max_profile_types=2)
    api = TestClient(create_app(store, max_ingest_bytes=MAX_INGEST_BYTES, ingest_limits=limits))
    two = (ValueType("samples", "count"), CPU)  # process_cpu and process_cpu_samples
    assert (
        push(api, push_request([(SDK_LABELS, [python_pprof(sample_types=two)])])).status_code == 200
    )
    again = push_request([(SDK_LABELS, [python_pprof(sample_types=two, time_nanos=5)])])
    assert push(api, again).status_code == 200  # types it has: no new one
    labels = [("__name__", "third"), ("service_name", "shop")]
    message = connect_error(
        push(api, push_request([(labels, [python_pprof()])])), 400, "invalid_argument"
    )
    assert "more than 2 profile types" in message and "PODFLAME_MAX_PROFILE_TYPES" in message
    assert "third" not in units_listed(api)


def test_builtin_type_names_are_reserved(api: TestClient) -> None:
    labels = [("__name__", "cpu"), ("service_name", "shop")]
    message = connect_error(
        push(api, push_request([(labels, [python_pprof()])])), 400, "invalid_argument"
    )
    assert "reserved" in message
    assert folded(api) == {}


def broken_pprof(location: int = 1, function: int = 1, name: int = 3, unit: int = 2) -> bytes:
    """One sample of one frame, with the given ids and string indexes (ok: 1, 1, 3, 2)."""
    message = pb.Profile(
        sample_type=[pb.ValueType(type=1, unit=unit)],
        sample=[pb.Sample(location_id=[location], value=[1])],
        location=[pb.Location(id=1, line=[pb.Line(function_id=function)])],
        function=[pb.Function(id=1, name=name)],
        string_table=[b"", b"cpu", b"nanoseconds", b"f"],
        time_nanos=time.time_ns() - 10**10,
    )
    return pprof.encode(message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (push_request([(SDK_LABELS, [broken_pprof()])]), ""),  # the same, unbroken
        (b"\x0a\x05ab", "PushRequest"),  # a series longer than the body
        (b"\xff" * 20, "PushRequest"),
        (push_request([([("service_name", "x")], [python_pprof()])]), "__name__"),
        (push_request([(SDK_LABELS, [b"\x0a\x05ab"])]), "invalid pprof: malformed protobuf"),
        (push_request([(SDK_LABELS, [b"\x0b\x0c"])]), "invalid pprof: no sample types"),
        (push_request([(SDK_LABELS, [broken_pprof(location=9)])]), "unknown location 9"),
        (push_request([(SDK_LABELS, [broken_pprof(function=7)])]), "unknown function"),
        (push_request([(SDK_LABELS, [broken_pprof(name=99)])]), "string index 99"),
        (push_request([(SDK_LABELS, [broken_pprof(unit=-3)])]), "string index -3"),
        (push_request([(SDK_LABELS, [b"\x1f\x8bnot gzip"])]), "gzip"),
        (push_request([(SDK_LABELS, [python_pprof(time_nanos=-5)])]), "negative"),
        (push_request([(SDK_LABELS, [python_pprof(time_nanos=2**62)])]), "out of range"),
    ],
)
def test_malformed_pushes_are_connect_errors(api: TestClient, body: bytes, message: str) -> None:
    if not message:
        assert push(api, body).status_code == 200
        return
    assert message in connect_error(push(api, body), 400, "invalid_argument")


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"series": 5}', b'{"series": [{"samples": [{"rawProfile": "!!!"}]}]}'],
)
def test_malformed_json_pushes_are_connect_errors(api: TestClient, body: bytes) -> None:
    connect_error(push(api, body, {"content-type": "application/json"}), 400, "invalid_argument")


def test_push_content_type_and_encoding_are_checked(api: TestClient) -> None:
    body = push_request([(SDK_LABELS, [python_pprof()])])
    connect_error(push(api, body, {"content-type": "text/plain"}), 415, "unimplemented")
    headers = {**PROTO, "content-encoding": "br"}
    connect_error(push(api, body, headers), 415, "unimplemented")
    headers = {**PROTO, "content-encoding": "gzip"}
    connect_error(push(api, b"not gzip", headers), 400, "invalid_argument")


def test_gzip_bombs_are_413(api: TestClient) -> None:
    bomb = gzip.compress(b"\x00" * (20 * MAX_INGEST_BYTES))
    headers = {**PROTO, "content-encoding": "gzip"}
    connect_error(push(api, bomb, headers), 413, "resource_exhausted")
    # Inside the request: each raw profile is small, together they are too much.
    inner = gzip.compress(b"\x48\x01" * (MAX_INGEST_BYTES // 4))  # time_nanos = 1, repeated
    body = push_request([(SDK_LABELS, [inner] * 4)])
    assert len(body) < MAX_INGEST_BYTES // 10
    connect_error(push(api, body), 413, "resource_exhausted")


# --- what a push may expand to -----------------------------------------------------------------


def expanding_pprof(lines: int = 3000, references: int = 3000) -> bytes:
    """Issue 16's attack: one location of 3,000 inlined lines, 3,000 times in one sample,
    9,000,000 frames from about 150 bytes of gzip-compressed pprof."""
    message = pb.Profile(
        sample_type=[pb.ValueType(type=1, unit=2)],
        sample=[pb.Sample(location_id=[1] * references, value=[10_000_000])],
        location=[pb.Location(id=1, line=[pb.Line(function_id=1)] * lines)],
        function=[pb.Function(id=1, name=3)],
        string_table=[b"", b"cpu", b"nanoseconds", b"f"],
        time_nanos=time.time_ns() - 10**10,
        duration_nanos=10**10,
    )
    return gzip.compress(pprof.encode(message), 9)


def limited_api(store: ClickHouseStore, **limits: int) -> TestClient:
    ingest_limits = IngestLimits(**limits)
    return TestClient(
        create_app(store, max_ingest_bytes=MAX_INGEST_BYTES, ingest_limits=ingest_limits)
    )


def test_the_expansion_attack_is_cut_within_a_second(api: TestClient) -> None:
    """Issue 16: a push of about 200 bytes cost 13 s of CPU and stored a stack of 9,000,000
    frames. Deep stacks keep their leaf end, under a [truncated] root frame."""
    body = push_request(
        [([("__name__", "process_cpu"), ("service_name", "x")], [expanding_pprof()])]
    )
    assert len(body) < 256
    # A first push creates the profile types table (1.5 s in chDB): not the attack's cost.
    warm_up = [("__name__", "other"), ("service_name", "y")]
    assert push(api, push_request([(warm_up, [python_pprof()])])).status_code == 200
    started = time.monotonic()
    assert push(api, body).status_code == 200
    assert time.monotonic() - started < 1.0
    depth = IngestLimits().max_stack_frames
    assert stacks_of(api, "process_cpu") == {
        ";".join([TRUNCATED_FRAME] + ["f"] * (depth - 1)): 10_000_000
    }


# The push below, one limit at a time set one under what it holds: PY_STACKS' 3 samples
# of 4 + 3 + 2 frames, in 2 sample types (6 stacks, 18 frames), 4 locations with a line
# each, 4 functions, 10 strings; 9 location ids and 6 values in the samples.
@pytest.mark.parametrize(
    ("limits", "setting"),
    [
        ({"max_frames_per_push": 17}, "max_frames_per_push"),
        ({"max_stacks_per_push": 5}, "max_stacks_per_push"),
        ({"max_pprof_locations": 3}, "max_pprof_locations"),
        ({"max_pprof_lines": 3}, "max_pprof_lines"),
        ({"max_pprof_functions": 3}, "max_pprof_functions"),
        ({"max_pprof_strings": 9}, "max_pprof_strings"),
        ({"max_pprof_sample_entries": 14}, "max_pprof_sample_entries"),  # 9 ids, 6 values
    ],
)
def test_a_push_over_a_limit_is_413_naming_it(
    store: ClickHouseStore, limits: dict[str, int], setting: str
) -> None:
    api = limited_api(store, **limits)
    two = (ValueType("samples", "count"), CPU)
    body = push_request([(SDK_LABELS, [python_pprof(sample_types=two)])])
    message = connect_error(push(api, body), 413, "resource_exhausted")
    assert f"PODFLAME_{setting.upper()}" in message and f"--{setting.replace('_', '-')}" in message
    assert "process_cpu" not in units_listed(api)
    allowed = limited_api(
        store, **{setting: limits[setting] + 1 if "pprof" not in setting else 100}
    )
    assert push(allowed, body).status_code == 200


def test_legacy_uploads_are_bounded_too(store: ClickHouseStore) -> None:
    api = limited_api(store, max_stack_frames=3, max_frames_per_push=5)
    assert legacy(api, b"a;b;c;d;e 2\n", name="shop").status_code == 200
    assert stacks_of(api, "process_cpu") == {f"{TRUNCATED_FRAME};d;e": 20_000_000}
    response = legacy(api, b"a;b;c 2\nx;y;z 1\n", name="shop")
    assert response.status_code == 413, response.text
    assert response.json()["limit"] == "max_frames_per_push"
    response = legacy(api, expanding_pprof(), name="shop", format="pprof")
    assert response.status_code == 200, response.text


# --- legacy /ingest ----------------------------------------------------------------------------


def legacy(api: TestClient, body: bytes, **params: str) -> httpx.Response:
    now = int(time.time())
    query = {"from": str(now - 10), "until": str(now), **params}
    response: httpx.Response = api.post("/ingest", params=query, content=body)
    return response


def test_legacy_folded_counts_samples_at_the_sample_rate(api: TestClient) -> None:
    body = b"main;work;burn 12\nmain;work 3\n\nmain;work 1\n"
    name = "shop.cpu{env=prod,region=eu-1,k8s.pod=p1}"
    response = legacy(api, body, name=name, sampleRate="100", spyName="pyspy", units="samples")
    assert response.status_code == 200, response.text
    # 100 Hz: each sample is 10 ms of CPU.
    result = {"main;work;burn": 120_000_000, "main;work": 40_000_000}
    assert (
        stacks_of(api, "process_cpu", '{service_name="shop", env="prod", k8s_pod="p1"}') == result
    )
    response = legacy(api, b"main 5\n", name="shop{}", sampleRate="19")
    assert response.status_code == 200, response.text
    assert stacks_of(api, "process_cpu", '{service_name="shop", env=""}') == {"main": 263_157_895}


def test_legacy_folded_is_stored_once_per_upload(api: TestClient) -> None:
    now = int(time.time())
    for _ in range(2):
        response = legacy(api, b"a;b 1\n", name="shop", **{"from": str(now - 5), "until": str(now)})
        assert response.status_code == 200, response.text
    assert stacks_of(api, "process_cpu") == {"a;b": 10_000_000}


def test_legacy_pprof_plain_gzip_and_multipart(api: TestClient) -> None:
    raw = python_pprof()
    assert legacy(api, raw, name="shop.cpu", format="pprof").status_code == 200
    assert legacy(api, gzip.compress(raw), name="shop.cpu", format="pprof").status_code == 200
    boundary = "podflame-boundary"
    multipart = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="profile"; filename="profile.pprof"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + gzip.compress(raw)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    now = int(time.time())
    response = api.post(
        "/ingest",
        params={"name": "shop.cpu", "from": str(now - 10), "until": str(now)},
        content=multipart,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 200, response.text
    tripled = {stack: 3 * value for stack, value in expected(PY_STACKS).items()}
    assert stacks_of(api, "process_cpu", '{service_name="shop"}') == tripled


@pytest.mark.parametrize(
    ("body", "params", "status"),
    [
        (b"main;work twelve\n", {"name": "shop"}, 400),
        (b"main;work 1" + b"9" * 30 + b"\n", {"name": "shop"}, 400),
        (b" 12\n", {"name": "shop"}, 400),
        (b"main 1\n", {"name": "shop{env}"}, 400),
        (b"main 1\n", {"name": "{a=b}"}, 400),
        (b"main 1\n", {"name": "shop", "format": "trie"}, 400),
        (b"main 1\n", {"name": "shop", "sampleRate": "0"}, 422),
        (b"main 1\n", {"name": "shop", "from": "inf"}, 422),
        (b"main 1\n", {}, 422),
        (b"\x0b", {"name": "shop", "format": "pprof"}, 400),
        (b"--x\r\n\r\n--x--", {"name": "shop", "format": "pprof"}, 400),
    ],
)
def test_malformed_legacy_uploads_are_4xx_json(
    api: TestClient, body: bytes, params: dict[str, str], status: int
) -> None:
    response = legacy(api, body, **params)
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_legacy_bad_multipart_is_400(api: TestClient) -> None:
    response = api.post(
        "/ingest",
        params={"name": "shop"},
        content=b"--b\r\nContent-Disposition: form-data; name=other\r\n\r\nx\r\n--b--\r\n",
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 400, response.text
    assert "profile" in response.json()["error"]


def test_legacy_gzip_bombs_are_413(api: TestClient) -> None:
    bomb = gzip.compress(b"\x00" * (20 * MAX_INGEST_BYTES))
    response = api.post(
        "/ingest", params={"name": "shop"}, content=bomb, headers={"content-encoding": "gzip"}
    )
    assert response.status_code == 413, response.text
    response = legacy(api, bomb, name="shop", format="pprof")
    assert response.status_code == 413, response.text
    assert response.json()["error"]
