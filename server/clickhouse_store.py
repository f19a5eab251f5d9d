"""Storage on ClickHouse, embedded (chDB) or a server, through clickhouse-connect: one
class for the three concerns of server/store.py (profiles, network, profile types).

The same SQL runs on both (server/queries.py); all aggregation happens in
ClickHouse, so Python only ever sees one row per distinct stack, function,
time bucket or label.
"""

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError

from podflame.model import Batch, ProfileType
from podflame.model.frames import Frame
from podflame.server.batch_writer import GroupWriter, PreparedBatch, prepare
from podflame.server.group_commit import GroupCommit
from podflame.server.network_queries import NetworkReader
from podflame.server.queries import (
    FRAMES,
    LABEL_NAMES,
    LABEL_VALUES,
    SERIES,
    STACK_VALUES,
    TIMELINE,
    TOP,
    TOTAL,
    stack_totals,
)
from podflame.server.rows import stack_of
from podflame.server.schema import (
    LABEL_COLUMNS,
    PID_LABEL,
    SERVICE_NAME_LABEL,
    migrate,
    quote_database,
    render,
)
from podflame.server.selector import SelectorError
from podflame.server.sqlfilter import (
    label_column,
    regex_check,
    sample_filter,
)
from podflame.server.stack_cache import StackCache
from podflame.server.store import (
    FunctionCost,
    IngestResult,
    LabelSelection,
    LatencyQuery,
    LatencyStep,
    LatencySums,
    PeerSums,
    ProfileQuery,
    SeriesPoint,
    StackTotal,
    StorageError,
    TopResult,
)

DEFAULT_DATABASE = "podflame"
_CANNOT_COMPILE_REGEXP = 427

T = TypeVar("T")

# The tables a batch is written to, in the order ingest writes them.
_WRITTEN = ("stacks", "samples", "network_latency", "network_peers")

# A write group's bounds: rows per insert stay far below ClickHouse's
# min_insert_block_size_rows (about 1 million), so a group's rows of a table
# are one block, hence one part per day, and within a minute of a busy
# server's batches.
MAX_GROUP_BATCHES = 128
MAX_GROUP_ROWS = 250_000

# Hashes per frames lookup: keeps a statement (and an HTTP request's
# parameters) well below ClickHouse's size limits.
_LOOKUP_CHUNK = 4000


# On a cluster, every table the queries name is Distributed. Their subqueries
# over another Distributed table (stacks IN samples) run once and ship the
# result to every shard (GLOBAL IN), since the two tables are sharded by
# different keys; and an insert returns only once every shard holds its rows,
# so a sample is never stored before its stack.
CLUSTER_SETTINGS = {"distributed_product_mode": "global", "insert_distributed_sync": 1}

# Pyroscope pushes add profile types at runtime (see profile_types).
_PROFILE_TYPES_TABLE = (
    "CREATE TABLE IF NOT EXISTS {db}.profile_types (name String, unit String,"
    " description String, added_at DateTime64(3) DEFAULT now64(3))"
    " ENGINE = MergeTree ORDER BY name"
)


