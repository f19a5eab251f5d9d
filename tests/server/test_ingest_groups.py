"""Batches ingested together are written as one group, on real chDB.

A group is one insert per table; every batch is still stored exactly once,
also when it is sent again while its first copy is being written, and a batch
the engine refuses fails alone.
"""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from podflame.model import Batch
from podflame.server.batch_writer import GroupWriter
from podflame.server.clickhouse_store import ClickHouseStore
from podflame.server.store import IngestResult, StorageError
from tests.server.conftest import batch
from tests.server.network_batches import histogram, net_batch
from tests.server.test_storage_failures import refusing


def cpu_batch(pod: str, value: int) -> Batch:
    labels = {"node": "n1", "namespace": "shop", "pod": pod, "pid": "42"}
    return Batch.model_validate(batch([["main", pod]], [(labels, [(0, value)])]))


def network_batch(pod: str, calls: int) -> Batch:
    labels = {"node": "n1", "namespace": "shop", "pod": pod, "pid": "43"}
    body = net_batch([histogram(labels, "recvfrom", [1_000] * calls)])
    return Batch.model_validate(body)


@contextmanager
def engine_busy(store: ClickHouseStore) -> Iterator[None]:
    """Holds the store's engine, as a long write would: ingests queue up meanwhile."""
    with store._lock:
        yield


def ingest_in_threads(
    store: ClickHouseStore, batches: list[Batch]
) -> list[IngestResult | Exception]:
    """Ingest each batch from its own thread, all but the first queued behind the first.

    The first becomes the writer and waits for the busy engine with its batch
    alone; the others queue meanwhile, so they are written as one group next.
    """
    outcomes: list[IngestResult | Exception] = [StorageError("not run")] * len(batches)

    def run(index: int) -> None:
        try:
            outcomes[index] = store.ingest(batches[index])
        except StorageError as error:
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(batches))]
    commits = store._commits
    with engine_busy(store):
        threads[0].start()
        wait_until(lambda: commits._writing and not commits._queue)
        for thread in threads[1:]:
            thread.start()
        wait_until(lambda: len(commits._queue) == len(batches) - 1)
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    return outcomes


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def parts(client: Client, store: ClickHouseStore, table: str) -> int:
    sql = "SELECT count() FROM system.parts WHERE database = {db:String} AND table = {t:String}"
    result = client.query(sql, parameters={"db": store.database, "t": table}).result_rows
    return int(result[0][0])


def values_by_pod(client: Client, store: ClickHouseStore) -> dict[str, tuple[int, int]]:
    """Per pod: (sample rows, summed value)."""
    rows = client.query(
        f"SELECT pod, count(), sum(value) FROM {store.database}.samples GROUP BY pod"
    ).result_rows
    return {str(pod): (int(count), int(total)) for pod, count, total in rows}


@pytest.fixture
def no_merges(store: ClickHouseStore, chdb_client: Client) -> None:
    # Parts are counted: one insert is one part while nothing merges them.
    for table in ("samples", "network_latency"):
        chdb_client.command(f"SYSTEM STOP MERGES {store.database}.{table}")


@pytest.mark.usefixtures(no_merges.__name__)
def test_batches_waiting_together_are_one_insert_per_table(
    store: ClickHouseStore, chdb_client: Client
) -> None:
    cpu = [cpu_batch(f"pod-{index}", 100 + index) for index in range(8)]
    network = [network_batch(f"pod-{index}", 1 + index) for index in range(4)]
    # The first thread becomes the writer (waiting for the engine), the others queue.
    outcomes = ingest_in_threads(store, [*cpu, *network])
    assert all(isinstance(outcome, IngestResult) for outcome in outcomes), outcomes
    # The writer's own batch alone, then everything queued behind it in one go.
    assert parts(chdb_client, store, "samples") == 2
    assert parts(chdb_client, store, "network_latency") == 1
    assert values_by_pod(chdb_client, store) == {
        f"pod-{index}": (1, 100 + index) for index in range(8)
    }
    calls = chdb_client.query(
        f"SELECT pod, sum(count) FROM {store.database}.network_latency GROUP BY pod ORDER BY pod"
    ).result_rows
    assert calls == [(f"pod-{index}", 1 + index) for index in range(4)]


def test_a_batch_sent_again_in_the_same_group_or_later_is_stored_once(
    store: ClickHouseStore, chdb_client: Client
) -> None:
    first, second = cpu_batch("pod-a", 7), cpu_batch("pod-b", 9)
    # The same batches twice in one group (a retry racing its original)...
    outcomes = ingest_in_threads(store, [first, second, first, second, first])
    assert all(isinstance(outcome, IngestResult) for outcome in outcomes), outcomes
    # ... and again later, alone and grouped with a new one.
    store.ingest(first)
    third = cpu_batch("pod-c", 11)
    assert not any(isinstance(o, Exception) for o in ingest_in_threads(store, [second, third]))
    assert values_by_pod(chdb_client, store) == {
        "pod-a": (1, 7),
        "pod-b": (1, 9),
        "pod-c": (1, 11),
    }


def test_a_batch_the_engine_refuses_fails_alone(
    store: ClickHouseStore, chdb_client: Client
) -> None:
    batches = [cpu_batch(pod, 5) for pod in ("pod-a", "poison", "pod-b", "pod-c")]
    with refusing(chdb_client, store, "samples", "pod != 'poison'"):
        outcomes: list[Any] = ingest_in_threads(store, batches)
    assert isinstance(outcomes[1], StorageError)
    assert "refuse" in str(outcomes[1])
    assert [isinstance(outcomes[index], IngestResult) for index in (0, 2, 3)] == [True] * 3
    assert values_by_pod(chdb_client, store) == {pod: (1, 5) for pod in ("pod-a", "pod-b", "pod-c")}
    # The refused batch's retry is stored once the table takes it.
    store.ingest(batches[1])
    assert values_by_pod(chdb_client, store)["poison"] == (1, 5)


def test_a_first_send_is_not_looked_for_and_a_resend_is_stored_once(
    store: ClickHouseStore, chdb_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_for: list[list[str]] = []
    look_up = GroupWriter._stored

    def counting(writer: GroupWriter, client: Client, batches: list[Any]) -> Any:
        looked_for.append([batch.batch_id for batch in batches])
        return look_up(writer, client, batches)

    monkeypatch.setattr(GroupWriter, "_stored", counting)
    first, second = cpu_batch("pod-a", 7), cpu_batch("pod-b", 9)
    store.ingest(first, first_send=True)
    assert looked_for == []
    # A client that claims a first send twice: this process remembers what it stored.
    store.ingest(first, first_send=True)
    store.ingest(second)
    assert looked_for == [[second.batch_id]]
    # Another replica, or this one restarted, remembers nothing: a resend is looked for.
    restarted = ClickHouseStore(chdb_client, database=store.database)
    restarted.ingest(first)
    restarted.ingest(second)
    assert values_by_pod(chdb_client, store) == {"pod-a": (1, 7), "pod-b": (1, 9)}
