"""Writing a group of batches: every table once per group, every batch once ever.

Groups come from GroupCommit (server/group_commit.py). Before writing, the
writer asks each table it is about to write which of the group's batches it
holds already, by batch_key (schema version 4): a retried batch, or one whose
earlier write failed between tables. Those are left out of that table. So a
batch is stored once in each table however often it is sent, and a batch that
failed half way is completed by its retry. Within a table a group is one
insert, hence one part per day: its batches are stored together or not at all.

On a cluster an insert is split over shards, and one shard failing leaves the
others written: there the writer takes groups of one batch and relies on the
insert deduplication token instead, which each shard keeps (schema.render).

Asking the tables costs a query per group (most of a small batch's cost in
chDB), so it is asked only for batches that may have been sent before: the
agent marks a body's first send (Podflame-Attempt: 1, see routers/ingest.py),
which no replica can hold yet; anything else (a retry, a spooled batch sent
again after a restart, a client that does not say) is looked up. Batches this
writer stored lately are also remembered, so a retry that races its original
into this replica is caught even when the original skipped the lookup.
"""

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from podflame.model import Batch
from podflame.model.frames import Frame
from podflame.server.network_store import NetworkInserter, NetworkRows, network_rows
from podflame.server.rows import BatchRows, batch_rows, frame_details, samples_block
from podflame.server.schema import (
    BATCH_KEY_TABLES,
    SAMPLE_COLUMNS,
    STACK_COLUMNS,
    quote_database,
)
from podflame.server.stack_cache import StackCache
from podflame.server.store import IngestResult


@dataclass(frozen=True)
class PreparedBatch:
    """A batch's rows, checked and encoded before anything is written."""

    batch_id: str
    rows: BatchRows
    samples: bytes  # a Native block, empty without samples
    network: NetworkRows
    # The agent's first send of this body: no table can hold it yet.
    first_send: bool = False

    @property
    def key(self) -> int:
        return self.rows.batch_key

    @property
    def weight(self) -> int:
        """Rows to write, which is what a write's cost grows with."""
        return self.rows.sample_count + len(self.network)

    @property
    def end_ms(self) -> int:
        return self.rows.timestamp_ms

    def result(self) -> IngestResult:
        return IngestResult(stored_samples=self.rows.sample_count, stacks=len(self.rows.stacks))

    def has_rows_in(self, table: str) -> bool:
        if table == "samples":
            return bool(self.samples)
        return bool(self.network.table(table)["timestamp"])


def prepare(batch: Batch, cache: StackCache, first_send: bool = False) -> PreparedBatch:
    """Raises InvalidBatchError for what the tables cannot hold, before any write."""
    rows = batch_rows(batch, cache)
    network = network_rows(batch, rows.batch_key)
    block = samples_block(rows) if rows.sample_count else b""
    return PreparedBatch(batch.batch_id, rows, block, network, first_send)


# Keys of batches a writer stored lately (8 bytes each, ~4 MB with the dict's overhead):
# at 1,000 agents' two batches every 10 s, the last ~4 minutes.
RECENT_BATCHES = 50_000


class RecentBatches:
    """A bounded memory of the batch keys stored by this process, oldest forgotten first."""

    def __init__(self, limit: int = RECENT_BATCHES) -> None:
        self._limit = limit
        self._keys: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, key: int) -> bool:
        return key in self._keys

    def add(self, keys: Iterable[int]) -> None:
        self._keys.update(dict.fromkeys(keys))
        while len(self._keys) > self._limit:
            self._keys.popitem(last=False)


