"""Clustered schema: the exact DDL --clickhouse-cluster produces, checked by ClickHouse's parser.

No ClickHouse cluster can run here (it needs several servers and Keeper), so
the clustered statements are compared text for text and parsed by the real
ClickHouse engine in chDB (formatQuery), which rejects any syntax error. The
single-server path runs for real on chDB and must stay exactly as before.
"""

import uuid
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from pydantic import ValidationError

from podflame.server import schema
from podflame.server.clickhouse_store import (
    _PROFILE_TYPES_TABLE,
    CLUSTER_SETTINGS,
    ClickHouseStore,
    open_store,
)
from podflame.server.schema import MIGRATIONS, clustered, migrate, render
from podflame.server.settings import ServerSettings

ALL_STATEMENTS = (
    schema._DATABASE,
    schema._VERSION_TABLE,
    *(statement for migration in MIGRATIONS for statement in migration),
    *(schema._retention(table) for table in schema.RETENTION_TABLES),
    _PROFILE_TYPES_TABLE,
)

EXPECTED_V1 = (
    # stacks
    """CREATE TABLE IF NOT EXISTS `podflame`.stacks_local ON CLUSTER `ch-prod` (
    hash UInt64,
    frames Array(String) CODEC(ZSTD(1))
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/podflame/stacks_local', \
'{replica}') ORDER BY hash
SETTINGS index_granularity = 1024""",
    """CREATE TABLE IF NOT EXISTS `podflame`.stacks ON CLUSTER `ch-prod` AS `podflame`.stacks_local
ENGINE = Distributed('ch-prod', 'podflame', 'stacks_local', cityHash64(hash))""",
    # samples
    """CREATE TABLE IF NOT EXISTS `podflame`.samples_local ON CLUSTER `ch-prod` (
    profile_type LowCardinality(String),
    timestamp DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    node LowCardinality(String),
    namespace LowCardinality(String),
    pod LowCardinality(String),
    container LowCardinality(String),
    workload_kind LowCardinality(String),
    workload LowCardinality(String),
    comm LowCardinality(String),
    pid UInt32 CODEC(ZSTD(1)),
    labels Map(LowCardinality(String), String),
    stack_hash UInt64 CODEC(ZSTD(3)),
    value Int64 CODEC(ZSTD(1)),
    INDEX pod_set pod TYPE set(64) GRANULARITY 1,
    INDEX workload_set workload TYPE set(64) GRANULARITY 1,
    INDEX comm_bloom comm TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/podflame/samples_local', '{replica}')
PARTITION BY toDate(timestamp)
ORDER BY (profile_type, namespace, workload, pod, node, timestamp)
TTL toDateTime(timestamp) + INTERVAL 7 DAY
SETTINGS replicated_deduplication_window = 10000, ttl_only_drop_parts = 1""",
    """CREATE TABLE IF NOT EXISTS `podflame`.samples ON CLUSTER `ch-prod` \
AS `podflame`.samples_local
ENGINE = Distributed('ch-prod', 'podflame', 'samples_local', \
cityHash64(profile_type, namespace, workload, pod, node, timestamp))""",
)


def cluster_sql(statement: str) -> tuple[str, ...]:
    return render(statement, "podflame", 7, "ch-prod")


def test_first_migration_renders_exactly() -> None:
    rendered = tuple(sql for statement in MIGRATIONS[0] for sql in cluster_sql(statement))
    assert rendered == EXPECTED_V1


def test_database_version_table_and_retention_render_exactly() -> None:
    assert cluster_sql(schema._DATABASE) == (
        "CREATE DATABASE IF NOT EXISTS `podflame` ON CLUSTER `ch-prod`",
    )
    local, distributed = cluster_sql(schema._VERSION_TABLE)
    assert local.startswith(
        "CREATE TABLE IF NOT EXISTS `podflame`.schema_version_local ON CLUSTER `ch-prod` ("
    )
    assert local.endswith(
        ") ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/podflame/"
        "schema_version_local', '{replica}') ORDER BY version"
    )
    assert distributed == (
        "CREATE TABLE IF NOT EXISTS `podflame`.schema_version ON CLUSTER `ch-prod`"
        " AS `podflame`.schema_version_local\n"
        "ENGINE = Distributed('ch-prod', 'podflame', 'schema_version_local', cityHash64(version))"
    )
    assert cluster_sql(schema._retention("samples")) == (
        "ALTER TABLE `podflame`.samples_local ON CLUSTER `ch-prod` MODIFY TTL"
        " toDateTime(timestamp) + INTERVAL 7 DAY\nSETTINGS materialize_ttl_after_modify = 0",
    )


def test_profile_types_table_renders_exactly() -> None:
    assert cluster_sql(_PROFILE_TYPES_TABLE) == (
        "CREATE TABLE IF NOT EXISTS `podflame`.profile_types_local ON CLUSTER `ch-prod`"
        " (name String, unit String, description String,"
        " added_at DateTime64(3) DEFAULT now64(3))"
        " ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/podflame/"
        "profile_types_local', '{replica}') ORDER BY name",
        "CREATE TABLE IF NOT EXISTS `podflame`.profile_types ON CLUSTER `ch-prod`"
        " AS `podflame`.profile_types_local\n"
        "ENGINE = Distributed('ch-prod', 'podflame', 'profile_types_local', cityHash64(name))",
    )


@pytest.mark.parametrize("statement", ALL_STATEMENTS)
def test_every_clustered_statement_parses_in_clickhouse(
    statement: str, chdb_client: Client
) -> None:
    """Later migrations are covered too: each needs a clustered form ClickHouse accepts."""
    for sql in cluster_sql(statement):
        formatted = chdb_client.query(
            "SELECT formatQuery({sql:String})", parameters={"sql": sql}
        ).result_rows[0][0]
        assert "ON CLUSTER `ch-prod`" in formatted or "ON CLUSTER ch-prod" in formatted


