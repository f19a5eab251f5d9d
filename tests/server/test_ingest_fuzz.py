"""Every ingest endpoint under malformed input: a 4xx naming the problem, never a 5xx, and
a rejected request leaves the store exactly as it was (no partial write).

The real app on the real chDB store. Bodies: arbitrary bytes and JSON, valid batches
with one field broken at a time, PushRequests with hostile labels and damaged pprofs,
folded text with bad lines, multipart uploads, and gzip bombs (the decompressed size is
capped at the body limit). The schema-driven requests are in test_schemathesis.py,
which also checks that a rejected ingest writes nothing.
"""

import copy
import gzip
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from podflame.model import pprof
from podflame.model import pprof_pb2 as pb
from podflame.server.app import create_app
from podflame.server.body import MAX_GZIP_MEMBERS
from podflame.server.clickhouse_store import ClickHouseStore
from tests.server.conftest import MAX_INGEST_BYTES, batch
from tests.server.storeprint import StoreWatch
from tests.server.test_pyroscope import PUSH, SDK_LABELS, push_request, python_pprof

SCALES = [1, pytest.param(10, marks=pytest.mark.soak, id="soak")]
INGEST = "/api/v1/ingest"
LEGACY = "/ingest"


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )


class Target:
    """The app, and the store's fingerprint around each request."""

    def __init__(self, api: TestClient, client: Client, database: str) -> None:
        self.api = api
        self.store = StoreWatch(client, database)
        self.statuses: dict[int, int] = {}

    def post(self, path: str, *, connect: bool = False, **request: Any) -> httpx.Response:
        self.store.before()
        response = self.api.post(path, **request)
        status = response.status_code
        self.statuses[status] = self.statuses.get(status, 0) + 1
        assert status < 500, (status, response.text)
        if status >= 400:
            body = response.json()
            if connect:  # Connect's error shape, which Pyroscope SDKs read
                assert isinstance(body["code"], str) and body["message"], body
            else:
                assert isinstance(body["error"], str) and body["error"], body
            assert self.store.rejected_wrote_nothing(), (status, body)
        else:
            self.store.accepted()
        return response

    def rejected_and_accepted(self) -> None:
        """The generator reached both sides: some requests stored, some were refused."""
        assert any(s < 300 for s in self.statuses), self.statuses
        assert any(400 <= s < 500 for s in self.statuses), self.statuses


@pytest.fixture
def target(store: ClickHouseStore, chdb_client: Client) -> Iterator[Target]:
    api = TestClient(create_app(store, max_ingest_bytes=MAX_INGEST_BYTES))
    seeded = Target(api, chdb_client, store.database)
    # Some data of each kind, so a partial write would have something to join.
    assert seeded.post(INGEST, json=a_batch()).status_code == 200
    push = push_request([(SDK_LABELS, [python_pprof()])])
    headers = {"content-type": "application/proto"}
    assert seeded.post(PUSH, content=push, headers=headers).status_code == 200
    yield seeded


def a_batch(labels: dict[str, str] | None = None) -> dict[str, Any]:
    stacks = [["main", "serve", "parse"], ["main", "gc_[k]"]]
    series = [
        (labels or {"namespace": "shop", "pod": "api-1", "pid": "42"}, [(0, 5), (1, 3)]),
        ({"namespace": "bank", "pod": "vault-1"}, [(1, 7)]),
    ]
    return batch(stacks, series)


# --- hostile values ------------------------------------------------------------------------

