"""ClickHouse tables and their migrations.

Each migration runs once per database, recorded in `schema_version`; every
statement is idempotent too (IF NOT EXISTS), so two servers starting at once
against one database do no harm.
"""

import re

from clickhouse_connect.driver.client import Client

# Labels common enough to deserve their own column: filtering on them reads
# one small LowCardinality column instead of the `labels` map.
LABEL_COLUMNS = ("node", "namespace", "pod", "container", "workload_kind", "workload", "comm")
PID_LABEL = "pid"
SAMPLE_COLUMNS = (
    "profile_type",
    "timestamp",
    *LABEL_COLUMNS,
    "pid",
    "labels",
    "stack_hash",
    "value",
)
STACK_COLUMNS = ("hash", "frames")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS {db}.schema_version (
    version UInt32,
    applied_at DateTime DEFAULT now()
) ENGINE = MergeTree ORDER BY version
"""

# Stacks are stored once, keyed by stack_hash(); re-inserting one is harmless
# because ReplacingMergeTree folds duplicates (queries dedupe until it has).
# Small granules: queries look stacks up by a scattered set of hashes.
_STACKS_V1 = """
CREATE TABLE IF NOT EXISTS {db}.stacks (
    hash UInt64,
    frames Array(String) CODEC(ZSTD(1))
) ENGINE = ReplacingMergeTree ORDER BY hash
SETTINGS index_granularity = 1024
"""

_LABEL_COLUMNS_DDL = ",\n    ".join(f"{name} LowCardinality(String)" for name in LABEL_COLUMNS)

# Sorted by the Kubernetes hierarchy, then node (which alone clusters processes
# outside pods), then time: a namespace, workload or pod over a time range is
# one contiguous key range. {pod="x"} alone skips the key's namespace and
# workload, so set indexes let it skip the granules of other pods.
# Codecs keep a merged row near 4.5 bytes (measured, docs/api.md): rows of one
# batch share a timestamp (Delta makes it zeros), values are a few multiples of
# the sampling period, and a pod's hot stacks repeat batch after batch.
# There is no batch_id column: the insert's deduplication token (within the
# window below) already stores a retried batch once, and a random id per row
# would cost more than all other columns together.
_SAMPLES_V1 = f"""
CREATE TABLE IF NOT EXISTS {{db}}.samples (
    profile_type LowCardinality(String),
    timestamp DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    {_LABEL_COLUMNS_DDL},
    pid UInt32 CODEC(ZSTD(1)),
    labels Map(LowCardinality(String), String),
    stack_hash UInt64 CODEC(ZSTD(3)),
    value Int64 CODEC(ZSTD(1)),
    INDEX pod_set pod TYPE set(64) GRANULARITY 1,
    INDEX workload_set workload TYPE set(64) GRANULARITY 1,
    INDEX comm_bloom comm TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(timestamp)
ORDER BY (profile_type, namespace, workload, pod, node, timestamp)
TTL toDateTime(timestamp) + INTERVAL {{retention_days}} DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1
"""

# Version 3: each part of network_latency also holds its rows summed per
# process, system call and hour, so hours-long queries read 360 times fewer
# rows. ClickHouse picks the projection by itself for a query whose expressions
# it can answer (network_queries.py writes whole hours that way); parts without
# it (written before, until MATERIALIZE gets to them) are read as rows. It lives
# in the same parts, so TTL and deduplication cover it. Sorted as the table: a
# namespace, workload or pod is one key range.
_PROCESS_KEY = (
    "namespace, workload, pod, node, container, workload_kind, comm, pid, labels, syscall,"
    " toStartOfHour(timestamp)"
)
HOURLY_HISTOGRAM = "sumMap(mapFromArrays(bucket_keys, bucket_counts))"
_HOURLY_LATENCY_V3 = f"""
ALTER TABLE {{db}}.network_latency ADD PROJECTION IF NOT EXISTS hourly (
    SELECT {_PROCESS_KEY}, count(), sum(count), sum(errors), sum(eagain), max(max_ns),
           {HOURLY_HISTOGRAM}
    GROUP BY {_PROCESS_KEY}
)
"""
_MATERIALIZE_HOURLY_V3 = "ALTER TABLE {db}.network_latency MATERIALIZE PROJECTION hourly"

# Network latency per process, system call and batch interval (agent net_wait
# batches). A histogram is two parallel arrays of its non-empty buckets: the
# bucket indexes ascend (Delta makes them small) and counts are small ints
# (T64 drops their zero high bytes). Measured after merges with ~31 non-empty
# buckets per histogram: 34 bytes per histogram row, all columns; a Map column
# took 66, one row per bucket 33 with 31 times the rows (docs/api.md).
# Same sort key and retention as samples: one pod's or workload's time range is
# one key range.
_NETWORK_LATENCY_V2 = f"""
CREATE TABLE IF NOT EXISTS {{db}}.network_latency (
    timestamp DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    {_LABEL_COLUMNS_DDL},
    pid UInt32 CODEC(ZSTD(1)),
    labels Map(LowCardinality(String), String),
    syscall LowCardinality(String),
    count UInt64 CODEC(T64, ZSTD(1)),
    errors UInt64 CODEC(T64, ZSTD(1)),
    eagain UInt64 CODEC(T64, ZSTD(1)),
    sum_ns UInt64 CODEC(ZSTD(1)),
    max_ns UInt64 CODEC(ZSTD(1)),
    bucket_keys Array(UInt16) CODEC(Delta, ZSTD(1)),
    bucket_counts Array(UInt32) CODEC(T64, ZSTD(1)),
    INDEX pod_set pod TYPE set(64) GRANULARITY 1,
    INDEX workload_set workload TYPE set(64) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(timestamp)
ORDER BY (namespace, workload, pod, node, timestamp)
TTL toDateTime(timestamp) + INTERVAL {{retention_days}} DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1
"""

# connect() outcomes per process, destination and result; `peer` holds the
# destination pod's labels when the agent knew the address.
_NETWORK_PEERS_V2 = f"""
CREATE TABLE IF NOT EXISTS {{db}}.network_peers (
    timestamp DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    {_LABEL_COLUMNS_DDL},
    pid UInt32 CODEC(ZSTD(1)),
    labels Map(LowCardinality(String), String),
    address LowCardinality(String),
    port UInt16,
    result LowCardinality(String),
    count UInt64 CODEC(T64, ZSTD(1)),
    max_ns UInt64 CODEC(ZSTD(1)),
    bucket_keys Array(UInt16) CODEC(Delta, ZSTD(1)),
    bucket_counts Array(UInt32) CODEC(T64, ZSTD(1)),
    peer Map(LowCardinality(String), String),
    INDEX pod_set pod TYPE set(64) GRANULARITY 1,
    INDEX workload_set workload TYPE set(64) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(timestamp)
ORDER BY (namespace, workload, pod, node, timestamp)
TTL toDateTime(timestamp) + INTERVAL {{retention_days}} DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1
"""

# Applied on every start, so changing retention_days takes effect without a
# migration; existing parts are not rewritten, old days simply expire later.
_RETENTION = """
ALTER TABLE {db}.{table}
MODIFY TTL toDateTime(timestamp) + INTERVAL {retention_days} DAY
SETTINGS materialize_ttl_after_modify = 0
"""
# The tables whose rows expire after the retention.
RETENTION_TABLES = ("samples", "network_latency", "network_peers")

# Index i holds the statements that bring the schema to version i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (_STACKS_V1, _SAMPLES_V1),
    (_NETWORK_LATENCY_V2, _NETWORK_PEERS_V2),
    (_HOURLY_LATENCY_V3, _MATERIALIZE_HOURLY_V3),
)


def quote_database(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"invalid database name {name!r}")
    return f"`{name}`"


def migrate(client: Client, database: str, retention_days: int) -> None:
    """Create the database and bring its tables to the latest version."""
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    db = quote_database(database)
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(_VERSION_TABLE.format(db=db))
    current = int(client.query(f"SELECT max(version) FROM {db}.schema_version").result_rows[0][0])
    for version, statements in enumerate(MIGRATIONS, start=1):
        if version <= current:
            continue
        for statement in statements:
            client.command(statement.format(db=db, retention_days=retention_days))
        client.command(f"INSERT INTO {db}.schema_version (version) VALUES ({version})")
    for table in RETENTION_TABLES:
        client.command(_RETENTION.format(db=db, table=table, retention_days=retention_days))
