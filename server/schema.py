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
    "batch_id",
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
_STACKS_V1 = """
CREATE TABLE IF NOT EXISTS {db}.stacks (
    hash UInt64,
    frames Array(String)
) ENGINE = ReplacingMergeTree ORDER BY hash
"""

_LABEL_COLUMNS_DDL = ",\n    ".join(f"{name} LowCardinality(String)" for name in LABEL_COLUMNS)

# The deduplication window makes an insert carrying a batch_id already seen a
# no-op: that is how a retried batch is stored once.
_SAMPLES_V1 = f"""
CREATE TABLE IF NOT EXISTS {{db}}.samples (
    profile_type LowCardinality(String),
    timestamp DateTime64(3, 'UTC'),
    {_LABEL_COLUMNS_DDL},
    pid UInt32,
    labels Map(LowCardinality(String), String),
    stack_hash UInt64,
    value Int64,
    batch_id String
) ENGINE = MergeTree
PARTITION BY toDate(timestamp)
ORDER BY (profile_type, namespace, workload, pod, timestamp)
TTL toDateTime(timestamp) + INTERVAL {{retention_days}} DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1
"""

# Applied on every start, so changing retention_days takes effect without a
# migration; existing parts are not rewritten, old days simply expire later.
_RETENTION = """
ALTER TABLE {db}.samples
MODIFY TTL toDateTime(timestamp) + INTERVAL {retention_days} DAY
SETTINGS materialize_ttl_after_modify = 0
"""

# Index i holds the statements that bring the schema to version i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = ((_STACKS_V1, _SAMPLES_V1),)


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
    client.command(_RETENTION.format(db=db, retention_days=retention_days))
