import time

import pytest
from clickhouse_connect.driver.client import Client

from podflame.model import Batch
from podflame.server import schema
from podflame.server.clickhouse_store import ClickHouseStore, _split_database
from podflame.server.rows import batch_rows, stack_hash
from podflame.server.schema import MIGRATIONS
from podflame.server.store import InvalidBatchError
from tests.server.conftest import batch


def test_stack_hash_is_stable_and_unambiguous() -> None:
    assert stack_hash(["main", "run"]) == stack_hash(("main", "run"))
    # Pinned: changing the encoding would split every stored stack in two.
    assert stack_hash(["main", "run"]) == 0xCD52995745AF12B1
    distinct = [["a", "b"], ["a\nb"], ["ab"], ["a", "", "b"], [], [""], ["b", "a"]]
    assert len({stack_hash(frames) for frames in distinct}) == len(distinct)


def test_rows_split_column_labels_from_extra_labels() -> None:
    labels = {"pod": "p", "comm": "c", "pid": "12", "team": "t", "node": "n"}
    rows = batch_rows(Batch.model_validate(batch([["a"], ["b"]], [(labels, [(1, 5), (0, 6)])])))
    columns = rows.series.columns
    assert (columns["pod"], columns["comm"], columns["node"]) == (["p"], ["c"], ["n"])
    assert columns["namespace"] == [""]
    assert rows.series.pid == [12]
    assert rows.series.extra == [{"team": "t"}]
    assert rows.counts.tolist() == [2]
    assert rows.stack_hash.tolist() == [stack_hash(["b"]), stack_hash(["a"])]
    assert rows.value.tolist() == [5, 6]
    assert rows.sample_count == 2


def test_stored_rows_read_back_column_by_column(
    store: ClickHouseStore, chdb_client: Client
) -> None:
    """The Native block ingest writes, checked against the table row by row."""
    # Recent: rows older than the retention may be dropped by a TTL merge before they are read.
    end_ns = time.time_ns() // 10**9 * 10**9 + 123_456_789
    big = 2**63 - 1
    series = [
        ({"pod": "p", "pid": "12", "team": "t", "zone": "ünï"}, [(1, 5), (0, 6)]),
        ({"namespace": "ns", "pid": "4294967295"}, [(0, big)]),
        ({"pod": "p", "team": "u"}, []),
        ({"pod": "q", "zone": "z"}, [(1, 7)]),
    ]
    store.ingest(Batch.model_validate(batch([["a"], ["b"]], series, end_ns=end_ns)))
    rows = chdb_client.query(
        "SELECT profile_type, toUnixTimestamp64Milli(timestamp), namespace, pod, node, pid,"
        f" labels, stack_hash, value FROM {store.database}.samples ORDER BY value"
    ).result_rows
    a, b = stack_hash(["a"]), stack_hash(["b"])
    ms = end_ns // 10**6
    assert [tuple(row) for row in rows] == [
        ("cpu", ms, "", "p", "", 12, {"team": "t", "zone": "ünï"}, b, 5),
        ("cpu", ms, "", "p", "", 12, {"team": "t", "zone": "ünï"}, a, 6),
        ("cpu", ms, "", "q", "", 0, {"zone": "z"}, b, 7),
        ("cpu", ms, "ns", "", "", 4294967295, {}, a, big),
    ]


@pytest.mark.parametrize("pid", ["-1", "1.5", "4294967296", "١٢"])
def test_rows_reject_a_pid_that_is_not_one(pid: str) -> None:
    with pytest.raises(InvalidBatchError, match="pid"):
        batch_rows(Batch.model_validate(batch([["a"]], [({"pid": pid}, [(0, 1)])])))


def test_rows_reject_values_past_int64() -> None:
    body = batch([["a"]], [({}, [(0, 2**63)])])
    with pytest.raises(InvalidBatchError, match="value"):
        batch_rows(Batch.model_validate(body))


def test_rows_reject_times_past_the_ttl_range() -> None:
    body = batch([["a"]], [({}, [(0, 1)])], end_ns=2**63 - 1)
    with pytest.raises(InvalidBatchError, match="end_time_ns"):
        batch_rows(Batch.model_validate(body))


def test_migrations_run_once_and_retention_follows_settings(
    store: ClickHouseStore, chdb_client: Client
) -> None:
    ClickHouseStore(chdb_client, database=store.database, retention_days=30)
    db = store.database
    versions = chdb_client.query(
        f"SELECT version FROM {db}.schema_version ORDER BY version"
    ).result_rows
    assert versions == [(version,) for version in range(1, len(MIGRATIONS) + 1)]
    engines = dict(
        chdb_client.query(
            "SELECT name, engine_full FROM system.tables WHERE database = {db:String}",
            parameters={"db": db},
        ).result_rows
    )
    for table in ("samples", "network_latency", "network_peers"):
        assert "toIntervalDay(30)" in engines[table], table


def test_a_version_1_database_gains_the_network_tables_and_keeps_its_samples(
    chdb_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = "t_upgrade_from_v1"
    chdb_client.command(f"DROP DATABASE IF EXISTS {database}")
    # The server as it was before the network tables.
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:1])
    monkeypatch.setattr(schema, "RETENTION_TABLES", ("samples",))
    old = ClickHouseStore(chdb_client, database=database)
    # Plus the columns today's writer needs (versions 4 and 5 run again, idempotent).
    for statement in MIGRATIONS[3] + MIGRATIONS[4]:
        if ".samples " in statement or ".stacks " in statement:
            chdb_client.command(schema.render(statement, database, retention_days=7)[0])
    old.ingest(Batch.model_validate(batch([["main"]], [({"pod": "p"}, [(0, 5)])])))
    monkeypatch.undo()
    ClickHouseStore(chdb_client, database=database)
    tables = chdb_client.query(
        "SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": database}
    ).result_rows
    assert {"network_latency", "network_peers"} <= {name for (name,) in tables}
    versions = chdb_client.query(f"SELECT version FROM {database}.schema_version").result_rows
    assert sorted(versions) == [(version,) for version in range(1, len(MIGRATIONS) + 1)]
    assert chdb_client.query(f"SELECT sum(value) FROM {database}.samples").result_rows == [(5,)]
    chdb_client.command(f"DROP DATABASE {database}")


def test_invalid_database_name_is_refused(chdb_client: Client) -> None:
    with pytest.raises(ValueError, match="database"):
        ClickHouseStore(chdb_client, database="x`; DROP")


def test_server_dsn_splits_off_the_database() -> None:
    assert _split_database("https://u:p@ch:8443/prof?secure=1") == (
        "https://u:p@ch:8443?secure=1",
        "prof",
    )
    assert _split_database("http://ch:8123") == ("http://ch:8123", "podflame")
