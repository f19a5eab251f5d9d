"""Pyroscope's query API (querier.v1) on podflame's store: the translation, no HTTP.

Grafana's Pyroscope datasource names a profile type by a Pyroscope ID,
`name:sample_type:sample_unit:period_type:period_unit`, and puts it in the selector as
`__profile_type__="<id>"` (LabelNames, LabelValues, Series) or in its own field (the
Select calls). Times are Unix milliseconds. This module maps those onto podflame's
ProfileQuery and turns the store's answers into the generated messages of
server/querier.proto; routers/querier.py speaks Connect around it.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from podflame.model.tree import FlatTree
from podflame.server import querier_pb2 as pb
from podflame.server.pyroscope_types import TypeId
from podflame.server.selector import LABEL_NAME, Matcher, Op, parse_selector
from podflame.server.store import SeriesPoint, StackTotal
from podflame.server.timerange import TimeRange

PROFILE_TYPE_LABEL = "__profile_type__"
NAME_LABEL = "__name__"
DEFAULT_RANGE = timedelta(hours=1)
# A step that gives more points than this is refused (as /api/v1/timeline does).
MAX_POINTS = 11_000
# Most series SelectSeries returns when the request sets no limit: the largest ones.
MAX_SERIES = 1000
# Most points (series times steps) one SelectSeries or Series call reads: a group_by
# on a label with many values over many steps is refused rather than held in memory.
MAX_SERIES_POINTS = 1_000_000
# A stack_trace_selector's call site: frame names, root first.
CallSite = tuple[str, ...]
# A step longer than any range: one point per series (Series wants the label sets only).
WHOLE_RANGE_MS = 100 * 365 * 86_400_000


class QuerierError(ValueError):
    """A request the API cannot answer as asked: a Connect `invalid_argument`."""


class Unsupported(Exception):
    """A Pyroscope feature podflame does not serve: a Connect `unimplemented`."""


def call_site(message: pb.SelectMergeStacktracesRequest | pb.SelectMergeProfileRequest) -> CallSite:
    """The frames (root first) the request's stacks must start with; () for every stack.

    Unsupported for a profile ID selector (podflame stores no profile IDs) and for Go
    PGO, rather than answering for every stack as if they were not there.
    """
    if message.profile_id_selector:
        raise Unsupported("profile_id_selector is not supported: podflame stores no profile IDs")
    if not message.HasField("stack_trace_selector"):
        return ()
    selector = message.stack_trace_selector
    if selector.HasField("go_pgo"):
        raise Unsupported("stack_trace_selector.go_pgo (Go PGO profiles) is not supported")
    return tuple(location.name for location in selector.call_site)


def under_call_site(stacks: Sequence[StackTotal], site: CallSite) -> list[StackTotal]:
    """The stacks that start with the call site's frames."""
    if not site:
        return list(stacks)
    return [stack for stack in stacks if tuple(stack.frames[: len(site)]) == site]


def type_message(type_id: TypeId) -> pb.ProfileType:
    return pb.ProfileType(
        ID=type_id.id,
        name=type_id.name,
        sample_type=type_id.sample_type,
        sample_unit=type_id.sample_unit,
        period_type=type_id.period_type,
        period_unit=type_id.period_unit,
    )


@dataclass(frozen=True)
class Selection:
    """A parsed Pyroscope selector: the profile type IDs it names and the other matchers."""

    type_ids: tuple[str, ...]
    matchers: tuple[Matcher, ...]


def split_selector(text: str) -> Selection:
    """Parse a selector and take its `__profile_type__` matchers out (equality only).

    Raises SelectorError for bad syntax and QuerierError for other `__*__` labels, which
    podflame does not store: ignoring them would select more than asked.
    """
    types: list[str] = []
    matchers: list[Matcher] = []
    for matcher in parse_selector(text):
        if matcher.name == PROFILE_TYPE_LABEL and matcher.op is Op.EQ:
            types.append(matcher.value)
        elif matcher.name.startswith("__") and matcher.name.endswith("__"):
            raise QuerierError(
                f"unsupported matcher on {matcher.name} (only {PROFILE_TYPE_LABEL}=)"
            )
        else:
            matchers.append(matcher)
    return Selection(tuple(types), tuple(matchers))


def time_range(start_ms: int, end_ms: int, now: datetime | None = None) -> TimeRange:
    """[start, end) from Unix milliseconds; 0 for the end means now, for the start an hour
    before the end."""
    now = now or datetime.now(UTC)
    try:
        end = _from_millis(end_ms) if end_ms else now
        start = _from_millis(start_ms) if start_ms else end - DEFAULT_RANGE
    except (OverflowError, OSError, ValueError):
        raise QuerierError(f"start {start_ms} or end {end_ms} is out of range") from None
    if start > end:
        raise QuerierError(f"start {start_ms} is after end {end_ms}")
    return TimeRange(start, end)


def _from_millis(millis: int) -> datetime:
    if millis < 0:
        raise ValueError("negative time")
    return datetime.fromtimestamp(millis / 1000, UTC)


def flame_graph(tree: FlatTree) -> pb.FlameGraph:
    """The tree as Pyroscope's FlameGraph: per depth, [offset, total, self, name] per bar."""
    levels, max_self = _levels(tree)
    return pb.FlameGraph(
        names=tree.names,
        levels=[pb.Level(values=values) for values in levels],
        total=tree.totals[0],
        max_self=max_self,
    )


