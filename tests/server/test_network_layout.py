"""The network_latency table's layout: bytes per histogram after merges, granules read.

Rows are generated inside ClickHouse as ingest writes them: 500 pods x 13
system calls per 10 s batch (one batch per node: batch_key), each histogram 8
to 40 adjacent non-empty buckets with random counts (random counts compress
worse than real, bell-shaped ones).
"""

import re
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client

from podflame.server.clickhouse_store import ClickHouseStore
from podflame.server.selector import parse_selector
from podflame.server.store import LabelSelection, LatencyQuery
from podflame.server.timerange import TimeRange
from tests.server.network_batches import statement_of

PODS = 500
SYSCALLS = 13
BATCHES = 30
BATCH_MS = 10_000
HISTOGRAMS = PODS * SYSCALLS * BATCHES

_GENERATE = f"""
INSERT INTO {{db}}.network_latency
SELECT fromUnixTimestamp64Milli(toInt64({{{{start:Int64}}}} + batch * {BATCH_MS}), 'UTC'),
    'node-' || toString(pod % 20), 'ns-' || toString(pod % 10), 'pod-' || toString(pod),
    'app', 'Deployment', 'wl-' || toString(pod % 50), 'python3', 1000 + pod,
    if(pod % 2 = 0, map('team', 't' || toString(pod % 5)), map()),
    'call-' || toString(call),
    arraySum(counts), cityHash64(number, 'e') % 3, cityHash64(number, 'a') % 10,
    arraySum(counts) * 1000, 1000000 + cityHash64(number, 'm') % 1000000,
    arrayMap(i -> toUInt16(first + i), range(width)), counts,
    cityHash64(pod % 20, batch)  -- batch_key: one batch per node and interval
FROM (
    SELECT number, number % {PODS} AS pod, intDiv(number, {PODS}) % {SYSCALLS} AS call,
        intDiv(number, {PODS * SYSCALLS}) AS batch,
        -- each pod and call has its own typical latency: where its buckets start
        toUInt16(60 + cityHash64(pod, call) % 150) AS first,
        8 + cityHash64(number, 'w') % 33 AS width,
        arrayMap(i -> toUInt32(1 + cityHash64(number, i) % 50), range(width)) AS counts
    FROM numbers({HISTOGRAMS})
)
"""


@pytest.fixture
def generated(store: ClickHouseStore, chdb_client: Client) -> datetime:
    """Fills the store's network_latency; returns the time of the first row."""
    start = datetime.now(UTC) - timedelta(hours=1)
    start_ms = int(start.timestamp() * 1000)
    chdb_client.command(_GENERATE.format(db=store.database), parameters={"start": start_ms})
    chdb_client.command(f"OPTIMIZE TABLE {store.database}.network_latency FINAL")
    return start


def test_a_merged_histogram_takes_about_a_byte_per_bucket(
    store: ClickHouseStore, chdb_client: Client, generated: datetime
) -> None:
    rows, size, buckets = chdb_client.query(
        "SELECT (SELECT sum(rows) FROM system.parts WHERE database = {db:String}"
        "        AND table = 'network_latency' AND active),"
        "       (SELECT sum(data_compressed_bytes) FROM system.parts"
        "        WHERE database = {db:String} AND table = 'network_latency' AND active),"
        f"      (SELECT sum(length(bucket_keys)) FROM {store.database}.network_latency)",
        parameters={"db": store.database},
    ).result_rows[0]
    assert rows == HISTOGRAMS
    # Counts of 1..50 carry ~5.6 bits each; labels, times and totals add a few bytes a row.
    per_bucket = (size - 8 * rows) / buckets
    assert size / rows < 8 + 1.2 * buckets / rows, (size / rows, buckets / rows)
    assert per_bucket < 1.2


def test_a_pod_over_minutes_reads_few_granules(
    store: ClickHouseStore, chdb_client: Client, generated: datetime
) -> None:
    window = TimeRange(generated + timedelta(minutes=1), generated + timedelta(minutes=3))
    for selector in ('{pod="pod-7"}', '{namespace="ns-7", pod="pod-7"}', '{workload="wl-7"}'):
        query = LatencyQuery(LabelSelection(parse_selector(selector), window), ("syscall",), 10)
        sql, parameters = statement_of(store, chdb_client, query)
        explain = chdb_client.query(f"EXPLAIN indexes = 1 {sql}", parameters=parameters)
        # Each index narrows the previous one's granules: first total, last read.
        steps = re.findall(r"Granules: (\d+)/(\d+)", str(explain.result_rows))
        read, total = int(steps[-1][0]), int(steps[0][1])
        assert read <= 3 and read * 10 < total, (selector, read, total)
