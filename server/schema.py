"""ClickHouse tables and their migrations.

Each migration runs once per database, recorded in `schema_version`; every
statement is idempotent too (IF NOT EXISTS), so two servers starting at once
against one database do no harm.

Statements are written for one ClickHouse (embedded chDB or a server) and run
as written there. With a cluster name, render() turns each into its clustered
form: a ReplicatedMergeTree table `<name>_local` on every node plus a
Distributed table `<name>` over them, all ON CLUSTER. Queries keep reading and
writing `<name>`, so nothing else in the server knows about the cluster.
"""

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings.py imports this module, and the agent has no clickhouse_connect
    from clickhouse_connect.driver.client import Client

# Labels common enough to deserve their own column: filtering on them reads
# one small LowCardinality column instead of the `labels` map.
LABEL_COLUMNS = ("node", "namespace", "pod", "container", "workload_kind", "workload", "comm")
PID_LABEL = "pid"

SERVICE_NAME_LABEL = "service_name"
# Grafana's Pyroscope datasource picks profiles by `service_name`. Derived when read,
# so samples stored before it existed have it too: what a Pyroscope SDK pushed, else
# namespace/workload (namespace/pod for a bare pod) on Kubernetes, else the process name.
# The samples table stores it as a column (version 6), which queries read.
SERVICE_NAME_SQL = (
    "if(labels['service_name'] != '', labels['service_name'],"
    " if(namespace != '', concat(namespace, '/', if(workload != '', workload, pod)), comm))"
)
SAMPLE_COLUMNS = (
    "profile_type",
    "timestamp",
    *LABEL_COLUMNS,
    "pid",
    "labels",
    "stack_hash",
    "value",
    "batch_key",
)
STACK_COLUMNS = ("hash", "frames", "details")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Cluster names come from the servers' remote_servers configuration, where
# hyphens are common.
_CLUSTER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

_DATABASE = "CREATE DATABASE IF NOT EXISTS {db}"

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
# Codecs keep a merged row to a few bytes (docs/benchmarks.md, Server): rows of one
# batch share a timestamp (Delta makes it zeros), values are a few multiples of
# the sampling period, and a pod's hot stacks repeat batch after batch.
# Version 1 had no batch column: the insert's deduplication token (within the
# window below) stored a retried batch once. Version 4 adds batch_key, see there.
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
def _retention(table: str) -> str:
    return f"""
ALTER TABLE {{db}}.{table}
MODIFY TTL toDateTime(timestamp) + INTERVAL {{retention_days}} DAY
SETTINGS materialize_ttl_after_modify = 0
"""


# Version 4: every row names its batch (batch_key, a 64-bit hash of batch_id),
# so batches can be written many to one insert (server/group_commit.py) and a
# retried batch is still stored once: before writing, the writer looks for its
# key in each table (the bloom filter skips the granules without it). The rows
# of a batch lie next to each other in the sort key, so the column compresses
# to little (docs/operations.md has the figure). Rows from before have key 0.
BATCH_KEY_TABLES = ("samples", "network_latency", "network_peers")
_BATCH_KEY_V4 = tuple(
    statement
    for table in BATCH_KEY_TABLES
    for statement in (
        f"ALTER TABLE {{db}}.{table} ADD COLUMN IF NOT EXISTS batch_key UInt64 CODEC(ZSTD(1))",
        f"ALTER TABLE {{db}}.{table} ADD INDEX IF NOT EXISTS batch_bloom batch_key"
        " TYPE bloom_filter(0.01) GRANULARITY 1",
    )
)

# Version 5: typed frames (podflame.model.frames). `frames` keeps each frame's label,
# which the queries that aggregate by function read; `details` holds per frame
# (kind, module, offset or -1, file, line, resolved), or nothing when every frame
# is what its label says (rows.frame_details). Rows from before have none: their
# frames are read back from the labels (rows.stack_of).
FRAME_DETAIL_TYPE = (
    "Array(Tuple(kind LowCardinality(String), module String, offset Int64, file String,"
    " line UInt32, resolved Bool))"
)
_FRAME_DETAILS_V5 = (
    f"ALTER TABLE {{db}}.stacks ADD COLUMN IF NOT EXISTS details {FRAME_DETAIL_TYPE}"
    " CODEC(ZSTD(1))",
)

# Version 6: a selector on service_name alone (Grafana's usual one) could not use the
# sort key, service_name being derived (SERVICE_NAME_SQL; a Pyroscope SDK's may sit in
# any namespace). It is now a column ClickHouse computes on insert, with a set index:
# rows are sorted by namespace and workload, so a granule holds a few services and the
# index skips the granules of the others, for =, != and regex matchers alike (a granule
# with more than 64 is read). Parts from before get both by the MATERIALIZE mutations,
# in the background; until then their rows compute it when read, as before.
_SERVICE_NAME_V6 = (
    f"ALTER TABLE {{db}}.samples ADD COLUMN IF NOT EXISTS {SERVICE_NAME_LABEL}"
    f" LowCardinality(String) MATERIALIZED {SERVICE_NAME_SQL}",
    f"ALTER TABLE {{db}}.samples ADD INDEX IF NOT EXISTS service_name_set {SERVICE_NAME_LABEL}"
    " TYPE set(64) GRANULARITY 1",
    f"ALTER TABLE {{db}}.samples MATERIALIZE COLUMN {SERVICE_NAME_LABEL}",
    "ALTER TABLE {db}.samples MATERIALIZE INDEX service_name_set",
)

# The tables whose rows expire after the retention.
RETENTION_TABLES = ("samples", "network_latency", "network_peers")

