"""GET /api/v1/timeline: the selected profile's total value over time."""

import math
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from podflame.server.deps import SelectedProfile, SelectedType, Store
from podflame.server.errors import ERROR_RESPONSES, ParameterError
from podflame.server.timerange import TimeRange

router = APIRouter(tags=["query"])

# A default step gives at most this many points: enough for a chart's width.
TARGET_POINTS = 300
MAX_POINTS = 11_000
# The step is bound as UInt32 seconds (a larger one failed in ClickHouse: 503); ten years.
MAX_STEP = 10 * 365 * 86400
# Steps a person reads easily; the default is the smallest one that fits.
_MINUTE, _HOUR, _DAY = 60, 3600, 86400
_NICE_STEPS: tuple[int, ...] = (1, 2, 5, 10, 15, 30, _MINUTE, 2 * _MINUTE, 5 * _MINUTE)
_NICE_STEPS += (10 * _MINUTE, 15 * _MINUTE, 30 * _MINUTE, _HOUR, 2 * _HOUR, 3 * _HOUR)
_NICE_STEPS += (6 * _HOUR, 12 * _HOUR, _DAY, 2 * _DAY, 7 * _DAY)


class TimelineResponse(BaseModel):
    unit: str = Field(description="Unit of every value, from the profile type.")
    step: int = Field(description="Seconds per point.")
    points: list[tuple[int, int]] = Field(
        description="[start, value] per step: start in Unix seconds, a multiple of step; value"
        " the sum of the samples in [start, start + step). Empty steps are 0."
    )


@router.get(
    "/api/v1/timeline",
    response_model=TimelineResponse,
    summary="Total value over time of the selected profile",
    responses=ERROR_RESPONSES,
)
def timeline(
    store: Store,
    selected: SelectedProfile,
    profile_type: SelectedType,
    step: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_STEP,
            description=f"Seconds per point; default: 100 to {TARGET_POINTS} points.",
        ),
    ] = None,
) -> TimelineResponse:
    first, end = _bounds(selected.time_range)
    step = step or default_step(end - first)
    if (end - first) / step > MAX_POINTS:
        raise ParameterError("step", f"{step} s gives more than {MAX_POINTS} points; raise it")
    points = fill(store.timeline(selected, step), first - first % step, end, step)
    return TimelineResponse(unit=profile_type.unit, step=step, points=points)


def default_step(seconds: float) -> int:
    """The smallest nice step giving at most TARGET_POINTS points over `seconds`."""
    wanted = math.ceil(seconds / TARGET_POINTS)
    return next((step for step in _NICE_STEPS if step >= wanted), wanted)


def fill(sparse: list[tuple[int, int]], first: int, end: float, step: int) -> list[tuple[int, int]]:
    """Every step from `first` (aligned) while before `end`, 0 where `sparse` has none."""
    values = dict(sparse)
    return [(start, values.get(start, 0)) for start in range(first, math.ceil(end), step)]


def _bounds(time_range: TimeRange) -> tuple[int, float]:
    return math.floor(time_range.start.timestamp()), time_range.end.timestamp()
