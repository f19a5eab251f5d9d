"""Read side of the network tables: histograms summed in ClickHouse per group.

ClickHouse groups the rows and adds their histograms up, so Python receives
one row per group (or per group and step), each with at most BUCKET_COUNT
buckets, and only computes percentiles from them. The sum is sumMap over a Map
built from the bucket arrays: 4 to 8 times faster on ClickHouse 26.9 than
sumMap over the two arrays, and faster than ARRAY JOIN with GROUP BY bucket
(docs/api.md has the figures).

When the rows are many, a latency query is split in time: the whole hours
inside the range are written on toStartOfHour(timestamp), which ClickHouse
answers from the table's hourly projection (schema.py); the partial hours at
either end read the rows. The parts are summed again outside, so the result is
exactly that of one scan.
Label names pasted into SQL are checked (sqlfilter.label_column) or fixed here.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from podflame.server.schema import HOURLY_HISTOGRAM
from podflame.server.sqlfilter import Filter, add_time_range, label_column, matcher_condition
from podflame.server.store import LabelSelection, LatencyQuery, LatencyStep, LatencySums, PeerSums
from podflame.server.timerange import TimeRange

SYSCALL = "syscall"
HOUR_SECONDS = 3600
_HOUR_MS = HOUR_SECONDS * 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Rows (as ClickHouse estimates them from its index) from which whole hours are
# read from the hourly projection rather than the rows; see _hours_pay.
HOURLY_FROM_ROWS = 1_000_000
# Runs a statement with bound parameters and returns its rows.
Select = Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]

# Per time span: the projection's aggregates, spelled as it has them. Aliases
# never repeat a column's name: ClickHouse would read the alias inside the
# other aggregates (sum(count) AS count breaks sumIf(count, ...)).
_SPAN = """
SELECT {keys}count() AS found, sum(count) AS calls{totals}
FROM {db}.network_latency WHERE {span} AND {where}
{group_by}"""
_SPAN_TOTALS = f""", sum(errors) AS failed, sum(eagain) AS would_block,
       max(max_ns) AS slowest, {HOURLY_HISTOGRAM} AS histogram"""
# The spans summed again, the groups with the most calls first.
_GROUPS = """
SELECT {names}sum(calls) AS total_calls{totals}
FROM ({spans})
{group_by} HAVING sum(found) > 0
ORDER BY total_calls DESC{order_names} LIMIT {{limit:UInt32}}
"""
_GROUP_TOTALS = """, sum(failed), sum(would_block), max(slowest), sumMap(histogram)"""
# With the matcher of a Map label, ClickHouse reads a subcolumn the projection
# does not have, and so would not use it.
_SETTINGS = "\nSETTINGS optimize_functions_to_subcolumns = 0"


@dataclass(frozen=True)
class _Span:
    """A time condition; `step` is the expression of a row's step start, Unix seconds."""

    condition: str
    step: str


# A source is a pod's container (node and comm blank) or, outside pods, a node's comm.
_SOURCE_KEYS = (
    "namespace",
    "workload",
    "pod",
    "container",
    "if(pod = '', node, '') AS source_node",
    "if(pod = '', comm, '') AS source_comm",
)
SOURCE_NAMES = ("namespace", "workload", "pod", "container", "node", "comm")
_PEER_GROUP = "namespace, workload, pod, container, source_node, source_comm, address, port, peer"
_PEERS = f"""
SELECT {", ".join(_SOURCE_KEYS)}, address, port, peer,
       sum(count) AS calls,
       sumMapIf(map(toString(result), count), result NOT IN ('ok', 'EINPROGRESS')) AS failures,
       sumIf(count, result = 'EINPROGRESS') AS pending,
       maxIf(max_ns, result != 'EINPROGRESS') AS slowest,
       sumMapIf(mapFromArrays(bucket_keys, bucket_counts), result != 'EINPROGRESS') AS histogram
FROM {{db}}.network_peers WHERE {{where}}
GROUP BY {_PEER_GROUP}
ORDER BY calls DESC, {_PEER_GROUP.removesuffix(", peer")}, toString(peer)
LIMIT {{{{limit:UInt32}}}}
"""


