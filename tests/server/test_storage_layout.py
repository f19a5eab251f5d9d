"""The samples table's layout: bytes per row, granules read, frames cached.

Rows are generated inside ClickHouse (500 pods, a batch per pod every 2 min
with a few of its workload's stacks each), shaped as ingest writes them.
"""

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client

from podflame.model import Batch
from podflame.server.clickhouse_store import ClickHouseStore
from podflame.server.selector import parse_selector
from podflame.server.sqlfilter import sample_filter
from podflame.server.store import ProfileQuery
from podflame.server.timerange import TimeRange
from tests.server.conftest import batch

ROWS = 400_000
PODS = 500
ROWS_PER_BATCH = 7
BATCH_MS = 120_000

_GENERATE = f"""
INSERT INTO {{db}}.samples (profile_type, timestamp, node, namespace, pod, container,
    workload_kind, workload, comm, pid, labels, stack_hash, value, batch_key)
SELECT 'cpu',
    fromUnixTimestamp64Milli(toInt64({{{{start:Int64}}}} + batch * {BATCH_MS} + pod * 37), 'UTC'),
    'node-' || toString(pod % 20), 'ns-' || toString(pod % 10), 'pod-' || toString(pod),
    'app', 'Deployment', 'wl-' || toString(pod % 50), 'python3', 1000 + pod,
    if(pod % 2 = 0, map('team', 't' || toString(pod % 5)), map()),
    -- a workload's 2000 stacks, a few of them hot
    cityHash64(pod % 50, toUInt64(2000 * pow((cityHash64(number) % 1000000) / 1e6, 3))),
    52631578 * (1 + cityHash64(number, 'v') % 5),
    cityHash64(pod % 20, batch)  -- one batch per node and interval
FROM (
    SELECT number, number % {PODS} AS pod, intDiv(intDiv(number, {PODS}), {ROWS_PER_BATCH}) AS batch
    FROM numbers({ROWS})
)
"""


@pytest.fixture
def generated(store: ClickHouseStore, chdb_client: Client) -> datetime:
    """Fills the store's samples; returns the time of the first row."""
    start = datetime.now(UTC) - timedelta(hours=4)
    start_ms = int(start.timestamp() * 1000)
    chdb_client.command(_GENERATE.format(db=store.database), parameters={"start": start_ms})
    chdb_client.command(f"OPTIMIZE TABLE {store.database}.samples FINAL")
    return start


def test_a_merged_row_takes_less_than_10_bytes(
    store: ClickHouseStore, chdb_client: Client, generated: datetime
) -> None:
    rows, size = chdb_client.query(
        "SELECT sum(rows), sum(data_compressed_bytes) FROM system.parts"
        " WHERE database = {db:String} AND table = 'samples' AND active",
        parameters={"db": store.database},
    ).result_rows[0]
    assert rows == ROWS
    assert size / rows < 10, size / rows


def test_a_pod_over_an_hour_reads_few_granules(
    store: ClickHouseStore, chdb_client: Client, generated: datetime
) -> None:
    hour = TimeRange(generated + timedelta(hours=1), generated + timedelta(hours=2))
    # service_name alone (Grafana's selector) uses its set index (schema version 6).
    selectors = ('{pod="pod-7"}', '{namespace="ns-7", pod="pod-7"}', '{workload="wl-7"}',
                 '{service_name="ns-7/wl-7"}', '{service_name=~"ns-7/wl-(7|8)"}')  # fmt: skip
    for selector in selectors:
        where = sample_filter(ProfileQuery("cpu", parse_selector(selector), hour))
        explain = chdb_client.query(
            f"EXPLAIN indexes = 1 SELECT stack_hash, sum(value) FROM {store.database}.samples"
            f" WHERE {where.sql} GROUP BY stack_hash",
            parameters=where.parameters,
        ).result_rows
        # Each index narrows the previous one's granules: first total, last read.
        steps = re.findall(r"Granules: (\d+)/(\d+)", str(explain))
        read, total = int(steps[-1][0]), int(steps[0][1])
        assert read <= 3 and read * 10 < total, (selector, read, total)


def test_frames_are_cached_by_hash(
    store: ClickHouseStore, chdb_client: Client, ingest_one: None
) -> None:
    query = ProfileQuery("cpu", (), TimeRange(datetime.now(UTC) - timedelta(hours=1), _later()))
    first = store.stacks(query)
    # A hash names its frames for good, so the cache never has to ask again.
    chdb_client.command(f"TRUNCATE TABLE {store.database}.stacks")
    assert store.stacks(query) == first
    assert [stack.frames for stack in first] == [("main", "work")]


def test_samples_have_no_per_row_batch_id(store: ClickHouseStore, chdb_client: Client) -> None:
    columns = chdb_client.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = 'samples'",
        parameters={"db": store.database},
    ).result_rows
    assert ("batch_id",) not in columns


@pytest.fixture
def ingest_one(store: ClickHouseStore) -> None:
    store.ingest(Batch.model_validate(batch([["main", "work"]], [({"pod": "p"}, [(0, 5)])])))


def _later() -> datetime:
    return datetime.fromtimestamp(time.time() + 60, UTC)
