"""GET /api/v1/network/latency and /api/v1/network/peers: network system calls of the
selected processes, summed per label set, and their connect() destinations.

ClickHouse sums the histograms per group; percentiles come from the summed
buckets (model.network.quantile), read at a bucket's midpoint, so they are
within about 6 % of the exact value.
"""

import math
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from podflame.model.network import quantile
from podflame.server.deps import Network, Selected
from podflame.server.errors import ERROR_RESPONSES, ParameterError
from podflame.server.selector import LABEL_NAME
from podflame.server.store import LabelSelection, LatencyQuery, LatencyStep, LatencySums

router = APIRouter(tags=["network"])

DEFAULT_GROUP_BY = "pod,syscall"
MAX_GROUP_BY = 8
DEFAULT_GROUPS = 1000
MAX_GROUPS = 10_000
# Points per group, and points in one response (groups x steps).
MAX_STEPS = 11_000
# A step is bound as UInt32 seconds; ten years is plenty.
MAX_STEP = 10 * 365 * 86400
MAX_POINTS = 100_000
DEFAULT_PEERS = 1000
MAX_PEERS = 10_000

_PERCENTILE = "microseconds, from the summed histogram; null without calls"
_LATENCY_EXAMPLE: JsonDict = {
    "group_by": ["pod", "syscall"],
    "groups": [
        {
            "labels": {"pod": "web-1", "syscall": "recvfrom"},
            "count": 1200,
            "errors": 3,
            "eagain": 40,
            "p50_us": 2010.5,
            "p90_us": 2200.0,
            "p99_us": 2900.0,
            "max_us": 3100.2,
            "points": [
                {
                    "timestamp": 1764290000000,
                    "count": 60,
                    "p50_us": 2010.5,
                    "p90_us": 2200.0,
                    "p99_us": 2900.0,
                }
            ],
        }
    ],
}
_PEERS_EXAMPLE: JsonDict = {
    "peers": [
        {
            "source": {"namespace": "shop", "pod": "web-1", "workload": "web"},
            "address": "10.1.2.3",
            "port": 5432,
            "destination": {"namespace": "shop", "pod": "db-0"},
            "count": 120,
            "errors": {"ECONNREFUSED": 2},
            "in_progress": 0,
            "p50_us": 180.0,
            "p99_us": 900.0,
        }
    ]
}


class LatencyPoint(BaseModel):
    timestamp: int = Field(description="Start of the step, Unix milliseconds.")
    count: int = Field(description="Completed calls in the step, errors included.")
    p50_us: float | None = Field(description=f"Median, {_PERCENTILE}.")
    p90_us: float | None = Field(description=f"90th percentile, {_PERCENTILE}.")
    p99_us: float | None = Field(description=f"99th percentile, {_PERCENTILE}.")


class LatencyGroup(BaseModel):
    labels: dict[str, str] = Field(description="The group's value of each group_by name.")
    count: int = Field(description="Completed calls, errors included, EAGAIN excluded.")
    errors: int = Field(description="Calls that returned an error other than EAGAIN.")
    eagain: int = Field(description="Non-blocking calls that returned EAGAIN (not timed).")
    p50_us: float | None = Field(description=f"Median, {_PERCENTILE}.")
    p90_us: float | None = Field(description=f"90th percentile, {_PERCENTILE}.")
    p99_us: float | None = Field(description=f"99th percentile, {_PERCENTILE}.")
    max_us: float | None = Field(description="Slowest call, exact; null without calls.")
    points: list[LatencyPoint] | None = Field(
        default=None,
        description="Only with `step`: every step from `from` (aligned down to a multiple of"
        " step) to `until`, empty steps with count 0.",
    )


class LatencyResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_LATENCY_EXAMPLE]})

    group_by: list[str]
    groups: list[LatencyGroup] = Field(description="By count descending, at most `limit`.")


class Peer(BaseModel):
    source: dict[str, str] = Field(
        description="The non-empty labels among namespace, workload, pod and container for"
        " processes in a pod, else node and comm."
    )
    address: str = Field(description="Destination IPv4 or IPv6 address.")
    port: int
    destination: dict[str, str] = Field(
        description="Labels of the destination pod when the agent knew the address, else {}."
    )
    count: int = Field(description="connect() calls, whatever their result.")
    errors: dict[str, int] = Field(description="Failed calls per errno name.")
    in_progress: int = Field(
        description="Non-blocking calls (EINPROGRESS) whose completion was not seen."
    )
    p50_us: float | None = Field(description=f"Median connect latency, {_PERCENTILE}.")
    p99_us: float | None = Field(description=f"99th percentile, {_PERCENTILE}.")


class PeersResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_PEERS_EXAMPLE]})

    peers: list[Peer] = Field(description="By count descending, at most `limit`.")