class NetworkReader:
    """Queries over one database, through a store's `select` (its lock and error mapping)."""

    def __init__(self, db: str, select: Select) -> None:
        self._db = db
        self._select = select

    def latency(self, query: LatencyQuery) -> list[LatencySums]:
        where, keys = _latency_filter(query)
        hours = self._hours_pay(where, query.selection.time_range)
        spans = _spans(where, query.selection.time_range, step=None, hours=hours)
        sql = self._groups(where, keys, spans, with_totals=True) + _SETTINGS
        width = len(keys)
        return [
            LatencySums(
                key=tuple(str(value) for value in row[:width]),
                count=int(row[width]),
                errors=int(row[width + 1]),
                eagain=int(row[width + 2]),
                max_ns=int(row[width + 3]),
                buckets=_buckets(row[width + 4]),
            )
            for row in self._select(sql, _limited(where, query.limit))
        ]

    def latency_steps(self, query: LatencyQuery, step_seconds: int) -> list[LatencyStep]:
        where, keys = _latency_filter(query)
        hours = self._hours_pay(where, query.selection.time_range)
        spans = _spans(where, query.selection.time_range, step=step_seconds, hours=hours)
        width = len(keys)
        names = [f"g{index}" for index in range(width)]
        if keys:
            # Only the groups latency() returns: the same order and limit pick them.
            whole_hours = _spans(where, query.selection.time_range, step=None, hours=hours)
            chosen = self._groups(where, keys, whole_hours, with_totals=False)
            where.conditions.append(
                f"({', '.join(keys)}) IN (SELECT {', '.join(names)} FROM ({chosen}))"
            )
        step_keys = [*keys, "{step}"]
        parts = " UNION ALL ".join(
            _span_select(self._db, where, step_keys, span, _SPAN_TOTALS) for span in spans
        )
        group = ", ".join([*names, f"g{width}"])
        sql = (
            f"SELECT {group}, sum(calls), max(slowest), sumMap(histogram) FROM ({parts})"
            f" GROUP BY {group} ORDER BY g{width}{_SETTINGS}"
        )
        parameters = {**_limited(where, query.limit), "step": step_seconds}
        return [
            LatencyStep(
                key=tuple(str(value) for value in row[:width]),
                start_ms=int(row[width]) * 1000,
                count=int(row[width + 1]),
                max_ns=int(row[width + 2]),
                buckets=_buckets(row[width + 3]),
            )
            for row in self._select(sql, parameters)
        ]

    def peers(self, selection: LabelSelection, limit: int) -> list[PeerSums]:
        where = _filter(selection, ())
        add_time_range(where, selection.time_range)
        rows = self._select(_PEERS.format(db=self._db, where=where.sql), _limited(where, limit))
        return [_peer(row) for row in rows]

    def _hours_pay(self, where: Filter, time_range: TimeRange) -> bool:
        """Whether the hourly sums are worth reading: the rows would be many.

        A query reads whole granules of 8192 rows, and a summed histogram costs
        5-10 us to read back against about 0.4 us for a row: for a pod's day
        (200,000 rows) the rows are faster, for a namespace's day (1.2 M) about
        even, for all pods' day (56 M) the sums 30 times faster. ClickHouse
        would choose by granules alone, so this asks it for the rows first.
        """
        estimate = Filter(list(where.conditions), dict(where.parameters))
        add_time_range(estimate, time_range)
        sql = f"EXPLAIN ESTIMATE SELECT 1 FROM {self._db}.network_latency WHERE {estimate.sql}"
        found = self._select(sql, estimate.parameters)
        # No estimate (a Distributed table may give none): the sums are the safe side.
        return not found or sum(int(row[3]) for row in found) >= HOURLY_FROM_ROWS

    def _groups(self, where: Filter, keys: list[str], spans: list[_Span], with_totals: bool) -> str:
        """The groups with the most calls, over all spans; with totals, also their sums."""
        parts = " UNION ALL ".join(
            _span_select(self._db, where, keys, span, _SPAN_TOTALS if with_totals else "")
            for span in spans
        )
        names = [f"g{index}" for index in range(len(keys))]
        return _GROUPS.format(
            names="".join(f"{name}, " for name in names),
            totals=_GROUP_TOTALS if with_totals else "",
            spans=parts,
            group_by=f"GROUP BY {', '.join(names)}" if names else "",
            order_names="".join(f", {name}" for name in names),
        )


