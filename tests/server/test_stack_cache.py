from clickhouse_connect.driver.client import Client

from podflame.model import Batch
from podflame.server.clickhouse_store import ClickHouseStore
from podflame.server.rows import batch_rows, stack_hash
from podflame.server.stack_cache import StackCache
from tests.server.conftest import batch


def test_a_cached_stack_is_found_by_hash_and_by_frames() -> None:
    cache = StackCache()
    cache.add({stack_hash(["a", "b"]): ["a", "b"]})
    assert cache.hashes_of([["a", "b"], ("a", "b"), ["a"]]) == [stack_hash(["a", "b"])] * 2 + [None]
    found, missing = cache.lookup([stack_hash(["a", "b"]), 7])
    assert found == {stack_hash(["a", "b"]): ("a", "b")}
    assert missing == [7]


def test_the_least_recently_used_stack_leaves_both_indexes() -> None:
    cache = StackCache(max_stacks=2)
    stacks = [["a"], ["b"], ["c"]]
    cache.add({stack_hash(stacks[0]): stacks[0], stack_hash(stacks[1]): stacks[1]})
    cache.hashes_of([stacks[0]])  # a is used again, so b is the oldest
    cache.add({stack_hash(stacks[2]): stacks[2]})
    assert cache.hashes_of(stacks) == [stack_hash(["a"]), None, stack_hash(["c"])]
    assert cache.lookup([stack_hash(["b"])]) == ({}, [stack_hash(["b"])])


def test_a_colliding_hash_keeps_the_frames_index_bounded() -> None:
    cache = StackCache(max_stacks=1)
    cache.add({1: ["a"]})
    cache.add({1: ["b"]})
    assert cache.hashes_of([["a"], ["b"]]) == [None, 1]
    cache.add({2: ["c"]})
    assert cache.hashes_of([["a"], ["b"], ["c"]]) == [None, None, 2]


def test_rows_use_the_cached_hash_and_list_only_uncached_stacks() -> None:
    cache = StackCache()
    # A wrong hash on purpose: proves the cached value is used, not recomputed.
    cache.add({42: ["main", "work"]})
    rows = batch_rows(
        Batch.model_validate(batch([["main", "work"], ["main"]], [({}, [(0, 1), (1, 2)])])), cache
    )
    assert rows.stack_hash.tolist() == [42, stack_hash(["main"])]
    assert rows.uncached == {stack_hash(["main"]): ["main"]}


def test_ingest_stores_a_stack_once_and_then_knows_it(
    store: ClickHouseStore, chdb_client: Client
) -> None:
    stacks = [["main", f"f{i}"] for i in range(3)]
    for _ in range(2):
        store.ingest(Batch.model_validate(batch(stacks, [({}, [(0, 1), (1, 1), (2, 1)])])))
    count = chdb_client.query(f"SELECT count() FROM {store.database}.stacks").result_rows[0][0]
    assert count == 3
    assert batch_rows(Batch.model_validate(batch(stacks, [])), store._cache).uncached == {}


def test_many_distinct_labels_in_one_batch_round_trip(
    store: ClickHouseStore, chdb_client: Client
) -> None:
    # 70,000 pods need a UInt32 LowCardinality index; 300 keys of extra labels a UInt16 one.
    series = [({"pod": f"pod-{i}", f"k{i % 300}": str(i)}, [(0, i + 1)]) for i in range(70_000)]
    store.ingest(Batch.model_validate(batch([["main"]], series)))
    rows = chdb_client.query(
        f"SELECT pod, labels, value FROM {store.database}.samples ORDER BY value"
    ).result_rows
    assert len(rows) == 70_000
    assert rows[0] == ("pod-0", {"k0": "0"}, 1)
    assert rows[-1] == ("pod-69999", {"k99": "69999"}, 70_000)
    assert len({row[0] for row in rows}) == 70_000