@pytest.mark.parametrize("statement", ALL_STATEMENTS)
def test_without_a_cluster_statements_run_as_written(statement: str) -> None:
    assert render(statement, "podflame", 7) == (
        statement.format(db="`podflame`", retention_days=7),
    )


def test_engine_arguments_and_nested_sort_keys_are_kept() -> None:
    local, distributed = clustered(
        "CREATE TABLE IF NOT EXISTS `d`.t (a UInt8, b DateTime) ENGINE = ReplacingMergeTree(b)"
        " ORDER BY (a, toDate(b))",
        "d",
        "c",
    )
    assert local == (
        "CREATE TABLE IF NOT EXISTS `d`.t_local ON CLUSTER `c` (a UInt8, b DateTime)"
        " ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/d/t_local',"
        " '{replica}', b) ORDER BY (a, toDate(b))"
    )
    assert distributed.endswith("Distributed('c', 'd', 't_local', cityHash64(a, toDate(b)))")


def test_column_changes_reach_the_distributed_table_and_others_do_not() -> None:
    add = clustered("ALTER TABLE `d`.samples ADD COLUMN IF NOT EXISTS x String", "d", "c")
    assert add == (
        "ALTER TABLE `d`.samples_local ON CLUSTER `c` ADD COLUMN IF NOT EXISTS x String",
        "ALTER TABLE `d`.samples ON CLUSTER `c` ADD COLUMN IF NOT EXISTS x String",
    )
    index = clustered("ALTER TABLE `d`.samples ADD INDEX i x TYPE set(8)", "d", "c")
    assert index == ("ALTER TABLE `d`.samples_local ON CLUSTER `c` ADD INDEX i x TYPE set(8)",)


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE MATERIALIZED VIEW `d`.v TO `d`.t AS SELECT 1",
        "CREATE TABLE IF NOT EXISTS `d`.t (a UInt8) ENGINE = Memory",
        "DROP TABLE `d`.t",
    ],
)
def test_statements_without_a_clustered_form_are_refused(sql: str) -> None:
    with pytest.raises(ValueError):
        clustered(sql, "d", "c")


@pytest.mark.parametrize("name", ["", "a b", "x`; DROP", "1abc"])
def test_invalid_cluster_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cluster"):
        render(schema._DATABASE, "podflame", 7, name)


class RecordingClient:
    """Stands in for a ClickHouse cluster, which cannot run here: records what is sent."""

    def __init__(self, version: int = 0) -> None:
        self.commands: list[str] = []
        self.settings: dict[str, Any] = {}
        self.version = version

    def command(self, sql: str) -> None:
        self.commands.append(sql)

    def query(self, sql: str, **_: Any) -> Any:
        assert sql == "SELECT max(version) FROM `podflame`.schema_version"
        return type("Result", (), {"result_rows": [(self.version,)]})()

    def set_client_setting(self, key: str, value: Any) -> None:
        self.settings[key] = value


def test_clustered_migration_sends_every_statement_in_order() -> None:
    client = RecordingClient()
    migrate(client, "podflame", 7, "ch-prod")  # type: ignore[arg-type]
    expected = [
        *cluster_sql(schema._DATABASE),
        *cluster_sql(schema._VERSION_TABLE),
    ]
    for version, statements in enumerate(MIGRATIONS, start=1):
        expected += [sql for statement in statements for sql in cluster_sql(statement)]
        expected.append(f"INSERT INTO `podflame`.schema_version (version) VALUES ({version})")
    for table in schema.RETENTION_TABLES:
        expected += cluster_sql(schema._retention(table))
    assert client.commands == expected


def test_clustered_store_sets_distributed_query_settings() -> None:
    client = RecordingClient(version=len(MIGRATIONS))
    ClickHouseStore(client, "podflame", 7, cluster="ch-prod")  # type: ignore[arg-type]
    assert client.settings == CLUSTER_SETTINGS
    # Already migrated: only the idempotent setup and the retention are sent.
    assert not any("INSERT" in sql for sql in client.commands)


def test_single_server_tables_on_chdb_are_unchanged(chdb_client: Client) -> None:
    database = f"t_{uuid.uuid4().hex}"
    store = ClickHouseStore(chdb_client, database=database)
    try:
        store.profile_types()
        engines = dict(
            chdb_client.query(
                "SELECT name, engine FROM system.tables WHERE database = {db:String}",
                parameters={"db": database},
            ).result_rows
        )
    finally:
        chdb_client.command(f"DROP DATABASE IF EXISTS {database}")
    assert engines == {
        "schema_version": "MergeTree",
        "stacks": "ReplacingMergeTree",
        "samples": "MergeTree",
        "profile_types": "MergeTree",
        "network_latency": "MergeTree",
        "network_peers": "MergeTree",
    }


def test_settings_take_a_cluster_only_with_a_clickhouse_server() -> None:
    settings = ServerSettings(storage="http://ch:8123/podflame", clickhouse_cluster="ch-prod")
    assert settings.clickhouse_cluster == "ch-prod"
    assert ServerSettings(clickhouse_cluster="").clickhouse_cluster is None
    with pytest.raises(ValidationError, match="clickhouse_cluster needs a ClickHouse server"):
        ServerSettings(storage="chdb:///tmp/x", clickhouse_cluster="ch-prod")
    with pytest.raises(ValidationError, match="cluster name"):
        ServerSettings(storage="http://ch:8123/podflame", clickhouse_cluster="a b")
    with pytest.raises(ValueError, match="cluster"):
        open_store("chdb:///tmp/never-created", cluster="ch-prod")
