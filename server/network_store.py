"""Write side of the network tables: a batch's latency histograms and connect() outcomes.

Rows are built (and checked) before anything is written; server/batch_writer.py
writes them, many batches to one insert, each batch once.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.driver.client import Client

from podflame.model import Batch
from podflame.model.network import Connection, LatencyHistogram
from podflame.server.schema import LABEL_COLUMNS, PID_LABEL
from podflame.server.store import InvalidBatchError

_PROCESS_COLUMNS = ("timestamp", "batch_key", *LABEL_COLUMNS, "pid", "labels")
LATENCY_COLUMNS = (
    *_PROCESS_COLUMNS,
    "syscall",
    "count",
    "errors",
    "eagain",
    "sum_ns",
    "max_ns",
    "bucket_keys",
    "bucket_counts",
)
PEER_COLUMNS = (
    *_PROCESS_COLUMNS,
    "address",
    "port",
    "result",
    "count",
    "max_ns",
    "bucket_keys",
    "bucket_counts",
    "peer",
)
_UINT64 = 2**64
# Calls of one bucket in one drain interval; 4 billion would be 400 million calls a second.
_UINT32 = 2**32
_MAX_PID = 2**32 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# 2100-01-01: the TTL works on DateTime, which ends in 2106.
_MAX_TIME_NS = 4_102_444_800 * 10**9


def _columns(names: tuple[str, ...]) -> dict[str, list[Any]]:
    return {name: [] for name in names}


@dataclass
class NetworkRows:
    """Column-oriented rows of the network_latency and network_peers tables."""

    latency: dict[str, list[Any]] = field(default_factory=lambda: _columns(LATENCY_COLUMNS))
    peers: dict[str, list[Any]] = field(default_factory=lambda: _columns(PEER_COLUMNS))

    def __len__(self) -> int:
        return len(self.latency["timestamp"]) + len(self.peers["timestamp"])

    def table(self, name: str) -> dict[str, list[Any]]:
        """The columns of `name`, network_latency or network_peers."""
        return {"network_latency": self.latency, "network_peers": self.peers}[name]

    def extend(self, other: "NetworkRows", table: str) -> None:
        """Append `other`'s rows of `table`."""
        theirs = other.table(table)
        for name, values in self.table(table).items():
            values += theirs[name]


def network_rows(batch: Batch, batch_key: int) -> NetworkRows:
    """The batch's network rows; raises InvalidBatchError for values the tables cannot hold."""
    rows = NetworkRows()
    if not batch.latency and not batch.connections:
        return rows
    common = {"timestamp": _timestamp(batch.end_time_ns), "batch_key": batch_key}
    for index, histogram in enumerate(batch.latency):
        _add(rows.latency, _latency_row(histogram, f"latency[{index}]"), common)
    for index, connection in enumerate(batch.connections):
        _add(rows.peers, _peer_row(connection, f"connections[{index}]"), common)
    return rows


class NetworkInserter:
    """Inserts network rows. Learns each table's column types once: clickhouse-connect
    otherwise asks for them (DESCRIBE TABLE) before every insert."""

    def __init__(self, database: str) -> None:
        self._database = database
        self._types: dict[str, Sequence[ClickHouseType]] = {}

    def insert(self, client: Client, rows: NetworkRows, token: str) -> None:
        """Insert the rows; the same token again stores nothing more (see schema.render)."""
        for table in ("network_latency", "network_peers"):
            columns = rows.table(table)
            if not columns["timestamp"]:
                continue
            client.insert(
                table,
                list(columns.values()),
                column_names=list(columns),
                database=self._database,
                column_types=self._column_types(client, table, list(columns)),
                column_oriented=True,
                settings={"insert_deduplication_token": token},
            )

    def _column_types(
        self, client: Client, table: str, names: list[str]
    ) -> Sequence[ClickHouseType]:
        types = self._types.get(table)
        if types is None:
            context = client.create_insert_context(table, names, database=self._database)
            types = self._types[table] = context.column_types
        return types


def _add(columns: dict[str, list[Any]], row: dict[str, Any], common: dict[str, Any]) -> None:
    row.update(common)
    for name, values in columns.items():
        values.append(row[name])


def _latency_row(histogram: LatencyHistogram, where: str) -> dict[str, Any]:
    row = _process_columns(histogram.labels, where)
    row["syscall"] = histogram.syscall
    for name in ("count", "errors", "eagain", "sum_ns", "max_ns"):
        row[name] = _below(getattr(histogram, name), _UINT64, f"{where}.{name}")
    row.update(_bucket_columns(histogram.buckets, f"{where}.buckets"))
    return row


def _peer_row(connection: Connection, where: str) -> dict[str, Any]:
    row = _process_columns(connection.labels, where)
    row.update(address=connection.address, port=connection.port, result=connection.result)
    row["count"] = _below(connection.count, _UINT64, f"{where}.count")
    row["max_ns"] = _below(connection.max_ns, _UINT64, f"{where}.max_ns")
    row.update(_bucket_columns(connection.buckets, f"{where}.buckets"))
    row["peer"] = dict(connection.peer)
    return row


def _process_columns(labels: Mapping[str, str], where: str) -> dict[str, Any]:
    """The label columns, pid and the Map of the other labels, as the samples table has them."""
    extra = dict(labels)
    row: dict[str, Any] = {name: extra.pop(name, "") for name in LABEL_COLUMNS}
    row["pid"] = _pid(extra.pop(PID_LABEL, None), where)
    row["labels"] = extra
    return row


def _bucket_columns(buckets: Mapping[int, int], where: str) -> dict[str, list[int]]:
    keys = sorted(buckets)
    counts = [_below(buckets[key], _UINT32, f"{where}[{key}]") for key in keys]
    return {"bucket_keys": keys, "bucket_counts": counts}


def _below(value: int, limit: int, where: str) -> int:
    if value >= limit:
        raise InvalidBatchError(f"{where}={value} is too large (at most {limit - 1})")
    return value


def _pid(text: str | None, where: str) -> int:
    if text is None:
        return 0
    if not text.isascii() or not text.isdigit() or int(text) > _MAX_PID:
        raise InvalidBatchError(f"{where}: label pid={text!r} is not a process id")
    return int(text)


def _timestamp(end_time_ns: int) -> datetime:
    if end_time_ns >= _MAX_TIME_NS:
        raise InvalidBatchError(f"end_time_ns={end_time_ns} is out of range")
    return _EPOCH + timedelta(microseconds=end_time_ns // 1000)
