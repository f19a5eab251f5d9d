"""GET /pyroscope/render and /pyroscope/render-diff: flamebearer JSON, as Grafana's Profiles
Drilldown app reads flame graphs (through Grafana's datasource proxy).

`query` is `<profile type id>{selector}`, e.g.
`cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="shop/api"}`; `from` and `until` take
what /api/v1 takes (now-1h, Unix seconds, RFC 3339) and Unix milliseconds. The tree and
the timeline are those of the querier.v1 calls (routers/querier.py); errors are podflame's.
"""

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from podflame.model.profile import ProfileType
from podflame.server import pyroscope_types
from podflame.server import querier_pb2 as pb
from podflame.server.errors import ERROR_RESPONSES, ParameterError
from podflame.server.querier import QuerierError
from podflame.server.routers.querier import Caller, caller_of, merged_diff, merged_flame_graph
from podflame.server.selector import SelectorError
from podflame.server.store import ProfileQuery
from podflame.server.timerange import DEFAULT_FROM, DEFAULT_UNTIL, TimeRangeError, parse_time

router = APIRouter(tags=["grafana"])

# Pyroscope's timeline: about 1,500 points, at least 15 s apart.
TIMELINE_POINTS = 1500
MIN_STEP_SECONDS = 15
_NICE_STEPS: tuple[int, ...] = (15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600)
_NICE_STEPS += (7200, 10800, 21600, 43200, 86400, 604800)
# Unix times with this many digits or more are milliseconds (13 digits since 2001).
_MILLIS_DIGITS = 12
_TYPE = 'A profile type ID then a selector: cpu:cpu:nanoseconds:cpu:nanoseconds{pod="api-1"}.'


def _caller(request: Request) -> Caller:
    return caller_of(request)


CallerDep = Annotated[Caller, Depends(_caller)]


@router.get(
    "/pyroscope/render",
    summary="Flame graph and timeline as flamebearer JSON (Profiles Drilldown)",
    responses=ERROR_RESPONSES,
)
def render(
    caller: CallerDep,
    query: Annotated[str, Query(description=_TYPE)],
    start: Annotated[str, Query(alias="from", description="now-1h, Unix s or ms.")] = DEFAULT_FROM,
    until: Annotated[str, Query(description="Same forms as from.")] = DEFAULT_UNTIL,
    max_nodes: Annotated[int, Query(alias="max-nodes", ge=0)] = 0,
    max_nodes_camel: Annotated[int, Query(alias="maxNodes", ge=0)] = 0,
) -> dict[str, Any]:
    profile = _query(caller, "query", query, start, until)
    graph = merged_flame_graph(
        caller.store, profile, caller.clamp_nodes(max_nodes_camel or max_nodes)
    )
    profile_type = caller.profile_types.require(profile.profile_type)
    body = _flamebearer(
        graph.names, graph.levels, graph.total, graph.max_self, profile_type, "single"
    )
    body["timeline"] = _timeline(caller, profile)
    return body


@router.get(
    "/pyroscope/render-diff",
    summary="Two selections in one flame graph as flamebearer JSON (Profiles Drilldown)",
    responses=ERROR_RESPONSES,
)
def render_diff(
    caller: CallerDep,
    left_query: Annotated[str, Query(alias="leftQuery", description=_TYPE)],
    right_query: Annotated[str, Query(alias="rightQuery", description=_TYPE)],
    left_from: Annotated[str, Query(alias="leftFrom")] = DEFAULT_FROM,
    left_until: Annotated[str, Query(alias="leftUntil")] = DEFAULT_UNTIL,
    right_from: Annotated[str, Query(alias="rightFrom")] = DEFAULT_FROM,
    right_until: Annotated[str, Query(alias="rightUntil")] = DEFAULT_UNTIL,
    max_nodes: Annotated[int, Query(alias="max-nodes", ge=0)] = 0,
    max_nodes_camel: Annotated[int, Query(alias="maxNodes", ge=0)] = 0,
) -> dict[str, Any]:
    left = _query(caller, "leftQuery", left_query, left_from, left_until)
    right = _query(caller, "rightQuery", right_query, right_from, right_until)
    if left.profile_type != right.profile_type:
        raise ParameterError("rightQuery", "left and right must be of the same profile type")
    nodes = caller.clamp_nodes(max_nodes_camel or max_nodes)
    graph: pb.FlameGraphDiff = merged_diff(caller.store, left, right, nodes)
    profile_type = caller.profile_types.require(left.profile_type)
    body = _flamebearer(
        graph.names, graph.levels, graph.total, graph.max_self, profile_type, "double"
    )
    body["leftTicks"], body["rightTicks"] = graph.leftTicks, graph.rightTicks
    return body


def _query(caller: Caller, parameter: str, text: str, start: str, until: str) -> ProfileQuery:
    type_text, brace, selector = text.partition("{")
    now = datetime.now(UTC)
    start_ms, end_ms = (
        _millis(name, value, now) for name, value in (("from", start), ("until", until))
    )
    try:
        return caller.query(type_text.strip(), brace + selector, start_ms, end_ms)
    except QuerierError as error:
        raise ParameterError(parameter, str(error)) from None
    except SelectorError as error:
        raise ParameterError(parameter, f"{error.message} (at position {error.position})") from None


def _millis(parameter: str, text: str, now: datetime) -> int:
    text = text.strip()
    if text.isdigit() and len(text) >= _MILLIS_DIGITS:
        return int(text)
    try:
        return math.floor(parse_time(text, now).timestamp() * 1000)
    except ValueError as error:
        raise TimeRangeError(parameter, str(error)) from None


def _flamebearer(
    names: Any, levels: Any, total: int, max_self: int, profile_type: ProfileType, layout: str
) -> dict[str, Any]:
    type_id = pyroscope_types.type_id(profile_type)
    units, sample_rate = _units(type_id.sample_unit)
    return {
        "version": 1,
        "flamebearer": {
            "names": list(names),
            "levels": [list(level.values) for level in levels],
            "numTicks": total,
            "maxSelf": max_self,
        },
        "metadata": {
            "format": layout,
            "spyName": "",
            "sampleRate": sample_rate,
            "units": units,
            "name": type_id.sample_type,
        },
    }


def _units(unit: str) -> tuple[str, int]:
    """Flamebearer's units and sample rate for a podflame unit. Nanoseconds become
    "samples" at a billion a second: the app divides by the rate and shows seconds."""
    if unit == "nanoseconds":
        return "samples", 1_000_000_000
    if unit == "bytes":
        return "bytes", 100
    return "objects", 100


def _timeline(caller: Caller, query: ProfileQuery) -> dict[str, Any]:
    """Every step of the range from its start, 0 where nothing was sampled."""
    start_s = math.floor(query.time_range.start.timestamp())
    end_s = math.floor(query.time_range.end.timestamp())
    wanted = math.ceil((end_s - start_s) / TIMELINE_POINTS)
    step = next((s for s in _NICE_STEPS if s >= max(wanted, MIN_STEP_SECONDS)), max(wanted, 1))
    samples = [0] * max((end_s - start_s) // step, 0)
    # Ungrouped: one point per step, at most TIMELINE_POINTS and a few more.
    for point in caller.store.series(query, step * 1000, (), 2 * TIMELINE_POINTS):
        index = (point.start_ms // 1000 - start_s) // step
        if samples:
            samples[min(max(index, 0), len(samples) - 1)] += point.value
    return {"startTime": start_s, "samples": samples, "durationDelta": step, "watermarks": None}
