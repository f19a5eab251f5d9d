"""GET /api/v1/diff: two selections of one profile type merged into one tree.

Each side is a selector and a time range: two deployments or pods over the
same time, or one selector before and after a rollout. A right-hand parameter
left out takes the left one's value.
"""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from podflame.model.tree import Stack, diff_graph
from podflame.server.deps import (
    Limits,
    MaxNodes,
    NamespaceScope,
    SelectedType,
    Store,
    profile_type_name,
)
from podflame.server.errors import ERROR_RESPONSES, ParameterError
from podflame.server.selector import Matcher, SelectorError, parse_selector
from podflame.server.store import ProfileQuery, ProfileStore
from podflame.server.timerange import (
    DEFAULT_FROM,
    DEFAULT_UNTIL,
    TimeRange,
    TimeRangeError,
    parse_time,
)

router = APIRouter(tags=["query"])

_TIME = "Unix seconds, RFC 3339, now or now-<n><s|m|h|d|w>"
_NODES_DESCRIPTION = (
    "One [parent, name, left_self, left_total, right_self, right_total] per node in depth-first"
    " pre-order; parent and name as in /api/v1/flamegraph. Values are raw, in `unit`: a node's"
    " share of a side is its value divided by that side's total (left_total / right_total of"
    " the response), so sides of different size compare. Truncation keeps the nodes with the"
    " largest share on either side and merges the rest into 'other' children."
)


class DiffResponse(BaseModel):
    unit: str = Field(description="Unit of every value, from the profile type.")
    left_total: int = Field(description="Value of all samples of the left side.")
    right_total: int = Field(description="Value of all samples of the right side.")
    truncated: bool = Field(description="Whether max_nodes merged nodes into 'other'.")
    names: list[str] = Field(description="Frame names, each once; nodes refer to them by index.")
    nodes: list[list[int]] = Field(description=_NODES_DESCRIPTION)


def diff_sides(
    profile_type: Annotated[str, Depends(profile_type_name)],
    scope: NamespaceScope,
    limits: Limits,
    left: Annotated[str, Query(description="Label selector of the left side.")] = "",
    left_from: Annotated[str, Query(description=f"Left start (inclusive): {_TIME}.")] = (
        DEFAULT_FROM
    ),
    left_until: Annotated[str, Query(description="Left end (exclusive).")] = DEFAULT_UNTIL,
    right: Annotated[str | None, Query(description="Right selector; default: left.")] = None,
    right_from: Annotated[str | None, Query(description="Default: left_from.")] = None,
    right_until: Annotated[str | None, Query(description="Default: left_until.")] = None,
) -> tuple[ProfileQuery, ProfileQuery]:
    # One clock reading, so `now` is the same instant on both sides.
    now = datetime.now(UTC)
    sides = (
        ("left", left, left_from, left_until),
        ("right", _or(right, left), _or(right_from, left_from), _or(right_until, left_until)),
    )
    left_query, right_query = (
        ProfileQuery(profile_type, scope.restrict(_selector(side, text)), _range(side, a, b, now))
        for side, text, a, b in sides
    )
    limits.check_range(left_query.time_range, "left_from")
    limits.check_range(right_query.time_range, "right_from")
    return left_query, right_query


DiffSides = Annotated[tuple[ProfileQuery, ProfileQuery], Depends(diff_sides)]


@router.get(
    "/api/v1/diff",
    response_model=DiffResponse,
    summary="Compare two selections in one flame graph",
    responses=ERROR_RESPONSES,
)
def diff(
    store: Store, sides: DiffSides, profile_type: SelectedType, max_nodes: MaxNodes
) -> DiffResponse:
    left, right = sides
    tree = diff_graph(_stacks(store, left, "left"), _stacks(store, right, "right"), max_nodes)
    left_total, right_total = tree.totals
    return DiffResponse(
        unit=profile_type.unit,
        left_total=left_total,
        right_total=right_total,
        truncated=tree.truncated,
        names=tree.names,
        nodes=tree.nodes,
    )


def _stacks(store: ProfileStore, query: ProfileQuery, side: str) -> list[Stack]:
    try:
        return [(stack.frames, stack.value) for stack in store.stacks(query)]
    except SelectorError as error:  # a regex ClickHouse rejected
        raise _selector_error(side, error) from None


def _selector(side: str, text: str) -> tuple[Matcher, ...]:
    try:
        return parse_selector(text)
    except SelectorError as error:
        raise _selector_error(side, error) from None


def _selector_error(side: str, error: SelectorError) -> ParameterError:
    return ParameterError(side, f"{error.message} (at position {error.position})")


def _range(side: str, start: str, end: str, now: datetime) -> TimeRange:
    parsed = TimeRange(_time(f"{side}_from", start, now), _time(f"{side}_until", end, now))
    if parsed.start > parsed.end:
        raise TimeRangeError(f"{side}_from", f"{start!r} is after {side}_until={end!r}")
    return parsed


def _time(parameter: str, text: str, now: datetime) -> datetime:
    try:
        return parse_time(text, now)
    except ValueError as error:
        raise TimeRangeError(parameter, str(error)) from None


def _or(value: str | None, default: str) -> str:
    return default if value is None else value
