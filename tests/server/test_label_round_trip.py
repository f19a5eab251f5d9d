"""Hostile label values (quotes, backslashes, SQL, line breaks, NUL, any Unicode) and frame
names, end to end on the real app and chDB: ingested, listed back exactly, selected
exactly with every quoting of the selector language (and a regex escaping them all),
and exported exactly as folded text, pprof and speedscope.

Each value travels with decoys one character away (a backslash after, a quote before),
so a selector that matched too much (an unescaped regex, a quote that ended early, a
LIKE) or too little would show.
"""

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from podflame.model import pprof
from podflame.server.app import create_app
from podflame.server.clickhouse_store import ClickHouseStore
from tests.server.conftest import MAX_INGEST_BYTES, batch
from tests.server.test_selector_properties import (
    quote_double,
    quote_escaped,
    quote_raw,
    quote_single,
)

Quoter = Callable[[str], str]
QUOTERS = [quote_double, quote_single, quote_escaped, quote_raw]
HOSTILE = [
    "'",
    '"',
    "\\",
    "\\\\",
    "`",
    "\n",
    "\r\n",
    "\x00",
    "' OR 1=1 --",
    '"); DROP TABLE samples; --',
    '{pod=~".*"}',
    "%",
    "_",
    ".*",
    "a|b",
    "\u00e9t\u00e9",
    "\u65e5\u672c",
    "\U0001f525",
    "\u202eevil",
    "e\u0301",
    "$(rm -rf /)",
    "\\x41",
    "]]>",
    "\t",
]
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
VALUES = (
    st.lists(st.sampled_from(HOSTILE) | TEXT, min_size=1, max_size=4)
    .map("".join)
    .filter(lambda value: 0 < len(value) <= 4096)
)
# Not empty: pprof reads a function without a name as an unknown one.
FRAMES = st.lists(
    st.sampled_from([*HOSTILE, ";", "a;b", "main"]) | TEXT.filter(bool), min_size=1, max_size=5
)


def re2_literal(value: str) -> str:
    """A regex matching exactly `value`: every character as RE2's \\x{HEX} escape."""
    return "".join(f"\\x{{{ord(char):x}}}" for char in value)


def folded_line(frames: list[str]) -> str:
    """How the folded export writes a stack: line breaks escaped (the format has no other
    way to keep one stack on one line)."""
    return ";".join(frames).replace("\n", "\\n").replace("\r", "\\r")


@pytest.fixture
def api(store: ClickHouseStore) -> TestClient:
    return TestClient(create_app(store, max_ingest_bytes=MAX_INGEST_BYTES))


def get(api: TestClient, path: str, **params: str) -> Any:
    response = api.get(path, params={"from": "now-1h", **params})
    assert response.status_code == 200, response.text
    return response


def test_hostile_values_round_trip(api: TestClient) -> None:
    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(value=VALUES, frames=FRAMES)
    @example(value="' OR ''='", frames=["main", 'it\'s "quoted"', "back\\slash"])
    @example(value='\\"\n\x00\u00e9', frames=["a;b", "line\nbreak"])
    def round_trip(value: str, frames: list[str]) -> None:
        case = uuid.uuid4().hex  # this example's samples, apart from the others'
        decoys = [value + "\\", "'" + value]
        series = [
            ({"case": case, "tenant": value, "pod": value}, [(0, 10)]),
            *(({"case": case, "tenant": d, "pod": d}, [(1, 1)]) for d in decoys),
        ]
        response = api.post("/api/v1/ingest", json=batch([frames, ["decoy"]], series))
        assert response.status_code == 200, response.text
        in_case = f'{{case="{case}"}}'
        for name in ("tenant", "pod"):  # a map label and a column label
            listed = get(api, f"/api/v1/labels/{name}/values", query=in_case).json()["values"]
            assert sorted(listed) == sorted([value, *decoys])
            equal = [f'{{case="{case}", {name}={quote(value)}}}' for quote in QUOTERS]
            regex = [
                f'{{case="{case}", {name}=~{quote(re2_literal(value))}}}'
                for quote in (quote_double, quote_raw)
            ]
            for query in equal + regex:
                selected(api, query, frames)
            # Every quoting parses to the same matcher (each selected exactly the stack
            # above): the other views are checked once per kind of matcher.
            for query in (equal[0], regex[0]):
                rendered(api, query, frames)
            others = get(
                api, "/api/v1/export", query=f"{{case='{case}', {name}!={quote_double(value)}}}"
            )
            assert others.text == "decoy 2\n"

    round_trip()


def selected(api: TestClient, query: str, frames: list[str]) -> None:
    """The selection holds exactly the one stack."""
    folded = get(api, "/api/v1/export", query=query).text
    assert folded == f"{folded_line(frames)} 10\n", query


def rendered(api: TestClient, query: str, frames: list[str]) -> None:
    """The selection's one stack, exactly, in every other export format and view."""
    data = get(api, "/api/v1/export", query=query, format="pprof").content
    profile = pprof.decode(pprof.gunzip(data, MAX_INGEST_BYTES), MAX_INGEST_BYTES)
    assert pprof.folded_totals(profile, 0) == {tuple(frames): 10}
    document = json.loads(get(api, "/api/v1/export", query=query, format="speedscope").content)
    names = [frame["name"] for frame in document["shared"]["frames"]]
    (sample,) = document["profiles"][0]["samples"]
    assert [names[i] for i in sample] == frames
    graph = get(api, "/api/v1/flamegraph", query=query).json()
    assert set(frames) <= set(graph["names"]) and graph["total"] == 10
    top = {item["name"] for item in get(api, "/api/v1/top", query=query).json()["functions"]}
    assert top == set(frames)