@router.get(
    "/api/v1/network/latency",
    response_model=LatencyResponse,
    # Leaves out `points` unless step was given; percentiles set to null stay.
    response_model_exclude_unset=True,
    summary="Network system-call latency per label set",
    responses=ERROR_RESPONSES,
)
def network_latency(
    store: Network,
    selected: Selected,
    group_by: Annotated[
        str,
        Query(
            description="Comma-separated label names, and `syscall`; the calls are summed per"
            " distinct combination. Empty: one group of all calls."
        ),
    ] = DEFAULT_GROUP_BY,
    step: Annotated[
        int | None,
        Query(ge=1, le=MAX_STEP, description="Seconds per point; without it, no points."),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_GROUPS, description="Most groups returned, by count.")
    ] = DEFAULT_GROUPS,
) -> LatencyResponse:
    """Calls of the selected processes (a selector may also match `syscall`)."""
    query = LatencyQuery(selected, parse_group_by(group_by), limit)
    # Checked before querying: a bad step costs no query.
    steps = _steps(selected, step) if step is not None else None
    sums = store.network_latency(query)
    groups = [_group(query.group_by, item) for item in sums]
    if step is not None and steps is not None:
        if len(sums) * len(steps) > MAX_POINTS:
            message = (
                f"{len(sums)} groups of {len(steps)} points exceed {MAX_POINTS} points;"
                " raise step, lower limit or narrow the selector"
            )
            raise ParameterError("step", message)
        found = store.network_latency_steps(query, step) if sums and steps else []
        _add_points(groups, sums, found, steps)
    return LatencyResponse(group_by=list(query.group_by), groups=groups)


@router.get(
    "/api/v1/network/peers",
    response_model=PeersResponse,
    summary="connect() destinations per source",
    responses=ERROR_RESPONSES,
)
def network_peers(
    store: Network,
    selected: Selected,
    limit: Annotated[
        int, Query(ge=1, le=MAX_PEERS, description="Most peers returned, by count.")
    ] = DEFAULT_PEERS,
) -> PeersResponse:
    """connect() calls of the selected processes per destination address and port."""
    peers = [
        Peer(
            source=item.source,
            address=item.address,
            port=item.port,
            destination=item.destination,
            count=item.count,
            errors=item.errors,
            in_progress=item.in_progress,
            p50_us=_percentile_us(item.buckets, 0.5, item.max_ns),
            p99_us=_percentile_us(item.buckets, 0.99, item.max_ns),
        )
        for item in store.network_peers(selected, limit)
    ]
    return PeersResponse(peers=peers)


def parse_group_by(text: str) -> tuple[str, ...]:
    """Label names (or `syscall`), each once; raises ParameterError naming group_by."""
    names = tuple(part.strip() for part in text.split(",")) if text.strip() else ()
    for name in names:
        if not LABEL_NAME.fullmatch(name):
            message = f"{name!r} is not a label name ([A-Za-z_][A-Za-z0-9_]*)"
            raise ParameterError("group_by", message)
    if len(set(names)) != len(names):
        raise ParameterError("group_by", "a name appears twice")
    if len(names) > MAX_GROUP_BY:
        raise ParameterError("group_by", f"at most {MAX_GROUP_BY} names")
    return names


def _steps(selected: LabelSelection, step: int) -> list[int]:
    """Start (Unix ms) of every step the range touches, the first aligned down to the step."""
    first = math.floor(selected.time_range.start.timestamp())
    first -= first % step
    end = selected.time_range.end.timestamp()
    if (end - first) / step > MAX_STEPS:
        raise ParameterError("step", f"{step} s gives more than {MAX_STEPS} points; raise it")
    return [start * 1000 for start in range(first, math.ceil(end), step)]


def _group(names: tuple[str, ...], sums: LatencySums) -> LatencyGroup:
    return LatencyGroup(
        labels=dict(zip(names, sums.key, strict=True)),
        count=sums.count,
        errors=sums.errors,
        eagain=sums.eagain,
        p50_us=_percentile_us(sums.buckets, 0.5, sums.max_ns),
        p90_us=_percentile_us(sums.buckets, 0.9, sums.max_ns),
        p99_us=_percentile_us(sums.buckets, 0.99, sums.max_ns),
        max_us=sums.max_ns / 1000 if sums.count else None,
    )


def _add_points(
    groups: list[LatencyGroup], sums: list[LatencySums], found: list[LatencyStep], steps: list[int]
) -> None:
    by_key = {(item.key, item.start_ms): item for item in found}
    for group, item in zip(groups, sums, strict=True):
        group.points = [_point(by_key.get((item.key, start)), start) for start in steps]


def _point(step: LatencyStep | None, start: int) -> LatencyPoint:
    if step is None:
        return LatencyPoint(timestamp=start, count=0, p50_us=None, p90_us=None, p99_us=None)
    return LatencyPoint(
        timestamp=start,
        count=step.count,
        p50_us=_percentile_us(step.buckets, 0.5, step.max_ns),
        p90_us=_percentile_us(step.buckets, 0.9, step.max_ns),
        p99_us=_percentile_us(step.buckets, 0.99, step.max_ns),
    )


def _percentile_us(buckets: Mapping[int, int], q: float, max_ns: int) -> float | None:
    """The q-quantile at its bucket's midpoint, but never above the slowest call (exact)."""
    nanoseconds = quantile(buckets, q)
    return None if nanoseconds is None else min(nanoseconds, max_ns) / 1000