WEIRD = (
    st.sampled_from(
        [
            None,
            True,
            False,
            -1,
            0,
            1,
            2**31,
            2**63 - 1,
            2**63,
            2**64,
            -(2**63) - 1,
            1e308,
            0.5,
            float("-inf"),
            "",
            "x" * 5000,
            "\u0000",
            "\ud7ff\ue000",
            "pid",
            [],
            [[]],
            {},
            {"": ""},
            [0] * 300,
            "1" * 400,
        ]
    )
    | st.text(max_size=30)
    | st.integers()
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
LABEL_NAMES = st.sampled_from(["pid", "namespace", "pod", "comm", "node", "x", "__name__"])
LABEL_VALUES = st.sampled_from(["42", "abc", "-1", "99999999999", "", "shop", "a\nb"]) | st.text(
    max_size=20
)


def paths(document: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path into a JSON document."""
    yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from paths(value, (*prefix, index))


def mutate(document: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    """`document` with the thing at `path` replaced, deleted, or given an extra key."""
    if not path:
        return value
    out = copy.deepcopy(document)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "extra" and isinstance(parent, dict):
        parent["unexpected_" + str(last)] = value
    else:
        parent[last] = value
    return out


# --- /api/v1/ingest ------------------------------------------------------------------------

ENCODINGS = st.sampled_from(
    [None, "gzip", "x-gzip", "GZIP", "br", "gzip, gzip", "identity", "\x7f"]
)


@pytest.mark.parametrize("scale", SCALES)
def test_agent_ingest_with_broken_batches(target: Target, scale: int) -> None:
    """A valid batch with one to three things broken: values, keys, types, references."""

    @fuzz_settings(400 * scale)
    @given(data=st.data())
    def broken(data: st.DataObject) -> None:
        document = a_batch(data.draw(st.dictionaries(LABEL_NAMES, LABEL_VALUES, max_size=4)))
        for _ in range(data.draw(st.integers(0, 3))):
            path = data.draw(st.sampled_from(list(paths(document))))
            action = data.draw(st.sampled_from(["replace", "delete", "extra"]))
            if action == "delete" and not path:
                continue
            document = mutate(document, path, action, data.draw(WEIRD))
        body = json.dumps(document).encode()
        encoding = data.draw(ENCODINGS)
        headers = {"content-type": "application/json"}
        if encoding is not None:
            headers["content-encoding"] = encoding
            if "gzip" in encoding.lower():
                body = gzip.compress(body)
        target.post(INGEST, content=body, headers=headers)

    broken()
    target.rejected_and_accepted()


@pytest.mark.parametrize("scale", SCALES)
def test_agent_ingest_with_arbitrary_bytes_and_json(target: Target, scale: int) -> None:
    @fuzz_settings(300 * scale)
    @given(
        body=st.binary(max_size=300) | JSON.map(lambda value: json.dumps(value).encode()),
        compress=st.booleans(),
    )
    def arbitrary(body: bytes, compress: bool) -> None:
        headers = {"content-encoding": "gzip"} if compress else {}
        response = target.post(
            INGEST, content=gzip.compress(body) if compress else body, headers=headers
        )
        assert response.status_code >= 400  # none of these is a batch

    arbitrary()


def gzip_bombs() -> list[tuple[str, bytes]]:
    limit = MAX_INGEST_BYTES
    zeros = gzip.compress(b"\0" * (limit + 1), 9)
    spaces = gzip.compress(b" " * (64 * limit), 9)  # 64 MiB from about 64 KiB
    valid = gzip.compress(json.dumps(a_batch()).encode())
    return [
        ("just over the limit", zeros),
        ("64 times the limit", spaces),
        ("a gzip inside a gzip", gzip.compress(spaces)),
        ("truncated", valid[: len(valid) // 2]),
        ("trailing garbage after the member", valid + b"\x00garbage"),
        ("a second member", valid + gzip.compress(b"more")),
        ("not gzip at all", b"{}"),
        ("empty", b""),
    ]


@pytest.mark.parametrize(("name", "body"), gzip_bombs(), ids=[n for n, _ in gzip_bombs()])
@pytest.mark.parametrize("path", [INGEST, PUSH, LEGACY])
def test_gzip_bombs_and_broken_gzip_are_refused(
    target: Target, path: str, name: str, body: bytes
) -> None:
    headers = {"content-encoding": "gzip", "content-type": "application/proto"}
    params = {"name": "app.cpu"} if path == LEGACY else {}
    response = target.post(path, content=body, headers=headers, params=params, connect=path == PUSH)
    assert 400 <= response.status_code < 500, (name, response.text)
    if "limit" in name:
        assert response.status_code == 413


# --- Pyroscope Push ------------------------------------------------------------------------


def damaged(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in flips:
        if out:
            out[position % len(out)] = value
    return bytes(out)


def overflowing_pprof() -> bytes:
    """Two samples of one stack whose sum is past Int64: each fits, the total does not."""
    profile = pprof.decode(python_pprof(), MAX_INGEST_BYTES)
    first = profile.message.sample[0]
    big = [2**62 + 1] * len(first.value)
    twice = [pb.Sample(location_id=first.location_id, value=big)] * 2
    del profile.message.sample[:]
    profile.message.sample.extend(twice)
    return pprof.encode(profile.message)


PROFILES = st.one_of(
    st.just(python_pprof()),
    st.builds(
        damaged,
        st.just(python_pprof()),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    ),
    st.binary(max_size=100),
    st.just(gzip.compress(b"\0" * (4 * MAX_INGEST_BYTES))),  # a bomb inside the message
    st.just(python_pprof(time_nanos=2**62)),
    st.just(overflowing_pprof()),
    st.builds(lambda v: python_pprof(stacks={("main",): v}), st.integers(-(2**63), 2**63 - 1)),
)
SERIES = st.tuples(
    st.lists(st.tuples(LABEL_NAMES | st.text(max_size=8), LABEL_VALUES), max_size=4).map(
        lambda extra: [*SDK_LABELS, *extra]
    ),
    st.lists(PROFILES, max_size=2),
)


@pytest.mark.parametrize("scale", SCALES)
def test_push_with_hostile_series(target: Target, scale: int) -> None:
    """Several series, some good and some not: stored all together or not at all."""

    @fuzz_settings(300 * scale)
    @given(series=st.lists(SERIES, min_size=1, max_size=3), compress=st.booleans())
    def pushes(series: list[tuple[list[tuple[str, str]], list[bytes]]], compress: bool) -> None:
        body = push_request(series)
        headers = {"content-type": "application/proto"}
        if compress:
            body, headers["content-encoding"] = gzip.compress(body), "gzip"
        target.post(PUSH, content=body, headers=headers, connect=True)

    pushes()
    target.rejected_and_accepted()


@pytest.mark.parametrize("scale", SCALES)
def test_push_with_arbitrary_bytes_and_json(target: Target, scale: int) -> None:
    @fuzz_settings(300 * scale)
    @given(
        body=st.binary(max_size=300) | JSON.map(lambda value: json.dumps(value).encode()),
        media=st.sampled_from(["application/proto", "application/json", "text/plain", ""]),
    )
    def arbitrary(body: bytes, media: str) -> None:
        target.post(PUSH, content=body, headers={"content-type": media}, connect=True)

    arbitrary()


# --- legacy /ingest ------------------------------------------------------------------------

FOLDED_LINES = st.sampled_from(
    [
        "main;work 10",
        "main;work;burn 3",
        "main 0",
        "a;b -5",
        "a;b 1e3",
        "a;b",
        " 5",
        ";;; 4",
        "a;b 99999999999999999999",
        "a;b \u0661\u0662",
        "x" * 5000 + " 1",
        "",
        "   ",
    ]
) | st.text(max_size=40)
NAMES = st.sampled_from(
    [
        "app",
        "app.cpu",
        "app.alloc_space{env=prod}",
        "app{pid=abc}",
        "app{pid=7}",
        "{x=1}",
        "app{bad}",
        "app.cpu{a=b,c}",
        ".cpu",
        "app{" + "k=v," * 200 + "}",
        "shop.wall",
    ]
) | st.text(min_size=1, max_size=30)


@pytest.mark.parametrize("scale", SCALES)
def test_legacy_ingest_with_hostile_uploads(target: Target, scale: int) -> None:
    @fuzz_settings(400 * scale)
    @given(
        name=NAMES,
        lines=st.lists(FOLDED_LINES, max_size=6),
        upload=st.sampled_from(["folded", "pprof", "multipart", "junk-format"]),
        profile=PROFILES,
        params=st.dictionaries(
            st.sampled_from(["from", "until", "sampleRate", "units", "spyName"]),
            st.sampled_from(
                [
                    "0",
                    "-1",
                    "1e20",
                    "abc",
                    "",
                    str(int(time.time())),
                    "samples",
                    "bytes",
                    "UPPER",
                    "100",
                ]
            ),
            max_size=3,
        ),
    )
    def uploads(
        name: str,
        lines: list[str],
        upload: str,
        profile: bytes,
        params: dict[str, str],
    ) -> None:
        query = {"name": name, **params}
        if upload == "multipart":
            files = {"profile": ("profile.pprof", profile, "application/octet-stream")}
            target.post(LEGACY, params=query, files=files)
            return
        query["format"] = "pprof" if upload == "pprof" else upload
        body = profile if upload == "pprof" else "\n".join(lines).encode()
        target.post(LEGACY, params=query, content=body)

    uploads()
    target.rejected_and_accepted()


def test_gzip_members_are_read_one_after_another(target: Target) -> None:
    """RFC 1952: a gzip file may be several members; their contents concatenate."""
    text = json.dumps(a_batch()).encode()
    body = gzip.compress(text[:100]) + gzip.compress(text[100:])
    response = target.post(INGEST, content=body, headers={"content-encoding": "gzip"})
    assert response.status_code == 200, response.text


def test_many_tiny_gzip_members_are_answered_within_a_second(store: ClickHouseStore) -> None:
    """Issue 16: 200,000 one-byte members (4 MB) took 53 s, each member copying the rest."""
    api = TestClient(create_app(store, max_ingest_bytes=8 * 1024 * 1024))
    body = gzip.compress(b"x") * 200_000
    for path in (INGEST, PUSH, LEGACY):
        started = time.monotonic()
        response = api.post(
            path,
            content=body,
            headers={"content-encoding": "gzip", "content-type": "application/proto"},
            params={"name": "app.cpu"} if path == LEGACY else {},
        )
        assert time.monotonic() - started < 1.0
        assert response.status_code == 400, response.text
        assert f"more than {MAX_GZIP_MEMBERS} gzip members" in response.text


def test_a_body_of_as_many_gzip_members_as_allowed_is_read(target: Target) -> None:
    text = json.dumps(a_batch()).encode()
    cuts = [len(text) * i // MAX_GZIP_MEMBERS for i in range(MAX_GZIP_MEMBERS + 1)]
    body = b"".join(gzip.compress(text[a:b]) for a, b in itertools.pairwise(cuts))
    response = target.post(INGEST, content=body, headers={"content-encoding": "gzip"})
    assert response.status_code == 200, response.text


def test_legacy_multipart_without_a_profile_part_or_boundary(target: Target) -> None:
    for content_type, body in [
        ("multipart/form-data", b"--x\r\n\r\n--x--"),
        ("multipart/form-data; boundary=x", b"not multipart"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="other"\r\n\r\nhello\r\n--x--\r\n',
        ),
    ]:
        response = target.post(
            LEGACY, params={"name": "app"}, content=body, headers={"content-type": content_type}
        )
        assert response.status_code == 400, response.text


def test_a_push_with_one_bad_series_stores_none_of_them(target: Target) -> None:
    """Found by the fuzzing: the good series was stored before the bad one was refused."""
    good = (SDK_LABELS, [python_pprof()])
    bad_pid = ([*SDK_LABELS, ("pid", "abc")], [python_pprof()])
    other_type = ([*SDK_LABELS, ("__name__", "other_cpu")], [python_pprof()])
    overflow = (SDK_LABELS, [overflowing_pprof()])
    for series in ([good, bad_pid], [other_type, bad_pid], [good, overflow]):
        response = target.post(
            PUSH,
            content=push_request(series),
            headers={"content-type": "application/proto"},
            connect=True,
        )
        assert response.status_code == 400, response.text
    names = {item["name"] for item in target.api.get("/api/v1/profile-types").json()}
    assert "other_cpu" not in names


def test_agent_batch_ids_are_not_a_way_to_overwrite(target: Target) -> None:
    """A batch refused for its content does not take its batch_id: sent again, fixed, it is
    stored."""
    document = a_batch({"pid": "not-a-pid"})
    assert target.post(INGEST, json=document).status_code == 400
    document["series"][0]["labels"]["pid"] = "7"
    assert target.post(INGEST, json=document).status_code == 200