# Index i holds the statements that bring the schema to version i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (_STACKS_V1, _SAMPLES_V1),
    (_NETWORK_LATENCY_V2, _NETWORK_PEERS_V2),
    (_HOURLY_LATENCY_V3, _MATERIALIZE_HOURLY_V3),
    _BATCH_KEY_V4,
    _FRAME_DETAILS_V5,
    _SERVICE_NAME_V6,
)


def quote_database(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"invalid database name {name!r}")
    return f"`{name}`"


def check_cluster_name(name: str) -> str:
    if not _CLUSTER_NAME.fullmatch(name):
        raise ValueError(f"invalid ClickHouse cluster name {name!r}")
    return name


def render(
    statement: str, database: str, retention_days: int, cluster: str | None = None
) -> tuple[str, ...]:
    """The SQL that carries out one schema statement; see the module's docstring."""
    sql = statement.format(db=quote_database(database), retention_days=retention_days)
    if cluster is None:
        return (sql,)
    return clustered(sql, database, check_cluster_name(cluster))


def migrate(
    client: "Client", database: str, retention_days: int, cluster: str | None = None
) -> None:
    """Create the database and bring its tables to the latest version."""
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")

    def run(statement: str) -> None:
        for sql in render(statement, database, retention_days, cluster):
            client.command(sql)

    db = quote_database(database)
    run(_DATABASE)
    run(_VERSION_TABLE)
    current = int(client.query(f"SELECT max(version) FROM {db}.schema_version").result_rows[0][0])
    for version, statements in enumerate(MIGRATIONS, start=1):
        if version <= current:
            continue
        for statement in statements:
            run(statement)
        client.command(f"INSERT INTO {db}.schema_version (version) VALUES ({version})")
    for table in RETENTION_TABLES:
        run(_retention(table))


# The clustered forms. Only the statement shapes our migrations use are
# recognized; anything else raises, so a new kind of migration cannot
# silently skip the cluster.
_CREATE_DATABASE_SQL = re.compile(r"CREATE DATABASE IF NOT EXISTS (?P<db>`\w+`)")
_CREATE_TABLE_SQL = re.compile(
    r"CREATE TABLE IF NOT EXISTS (?P<db>`\w+`)\.(?P<table>\w+) (?P<body>\(.*)", re.S
)
_ENGINE = re.compile(r"\bENGINE = (?P<engine>\w*MergeTree)\b")
_ORDER_BY = re.compile(r"\bORDER BY ")
_ALTER_TABLE_SQL = re.compile(r"ALTER TABLE (?P<db>`\w+`)\.(?P<table>\w+)\s(?P<action>.*)", re.S)
# Column changes must reach the Distributed table too; TTL, index and
# setting changes concern only the tables that hold the data.
_COLUMN_CHANGE = re.compile(r"^(ADD|DROP|MODIFY|RENAME|COMMENT) COLUMN\b")
LOCAL_SUFFIX = "_local"


def clustered(sql: str, database: str, cluster: str) -> tuple[str, ...]:
    """`sql`, written for one server, as statements for every node of `cluster`."""
    text = sql.strip()
    on_cluster = f"ON CLUSTER `{cluster}`"
    if found := _CREATE_DATABASE_SQL.fullmatch(text):
        return (f"{text} {on_cluster}",)
    if found := _CREATE_TABLE_SQL.fullmatch(text):
        return _clustered_table(found, database, cluster)
    if found := _ALTER_TABLE_SQL.fullmatch(text):
        db, table, action = found["db"], found["table"], found["action"]
        local = f"ALTER TABLE {db}.{table}{LOCAL_SUFFIX} {on_cluster} {action}"
        if _COLUMN_CHANGE.match(action):
            return (local, f"ALTER TABLE {db}.{table} {on_cluster} {action}")
        return (local,)
    raise ValueError(f"no clustered form for this statement: {text[:80]!r}")


def _clustered_table(found: re.Match[str], database: str, cluster: str) -> tuple[str, str]:
    db, table, body = found["db"], found["table"], found["body"]
    local = table + LOCAL_SUFFIX
    engine = _ENGINE.search(body)
    if engine is None:
        raise ValueError(f"table {table}: no MergeTree engine to replicate")
    args, engine_end = _arguments(body, engine.end())
    order = _ORDER_BY.search(body, engine_end)
    if order is None:
        raise ValueError(f"table {table}: no ORDER BY to shard by")
    key, _ = _arguments(body, order.end())
    key = key or body[order.end() :].split()[0]
    # {shard} and {replica} are macros each ClickHouse node defines for itself.
    replication = [f"'/clickhouse/tables/{{shard}}/{database}/{local}'", "'{replica}'"]
    if args:
        replication.append(args)
    replicated = f"ENGINE = Replicated{engine['engine']}({', '.join(replication)})"
    body = body[: engine.start()] + replicated + body[engine_end:]
    # Deduplication of retried inserts (by insert_deduplication_token) has its
    # own window setting on replicated tables.
    body = body.replace("non_replicated_deduplication_window", "replicated_deduplication_window")
    # Rows go to a shard by their sort key: a retried batch lands where it
    # landed before, so that shard's deduplication sees it again.
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.{local} ON CLUSTER `{cluster}` {body}",
        f"CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER `{cluster}` AS {db}.{local}\n"
        f"ENGINE = Distributed('{cluster}', '{database}', '{local}', cityHash64({key}))",
    )


def _arguments(text: str, start: int) -> tuple[str, int]:
    """The text inside the parentheses opening at `start` (nested ones included),
    and the index after them; ("", start) when none open there."""
    if not text.startswith("(", start):
        return "", start
    depth = 0
    for index in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return text[start + 1 : index], index + 1
    raise ValueError(f"unbalanced parentheses in {text[start : start + 80]!r}")