def flame_graph_diff(tree: FlatTree) -> pb.FlameGraphDiff:
    """A two-sided tree: per bar [left offset, left total, left self, right offset, right
    total, right self, name]; `total` is both sides' together."""
    levels, max_self = _levels(tree)
    left, right = tree.totals
    return pb.FlameGraphDiff(
        names=tree.names,
        levels=[pb.Level(values=values) for values in levels],
        total=left + right,
        max_self=max_self,
        leftTicks=left,
        rightTicks=right,
    )


def _levels(tree: FlatTree) -> tuple[list[list[int]], int]:
    """Each node's bar, per depth in left-to-right order, and the largest self value.

    Rows are in pre-order with children in drawing order, so a depth's bars arrive left
    to right. As Pyroscope lays them out, a bar's own (self) part comes first, then its
    children: a child's x is its parent's x plus the parent's self plus its earlier
    siblings' totals, per side. Its offset is x minus the end of the previous bar of its
    depth.
    """
    sides = (len(tree.nodes[0]) - 2) // 2
    if sides == 1:
        return _single_levels(tree.nodes)
    depth: list[int] = []
    # Per node and side: where its next child starts.
    next_x: list[list[int]] = []
    level_end: list[list[int]] = []
    levels: list[list[int]] = []
    max_self = 0
    for row in tree.nodes:
        parent, name = row[0], row[1]
        level = depth[parent] + 1 if parent >= 0 else 0
        depth.append(level)
        if level == len(levels):
            levels.append([])
            level_end.append([0] * sides)
        starts = next_x[parent] if parent >= 0 else [0] * sides
        bar: list[int] = []
        xs: list[int] = []
        for side in range(sides):
            own, total = row[2 + 2 * side], row[3 + 2 * side]
            x = starts[side]
            bar += (x - level_end[level][side], total, own)
            level_end[level][side] = starts[side] = x + total
            xs.append(x + own)
            max_self = max(max_self, own)
        # Where its first child starts: after its own part.
        next_x.append(xs)
        levels[level] += (*bar, name)
    return levels, max_self


def _single_levels(nodes: list[list[int]]) -> tuple[list[list[int]], int]:
    """`_levels` for a one-sided tree, without the per-side lists (the flame graph's
    hot loop: one pass over up to --max-nodes rows)."""
    depth: list[int] = []
    next_x: list[int] = []  # per node: where its next child starts
    level_end: list[int] = []
    levels: list[list[int]] = []
    max_self = 0
    for parent, name, own, total in nodes:
        if parent >= 0:
            level = depth[parent] + 1
            x = next_x[parent]
            next_x[parent] = x + total
        else:
            level = x = 0
        depth.append(level)
        if level == len(levels):
            levels.append([])
            level_end.append(0)
        levels[level] += (x - level_end[level], total, own, name)
        level_end[level] = x + total
        next_x.append(x + own)
        max_self = max(max_self, own)
    return levels, max_self


def series_step_ms(step_seconds: float, range_: TimeRange) -> int:
    """The step in whole milliseconds (at least 1); 0 or less: about 300 points."""
    span_ms = max((range_.end - range_.start) // timedelta(milliseconds=1), 1)
    if not math.isfinite(step_seconds):
        raise QuerierError(f"step {step_seconds} is not a number of seconds")
    step_ms = round(step_seconds * 1000) if step_seconds > 0 else math.ceil(span_ms / 300)
    step_ms = max(step_ms, 1)
    if span_ms / step_ms > MAX_POINTS:
        raise QuerierError(f"step {step_seconds} s gives more than {MAX_POINTS} points; raise it")
    return step_ms


def check_points(points: Sequence[SeriesPoint]) -> Sequence[SeriesPoint]:
    """`points` if the store returned fewer than it was asked for (MAX_SERIES_POINTS + 1)."""
    if len(points) > MAX_SERIES_POINTS:
        raise QuerierError(
            f"more than {MAX_SERIES_POINTS:,} points: raise step, group by fewer labels or"
            " narrow the selector"
        )
    return points


def check_group_by(names: Sequence[str]) -> tuple[str, ...]:
    for name in names:
        if not LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise QuerierError(f"cannot group by {name!r}: not a podflame label name")
    return tuple(dict.fromkeys(names))


def series_messages(
    points: Iterable[SeriesPoint], group_by: Sequence[str], limit: int
) -> list[pb.Series]:
    """One Series per key, its non-empty steps in time order; the `limit` largest series
    by total, in key order."""
    grouped: dict[tuple[str, ...], list[SeriesPoint]] = {}
    for point in points:
        grouped.setdefault(point.key, []).append(point)
    largest = sorted(grouped, key=lambda key: -sum(p.value for p in grouped[key]))[:limit]
    return [
        pb.Series(
            labels=[pb.LabelPair(name=n, value=v) for n, v in zip(group_by, key, strict=True)],
            points=[
                pb.Point(value=float(p.value), timestamp=p.start_ms)
                for p in sorted(grouped[key], key=lambda p: p.start_ms)
            ],
        )
        for key in sorted(largest)
    ]
