"""Read side of the network tables: histograms summed in ClickHouse per group.

ClickHouse groups the rows and adds their histograms up, so Python receives
one row per group (or per group and step), each with at most BUCKET_COUNT
buckets, and only computes percentiles from them. The sum is sumMap over a Map
built from the bucket arrays: 4 to 8 times faster on ClickHouse 26.9 than
sumMap over the two arrays, and faster than ARRAY JOIN with GROUP BY bucket
(docs/api.md has the figures).
Label names pasted into SQL are checked (sqlfilter.label_column) or fixed here.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from podflame.server.sqlfilter import Filter, add_time_range, label_column, matcher_condition
from podflame.server.store import LabelSelection, LatencyQuery, LatencyStep, LatencySums, PeerSums

SYSCALL = "syscall"
# Runs a statement with bound parameters and returns its rows.
Select = Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]

_HISTOGRAM = "sumMap(mapFromArrays(bucket_keys, bucket_counts))"
# Aliases never repeat a column's name: ClickHouse would read the alias inside
# the other aggregates (sum(count) AS count breaks sumIf(count, ...)).
_LATENCY_SUMS = """
SELECT {keys}sum(count) AS calls{totals}
FROM {db}.network_latency WHERE {where}
{group_by} HAVING count() > 0
ORDER BY calls DESC{order_keys} LIMIT {{limit:UInt32}}
"""
_TOTALS = f""",
       sum(errors) AS failed, sum(eagain) AS would_block, max(max_ns) AS slowest,
       {_HISTOGRAM} AS histogram"""

_LATENCY_STEPS = """
SELECT {keys}toUnixTimestamp(toStartOfInterval(timestamp, toIntervalSecond({{step:UInt32}})))
           AS step_start,
       sum(count) AS calls, max(max_ns) AS slowest, {histogram} AS histogram
FROM {db}.network_latency WHERE {where}
GROUP BY {names}step_start ORDER BY step_start
"""

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
        sql = _latency_sums(self._db, where, keys, _TOTALS)
        rows = self._select(sql, _limited(where, query.limit))
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
            for row in rows
        ]

    def latency_steps(self, query: LatencyQuery, step_seconds: int) -> list[LatencyStep]:
        where, keys = _latency_filter(query)
        if keys:
            # Only the groups latency() returns: the same order and limit pick them.
            names = ", ".join(f"g{index}" for index in range(len(keys)))
            chosen = _latency_sums(self._db, where, keys, totals="")
            where.conditions.append(f"({', '.join(keys)}) IN (SELECT {names} FROM ({chosen}))")
        sql = _LATENCY_STEPS.format(
            db=self._db,
            where=where.sql,
            keys=_select_keys(keys),
            names=_group_names(keys),
            histogram=_HISTOGRAM,
        )
        parameters = {**_limited(where, query.limit), "step": step_seconds}
        width = len(keys)
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
        rows = self._select(_PEERS.format(db=self._db, where=where.sql), _limited(where, limit))
        return [_peer(row) for row in rows]


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
    return SYSCALL if name == SYSCALL else label_column(where, name)


def _latency_filter(query: LatencyQuery) -> tuple[Filter, list[str]]:
    where = _filter(query.selection, (SYSCALL,))
    keys = [_group_expression(where, name) for name in query.group_by]
    return where, keys


def _filter(selection: LabelSelection, columns: Sequence[str]) -> Filter:
    """The selection's conditions; matchers on a name in `columns` read that column."""
    where = Filter()
    add_time_range(where, selection.time_range)
    for matcher in selection.matchers:
        column = matcher.name if matcher.name in columns else label_column(where, matcher.name)
        where.conditions.append(matcher_condition(where, matcher, column))
    return where


def _latency_sums(db: str, where: Filter, keys: list[str], totals: str) -> str:
    """The groups with the most calls; `totals` adds aggregates after their `calls`."""
    aliases = [f"g{index}" for index in range(len(keys))]
    return _LATENCY_SUMS.format(
        db=db,
        totals=totals,
        where=where.sql,
        keys=_select_keys(keys),
        group_by=f"GROUP BY {', '.join(aliases)}" if keys else "",
        order_keys="".join(f", {alias}" for alias in aliases),
    )


def _select_keys(keys: list[str]) -> str:
    return "".join(f"{key} AS g{index}, " for index, key in enumerate(keys))


def _group_names(keys: list[str]) -> str:
    return "".join(f"g{index}, " for index in range(len(keys)))


def _limited(where: Filter, limit: int) -> dict[str, Any]:
    return {**where.parameters, "limit": limit}


def _buckets(summed: Mapping[int, int]) -> dict[int, int]:
    return {int(key): int(count) for key, count in summed.items()}


def _buckets_by_name(summed: Mapping[str, int]) -> dict[str, int]:
    return {str(name): int(count) for name, count in summed.items()}