def _peer(row: tuple[Any, ...]) -> PeerSums:
    width = len(SOURCE_NAMES)
    source = {name: str(value) for name, value in zip(SOURCE_NAMES, row[:width], strict=True)}
    address, port, peer, calls, failures, pending, slowest, histogram = row[width:]
    return PeerSums(
        source={name: value for name, value in source.items() if value},
        address=str(address),
        port=int(port),
        destination={str(key): str(value) for key, value in dict(peer).items()},
        count=int(calls),
        errors=_buckets_by_name(failures),
        in_progress=int(pending),
        max_ns=int(slowest),
        buckets=_buckets(histogram),
    )


def _group_expression(where: Filter, name: str) -> str:
    """The SQL reading group_by name `name` as a string: a label, or the syscall column."""
    if name == SYSCALL:
        return SYSCALL
    return label_column(where, name, stored_service_name=False)


def _latency_filter(query: LatencyQuery) -> tuple[Filter, list[str]]:
    """The matchers (not the time range: spans have it) and the group_by expressions."""
    where = _filter(query.selection, (SYSCALL,))
    keys = [_group_expression(where, name) for name in query.group_by]
    return where, keys


def _filter(selection: LabelSelection, columns: Sequence[str]) -> Filter:
    """The selection's matchers; a matcher on a name in `columns` reads that column."""
    where = Filter()
    for matcher in selection.matchers:
        column = (
            matcher.name
            if matcher.name in columns
            else label_column(where, matcher.name, stored_service_name=False)
        )
        where.conditions.append(matcher_condition(where, matcher, column))
    return where


def _spans(where: Filter, time_range: TimeRange, step: int | None, hours: bool) -> list[_Span]:
    """[from, first hour), the whole hours, [last hour, until), the empty ones left out.

    Whole hours are read from the hourly projection when `hours`, unless a step
    cuts hours; otherwise the range is one span of rows.
    """
    start_ms, end_ms = _millis(time_range.start), _millis(time_range.end)
    first_hour = -(-start_ms // _HOUR_MS) * _HOUR_MS
    last_hour = end_ms // _HOUR_MS * _HOUR_MS
    cut = step is not None and step % HOUR_SECONDS != 0
    if not hours or cut or first_hour >= last_hour:
        return [_raw_span(where, start_ms, end_ms)]
    spans = [_hourly_span(where, first_hour, last_hour)]
    if start_ms < first_hour:
        spans.insert(0, _raw_span(where, start_ms, first_hour))
    if last_hour < end_ms:
        spans.append(_raw_span(where, last_hour, end_ms))
    return spans


def _raw_span(where: Filter, start_ms: int, end_ms: int) -> _Span:
    span = Filter(parameters=where.parameters)  # binds into the statement's parameters
    add_time_range(span, TimeRange(_moment(start_ms), _moment(end_ms)))
    step = "toUnixTimestamp(toStartOfInterval(timestamp, toIntervalSecond({step:UInt32})))"
    return _Span(span.sql, step)


def _hourly_span(where: Filter, start_ms: int, end_ms: int) -> _Span:
    hour = "toStartOfHour(timestamp)"
    start, end = where.bind(start_ms // 1000), where.bind(end_ms // 1000)
    condition = (
        f"{hour} >= toDateTime({{{start}:UInt32}}, 'UTC')"
        f" AND {hour} < toDateTime({{{end}:UInt32}}, 'UTC')"
    )
    step = f"toUnixTimestamp(toStartOfInterval({hour}, toIntervalSecond({{step:UInt32}})))"
    return _Span(condition, step)


def _span_select(db: str, where: Filter, keys: list[str], span: _Span, totals: str) -> str:
    """One span's sums per group; a key "{step}" stands for the span's step expression."""
    keys = [span.step if key == "{step}" else key for key in keys]
    names = [f"g{index}" for index in range(len(keys))]
    return _SPAN.format(
        keys="".join(f"{key} AS {name}, " for key, name in zip(keys, names, strict=True)),
        totals=totals,
        db=db,
        span=span.condition,
        where=where.sql,
        group_by=f"GROUP BY {', '.join(names)}" if names else "",
    )


def _limited(where: Filter, limit: int) -> dict[str, Any]:
    return {**where.parameters, "limit": limit}


def _millis(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _moment(millis: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=millis)


def _buckets(summed: Mapping[int, int]) -> dict[int, int]:
    return {int(key): int(count) for key, count in summed.items()}


def _buckets_by_name(summed: Mapping[str, int]) -> dict[str, int]:
    return {str(name): int(count) for name, count in summed.items()}