class GroupWriter:
    """`look_up_stored`: leave out what a table holds already (off on a cluster)."""

    def __init__(self, database: str, cache: StackCache, look_up_stored: bool) -> None:
        self._database = database
        self._db = quote_database(database)
        self._cache = cache
        self._look_up_stored = look_up_stored
        self._network = NetworkInserter(database)
        # Read and changed by the one thread writing at a time (GroupCommit).
        self._recent = RecentBatches()

    def write(self, client: Client, group: Sequence[PreparedBatch]) -> None:
        unique: dict[int, PreparedBatch] = {}
        for batch in group:  # the same batch twice (a retry racing its original)
            if batch.key not in self._recent:
                unique.setdefault(batch.key, batch)
        batches = list(unique.values())
        resent = [batch for batch in batches if not batch.first_send]
        stored = self._stored(client, resent) if self._look_up_stored and resent else {}

        def missing(table: str) -> list[PreparedBatch]:
            held = stored.get(table, set())
            return [b for b in batches if b.has_rows_in(table) and b.key not in held]

        samples = missing("samples")
        if samples:
            # Stacks first: a sample row must never refer to a stack not stored yet.
            self._insert_new_stacks(client, (batch.rows.uncached for batch in samples))
            client.raw_insert(
                f"{self._db}.samples",
                SAMPLE_COLUMNS,
                b"".join(batch.samples for batch in samples),
                settings={"insert_deduplication_token": _token(samples)},
                fmt="Native",
            )
        for table in ("network_latency", "network_peers"):
            batches_missing = missing(table)
            if batches_missing:
                rows = NetworkRows()
                for batch in batches_missing:
                    rows.extend(batch.network, table)
                self._network.insert(client, rows, _token(batches_missing))
        self._recent.add(unique)  # every table holds them now

    def _stored(self, client: Client, batches: list[PreparedBatch]) -> dict[str, set[int]]:
        """Per table, the keys of the batches it holds already."""
        keys = [batch.key for batch in batches]
        # A batch's rows all carry its end time: the time range prunes parts.
        low = min(batch.end_ms for batch in batches) - 1
        high = max(batch.end_ms for batch in batches) + 1
        selects = [
            f"SELECT '{table}', batch_key FROM {self._db}.{table}"
            " WHERE timestamp BETWEEN fromUnixTimestamp64Milli({low:Int64})"
            " AND fromUnixTimestamp64Milli({high:Int64}) AND batch_key IN {keys:Array(UInt64)}"
            for table in BATCH_KEY_TABLES
            if any(batch.has_rows_in(table) for batch in batches)
        ]
        if not selects:
            return {}
        parameters: dict[str, Any] = {"low": low, "high": high, "keys": keys}
        result = client.query(" UNION DISTINCT ".join(selects), parameters=parameters)
        stored: dict[str, set[int]] = {}
        for table, key in result.result_rows:
            stored.setdefault(table, set()).add(int(key))
        return stored

    def _insert_new_stacks(
        self, client: Client, parts: Iterable[dict[int, tuple[Frame, ...]]]
    ) -> None:
        # Most stacks of a batch were stored before, and the cache knows most of
        # those; of the rest, sending only the new ones keeps the stacks table
        # (and its merges) small.
        stacks = {key: frames for part in parts for key, frames in part.items()}
        if not stacks:
            return
        known = client.query(
            f"SELECT DISTINCT hash FROM {self._db}.stacks WHERE hash IN {{hashes:Array(UInt64)}}",
            parameters={"hashes": list(stacks)},
        ).result_columns
        seen = set(known[0]) if known else set()
        new = [
            [key, [frame.label for frame in frames], frame_details(frames)]
            for key, frames in stacks.items()
            if key not in seen
        ]
        if new:
            client.insert("stacks", new, column_names=list(STACK_COLUMNS), database=self._database)
        self._cache.add(stacks)


def _token(batches: Sequence[PreparedBatch]) -> str:
    """A group's insert deduplication token: a lone batch's is its id, as before version 4."""
    if len(batches) == 1:
        return batches[0].batch_id
    ids = "\n".join(sorted(batch.batch_id for batch in batches))
    return "group-" + hashlib.blake2b(ids.encode(), digest_size=16).hexdigest()
