"""ProfileStore on ClickHouse, embedded (chDB) or a server, through clickhouse-connect.

The same SQL runs on both; all aggregation happens in ClickHouse, so Python
only ever sees one row per distinct stack or function.
"""

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError

from podflame.model import Batch
from podflame.server.rows import BatchRows, batch_rows
from podflame.server.schema import STACK_COLUMNS, migrate, quote_database
from podflame.server.selector import SelectorError
from podflame.server.sqlfilter import Filter, regex_check, sample_filter
from podflame.server.store import (
    FunctionCost,
    IngestResult,
    ProfileQuery,
    StackTotal,
    StorageError,
    TopResult,
)

DEFAULT_DATABASE = "podflame"
_CANNOT_COMPILE_REGEXP = 427

T = TypeVar("T")

# Sums per stack first, then fetches frames only for the stacks found. The
# stacks table may hold a stack twice until ReplacingMergeTree merges, hence
# GROUP BY hash; the IN lets the primary key skip the stacks not selected.
_STACK_TOTALS = """
WITH agg AS (
    SELECT stack_hash, sum(value) AS value FROM {db}.samples WHERE {where} GROUP BY stack_hash
)
SELECT any(s.frames) AS frames, any(agg.value) AS value
FROM {db}.stacks AS s INNER JOIN agg ON s.hash = agg.stack_hash
WHERE s.hash IN (SELECT stack_hash FROM agg)
GROUP BY s.hash
"""

# arrayDistinct: a function on a stack several times (recursion) adds that
# stack's value to its total once.
_TOP = """
SELECT name, sumIf(value, leaf = name) AS self, sum(value) AS total
FROM (
    SELECT arrayJoin(arrayDistinct(frames)) AS name, frames[-1] AS leaf, value
    FROM ({stack_totals})
)
GROUP BY name
ORDER BY self DESC, total DESC, name
LIMIT {{limit:UInt32}}
"""

_TOTAL = "SELECT sum(value) FROM {db}.samples WHERE {where}"


class ClickHouseStore:
    def __init__(
        self, client: Client, database: str = DEFAULT_DATABASE, retention_days: int = 7
    ) -> None:
        self._client = client
        self._db = quote_database(database)
        self.database = database
        # One chDB engine per process, and clients are not thread-safe: the
        # server's worker threads take turns.
        self._lock = threading.Lock()
        self._run(lambda c: migrate(c, database, retention_days))

    def ingest(self, batch: Batch) -> IngestResult:
        rows = batch_rows(batch)
        self._run(lambda c: self._write(c, rows, batch.batch_id))
        return IngestResult(stored_samples=rows.sample_count, stacks=len(rows.stacks))

    def stacks(self, query: ProfileQuery) -> list[StackTotal]:
        where = sample_filter(query)
        sql = self._stack_totals_sql(where) + "ORDER BY frames"
        rows = self._select(query, sql, where.parameters)
        return [StackTotal(tuple(frames), int(value)) for frames, value in rows]

    def top(self, query: ProfileQuery, limit: int) -> TopResult:
        where = sample_filter(query)
        sql = _TOP.format(stack_totals=self._stack_totals_sql(where))
        rows = self._select(query, sql, {**where.parameters, "limit": limit})
        total_sql = _TOTAL.format(db=self._db, where=where.sql)
        (total,) = self._select(query, total_sql, where.parameters)[0]
        functions = tuple(FunctionCost(name, int(own), int(all_)) for name, own, all_ in rows)
        return TopResult(total=int(total), functions=functions)

    def ping(self) -> None:
        self._run(lambda c: c.query("SELECT 1"))

    def close(self) -> None:
        with self._lock:
            self._client.close()

    def _stack_totals_sql(self, where: Filter) -> str:
        return _STACK_TOTALS.format(db=self._db, where=where.sql)

    def _write(self, client: Client, rows: BatchRows, batch_id: str) -> None:
        # Stacks first: a sample row must never refer to a stack not stored yet.
        self._insert_new_stacks(client, rows.stacks)
        if rows.sample_count:
            client.insert(
                "samples",
                list(rows.columns.values()),
                column_names=list(rows.columns),
                database=self.database,
                column_oriented=True,
                settings={"insert_deduplication_token": batch_id},
            )

    def _insert_new_stacks(self, client: Client, stacks: dict[int, list[str]]) -> None:
        # Most stacks of a batch were seen before; sending only new ones keeps
        # the stacks table (and its merges) small.
        if not stacks:
            return
        known = client.query(
            f"SELECT DISTINCT hash FROM {self._db}.stacks WHERE hash IN {{hashes:Array(UInt64)}}",
            parameters={"hashes": list(stacks)},
        ).result_columns
        seen = set(known[0]) if known else set()
        new = [[key, frames] for key, frames in stacks.items() if key not in seen]
        if new:
            client.insert("stacks", new, column_names=list(STACK_COLUMNS), database=self.database)

    def _select(
        self, query: ProfileQuery, sql: str, parameters: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        try:
            return self._query(sql, parameters)
        except _RegexError as error:
            raise self._selector_error(query, error.message) from None

    def _query(self, sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        result = self._run(lambda c: c.query(sql, parameters=parameters), regex_errors=True)
        return [tuple(row) for row in result.result_rows]

    def _selector_error(self, query: ProfileQuery, message: str) -> SelectorError:
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


class _RegexError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _regex_message(text: str) -> str:
    # "... cannot compile re2: ((, error: missing ): ((. Look at ..." -> "missing ): (("
    _, _, rest = text.partition("error: ")
    return rest.split(". Look at")[0].strip() or text


def open_store(dsn: str, retention_days: int = 7) -> ClickHouseStore:
    """Connect to `chdb://<path>` (embedded) or `http(s)://user:pass@host:8123/database`."""
    scheme = urlsplit(dsn).scheme
    if scheme == "chdb":
        client = clickhouse_connect.get_client(dsn=f"chdb://{_chdb_path(dsn)}")
        return ClickHouseStore(client, DEFAULT_DATABASE, retention_days)
    if scheme in ("http", "https"):
        server, database = _split_database(dsn)
        client = clickhouse_connect.get_client(dsn=server)
        return ClickHouseStore(client, database, retention_days)
    raise ValueError(f"unsupported storage {dsn!r}: use chdb://<path> or http(s)://...")


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