class ClickHouseStore:
    """`cluster`: the ClickHouse cluster to spread tables over (schema.render)."""

    def __init__(
        self,
        client: Client,
        database: str = DEFAULT_DATABASE,
        retention_days: int = 7,
        cluster: str | None = None,
    ) -> None:
        self._client = client
        self._db = quote_database(database)
        self.database = database
        self.cluster = cluster
        # One chDB engine per process, and clients are not thread-safe: the
        # server's worker threads take turns.
        self._lock = threading.Lock()
        self._cache = StackCache()
        # On a cluster, batches are written one by one (see batch_writer).
        self._writer = GroupWriter(database, self._cache, look_up_stored=cluster is None)
        self._commits: GroupCommit[PreparedBatch, IngestResult] = GroupCommit(
            self._write_group,
            max_items=MAX_GROUP_BATCHES if cluster is None else 1,
            max_weight=MAX_GROUP_ROWS,
        )
        if cluster is not None:
            for key, value in CLUSTER_SETTINGS.items():
                client.set_client_setting(key, value)
        self._run(lambda c: migrate(c, database, retention_days, cluster))
        self._profile_types_ready = False

    def ingest(self, batch: Batch, first_send: bool = False) -> IngestResult:
        # Rows and their Native block are built before joining a write group:
        # another thread's write runs in ClickHouse meanwhile.
        prepared = prepare(batch, self._cache, first_send)
        return self._commits.submit(prepared, prepared.weight)

    def _write_group(self, group: Sequence[PreparedBatch]) -> list[IngestResult | Exception]:
        try:
            self._run(lambda c: self._writer.write(c, group))
        except StorageError as error:
            if len(group) == 1 or not isinstance(error.__cause__, DatabaseError):
                return [error] * len(group)
            # The engine refused the group: write its batches one by one, so
            # that a batch it cannot take fails alone. Nothing is stored twice:
            # the writer leaves out what a table holds already.
            return [self._write_group([batch])[0] for batch in group]
        return [batch.result() for batch in group]

    def stacks(self, query: ProfileQuery) -> list[StackTotal]:
        where = sample_filter(query)
        sums = self._select(
            query, STACK_VALUES.format(db=self._db, where=where.sql), where.parameters
        )
        frames = self._frames([key for key, _ in sums])
        # A stack whose frames are missing cannot be drawn; ingest stores frames
        # first, so only a hash collision or a lost stacks part would do this.
        found = [StackTotal(frames[key], int(value)) for key, value in sums if key in frames]
        return sorted(found, key=lambda stack: stack.frames)

    def top(self, query: ProfileQuery, limit: int) -> TopResult:
        where = sample_filter(query)
        sql = TOP.format(stack_totals=stack_totals(self._db, where.sql))
        rows = self._select(query, sql, {**where.parameters, "limit": limit})
        total_sql = TOTAL.format(db=self._db, where=where.sql)
        (total,) = self._select(query, total_sql, where.parameters)[0]
        functions = tuple(FunctionCost(name, int(own), int(all_)) for name, own, all_ in rows)
        return TopResult(total=int(total or 0), functions=functions)

    def timeline(self, query: ProfileQuery, step_seconds: int) -> list[tuple[int, int]]:
        where = sample_filter(query)
        sql = TIMELINE.format(db=self._db, where=where.sql)
        rows = self._select(query, sql, {**where.parameters, "step": step_seconds})
        return [(int(start), int(value)) for start, value in rows]

    def series(
        self, query: ProfileQuery, step_ms: int, group_by: tuple[str, ...], limit: int
    ) -> list[SeriesPoint]:
        where = sample_filter(query)
        columns = [label_column(where, name) for name in group_by]
        key = f"[{', '.join(columns)}]" if columns else "emptyArrayString()"
        sql = SERIES.format(db=self._db, where=where.sql, key=key)
        parameters = {**where.parameters, "step_ms": step_ms, "limit": limit}
        rows = self._select(query, sql, parameters)
        return [SeriesPoint(tuple(key), int(start), int(value)) for start, key, value in rows]

    def label_names(self, query: ProfileQuery, limit: int) -> list[str]:
        where = sample_filter(query)
        sql = LABEL_NAMES.format(db=self._db, where=where.sql)
        (*has_column, has_pid, map_keys) = self._select(query, sql, where.parameters)[0]
        names = {name for name, has in zip(LABEL_COLUMNS, has_column, strict=True) if has}
        names.update(map_keys)
        if has_pid:
            names.add(PID_LABEL)
        if names:
            # Every sample has one (schema.SERVICE_NAME_SQL).
            names.add(SERVICE_NAME_LABEL)
        return sorted(names)[:limit]

    def label_values(self, query: ProfileQuery, name: str, limit: int) -> list[str]:
        where = sample_filter(query)
        if name == PID_LABEL:
            value = order = "pid"
            where.conditions.append("pid != 0")
        else:
            value = order = label_column(where, name)
            where.conditions.append(f"{value} != ''")
        sql = LABEL_VALUES.format(db=self._db, where=where.sql, value=value, order=order)
        rows = self._select(query, sql, {**where.parameters, "limit": limit})
        return [str(row[0]) for row in rows]

    def network_latency(self, query: LatencyQuery) -> list[LatencySums]:
        return self._network(query.selection).latency(query)

    def network_latency_steps(self, query: LatencyQuery, step_seconds: int) -> list[LatencyStep]:
        return self._network(query.selection).latency_steps(query, step_seconds)

    def network_peers(self, selection: LabelSelection, limit: int) -> list[PeerSums]:
        return self._network(selection).peers(selection, limit)

    def _network(self, selection: LabelSelection) -> NetworkReader:
        return NetworkReader(self._db, lambda sql, params: self._select(selection, sql, params))

    def ping(self) -> None:
        # Touches every table ingest writes (reading nothing), so a table
        # gone or broken makes the server unready, not only a dead engine.
        sql = " UNION ALL ".join(f"SELECT 1 FROM {self._db}.{table} LIMIT 0" for table in _WRITTEN)
        self._run(lambda c: c.query(sql))

    def close(self) -> None:
        with self._lock:
            self._client.close()

    def limit_query_time(self, seconds: float) -> None:
        """ClickHouse stops any later query that runs longer (TIMEOUT_EXCEEDED -> 504)."""
        with self._lock:
            self._client.set_client_setting("max_execution_time", seconds)

    def _frames(self, hashes: list[int]) -> dict[int, tuple[Frame, ...]]:
        """Frames of each hash, from the cache or else the stacks table."""
        found, missing = self._cache.lookup(hashes)
        for start in range(0, len(missing), _LOOKUP_CHUNK):
            chunk = missing[start : start + _LOOKUP_CHUNK]
            rows = self._query(FRAMES.format(db=self._db), {"hashes": chunk})
            stacks = {int(key): stack_of(*stored) for key, stored in rows}
            found.update(self._cache.add(stacks))
        return found

    def _select(
        self, query: ProfileQuery | LabelSelection, sql: str, parameters: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        try:
            return self._query(sql, parameters)
        except _RegexError as error:
            raise self._selector_error(query, error.message) from None

    def _query(self, sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        result = self._run(lambda c: c.query(sql, parameters=parameters), regex_errors=True)
        return [tuple(row) for row in result.result_rows]

    def _selector_error(self, query: ProfileQuery | LabelSelection, message: str) -> SelectorError:
        """Point at the matcher whose regex ClickHouse rejected."""
        for matcher in query.matchers:
            if not matcher.op.is_regex:
                continue
            check = regex_check(matcher.anchored_regex)
            try:
                self._query(f"SELECT {check.sql}", check.parameters)
            except _RegexError as error:
                return SelectorError(
                    f"invalid regex for {matcher.name}: {error.message}", matcher.position
                )
        return SelectorError(f"invalid regex: {message}", 0)

    def _run(self, action: Callable[[Client], T], regex_errors: bool = False) -> T:
        with self._lock:
            try:
                return action(self._client)
            except DatabaseError as error:
                if regex_errors and error.code == _CANNOT_COMPILE_REGEXP:
                    raise _RegexError(_regex_message(str(error))) from error
                raise StorageError(f"storage failed: {error}") from error
            except (ClickHouseError, OSError) as error:
                raise StorageError(f"storage failed: {error}") from error

    def profile_types(self, add: Sequence[ProfileType] = ()) -> list[ProfileType]:
        # Outside MIGRATIONS on purpose: a tiny side table of the types learned at
        # runtime (Pyroscope pushes), created on first use. Rows are only added
        # for new names, so it stays small; argMin keeps the first unit recorded.
        def run(client: Client) -> list[ProfileType]:
            # Once per store: on a cluster this is distributed DDL, far too
            # slow to repeat on every request.
            if not self._profile_types_ready:
                for sql in render(_PROFILE_TYPES_TABLE, self.database, 1, self.cluster):
                    client.command(sql)
                self._profile_types_ready = True
            if add:
                rows = [[item.name, item.unit, item.description] for item in add]
                columns = ["name", "unit", "description"]
                client.insert("profile_types", rows, column_names=columns, database=self.database)
            result = client.query(
                "SELECT name, argMin(unit, added_at), argMin(description, added_at)"
                f" FROM {self._db}.profile_types GROUP BY name ORDER BY name"
            )
            return [ProfileType(*map(str, row)) for row in result.result_rows]

        return self._run(run)


class _RegexError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _regex_message(text: str) -> str:
    # "... cannot compile re2: ((, error: missing ): ((. Look at ..." -> "missing ): (("
    _, _, rest = text.partition("error: ")
    return rest.split(". Look at")[0].strip() or text


def open_store(
    dsn: str,
    retention_days: int = 7,
    query_timeout_seconds: float | None = None,
    cluster: str | None = None,
) -> ClickHouseStore:
    """Connect to `chdb://<path>` (embedded) or `http(s)://user:pass@host:8123/database`.

    With `query_timeout_seconds`, ClickHouse stops any query that runs longer
    (TIMEOUT_EXCEEDED, which the API answers with 504). With `cluster` (a
    ClickHouse server only), tables are replicated and sharded over it.
    """
    scheme = urlsplit(dsn).scheme
    if scheme == "chdb":
        if cluster is not None:
            raise ValueError("a ClickHouse cluster needs http(s):// storage, not embedded chDB")
        client = clickhouse_connect.get_client(dsn=f"chdb://{_chdb_path(dsn)}")
        database = DEFAULT_DATABASE
    elif scheme in ("http", "https"):
        server, database = _split_database(dsn)
        client = clickhouse_connect.get_client(dsn=server)
    else:
        raise ValueError(f"unsupported storage {dsn!r}: use chdb://<path> or http(s)://...")
    store = ClickHouseStore(client, database, retention_days, cluster)
    if query_timeout_seconds:
        store.limit_query_time(query_timeout_seconds)
    return store


def _chdb_path(dsn: str) -> str:
    """chdb://./data, chdb://data and chdb:///abs/data -> an absolute, existing directory."""
    path = Path(unquote(dsn.removeprefix("chdb://"))).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _split_database(dsn: str) -> tuple[str, str]:
    # The database may not exist yet, so connect to the server's default one
    # and let migrate() create ours.
    parts = urlsplit(dsn)
    database = unquote(parts.path.strip("/")) or DEFAULT_DATABASE
    return urlunsplit(parts._replace(path="")), database
