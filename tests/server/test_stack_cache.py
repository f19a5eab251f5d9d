from clickhouse_connect.driver.client import Client

from podflame.model import Batch
from podflame.model.frames import Frame
from podflame.server.clickhouse_store import ClickHouseStore
from podflame.server.rows import batch_rows, stack_hash
from podflame.server.stack_cache import StackCache
from tests.server.conftest import batch


def stack(*names: str) -> tuple[Frame, ...]:
    return tuple(Frame.from_label(name) for name in names)


def test_a_cached_stack_is_found_by_hash_and_by_frames() -> None:
    cache = StackCache()
    cache.add({stack_hash(stack("a", "b")): list(stack("a", "b"))})
    found = cache.hashes_of([list(stack("a", "b")), stack("a", "b"), stack("a")])
    assert found == [stack_hash(stack("a", "b"))] * 2 + [None]
    found_frames, missing = cache.lookup([stack_hash(stack("a", "b")), 7])
    assert found_frames == {stack_hash(stack("a", "b")): stack("a", "b")}
    assert missing == [7]


def test_a_stack_of_plain_frames_hashes_as_its_names_did() -> None:
    """Stacks stored before frames were typed keep their hash (blake2b of the
    length-prefixed names, as then), so the same stack is stored once."""
    # The value the string-frame code computed for ["main", "read_[k]"].
    assert stack_hash(stack("main", "read_[k]")) == 0x447D3D4A9E4DE36C
    plain = stack("main", "libc.so.6+0x1a")
    detailed = (Frame("native", "main", module="app"), plain[1])
    assert stack_hash(plain) != stack_hash(detailed)


def test_the_least_recently_used_stack_leaves_both_indexes() -> None:
    cache = StackCache(max_stacks=2)
    stacks = [stack("a"), stack("b"), stack("c")]
    cache.add({stack_hash(stacks[0]): stacks[0], stack_hash(stacks[1]): stacks[1]})
    cache.hashes_of([stacks[0]])  # a is used again, so b is the oldest
    cache.add({stack_hash(stacks[2]): stacks[2]})
    assert cache.hashes_of(stacks) == [stack_hash(stack("a")), None, stack_hash(stack("c"))]
    assert cache.lookup([stack_hash(stack("b"))]) == ({}, [stack_hash(stack("b"))])


def test_a_colliding_hash_keeps_the_frames_index_bounded() -> None:
    cache = StackCache(max_stacks=1)
    cache.add({1: stack("a")})
    cache.add({1: stack("b")})
    assert cache.hashes_of([stack("a"), stack("b")]) == [None, 1]
    cache.add({2: stack("c")})
    assert cache.hashes_of([stack("a"), stack("b"), stack("c")]) == [None, None, 2]


def test_rows_use_the_cached_hash_and_list_only_uncached_stacks() -> None:
    cache = StackCache()
    # A wrong hash on purpose: proves the cached value is used, not recomputed.
    cache.add({42: stack("main", "work")})
    rows = batch_rows(
        Batch.model_validate(batch([["main", "work"], ["main"]], [({}, [(0, 1), (1, 2)])])), cache
    )
    assert rows.stack_hash.tolist() == [42, stack_hash(stack("main"))]
    assert rows.uncached == {stack_hash(stack("main")): stack("main")}


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


def test_a_stack_listed_twice_between_cached_ones_keeps_every_row_in_place() -> None:
    cache = StackCache()
    cache.add({42: stack("main", "work"), 43: stack("idle_[k]", "m+0x1f")})
    stacks = [["idle_[k]", "m+0x1f"], ["main"], ["main", "work"], ["main"], ["a+0x10"]]
    samples = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    rows = batch_rows(Batch.model_validate(batch(stacks, [({}, samples)])), cache)
    main, odd = stack_hash(stack("main")), stack_hash(stack("a+0x10"))
    assert rows.stack_hash.tolist() == [43, main, 42, main, odd]
    assert rows.uncached == {main: stack("main"), odd: stack("a+0x10")}
    assert rows.stacks[43] == stack("idle_[k]", "m+0x1f")


def test_batch_rows_hash_typed_and_named_stacks_as_stack_hash_does() -> None:
    py = Frame("python", "handle", file="app.py", line=7)
    body = batch([["a"], ["b"], ["c"]], [({}, [(0, 1), (1, 2), (2, 3)])])
    body["frames"] = [
        {"kind": "native", "name": "main"},
        {"kind": "python", "name": "handle", "file": "app.py", "line": 7},
    ]
    body["stacks"] = [[0, 1], [0], ["main", "work_[k]"]]
    rows = batch_rows(Batch.model_validate(body))
    expected = [(*stack("main"), py), stack("main"), stack("main", "work_[k]")]
    assert rows.stack_hash.tolist() == [stack_hash(frames) for frames in expected]
    assert list(rows.uncached.values()) == expected


def test_a_batch_reuses_the_frames_of_cached_stacks() -> None:
    cache = StackCache(max_stacks=1)
    wire = {"batch_id": "frames-1", "period": 1, "start_time_ns": 0, "end_time_ns": 1,
            "frames": [{"kind": "native", "name": "main"}, {"kind": "python", "name": "run",
                        "file": "app.py", "line": 3}],
            "stacks": [[0, 1]], "series": []}  # fmt: skip
    first = Batch.model_validate(wire).typed_stacks()[0]
    cache.add({stack_hash(first): first})
    again = Batch.model_validate(wire).frame_records(cache.frames)
    assert again == list(first) and all(a is b for a, b in zip(again, first, strict=True))
    # Once no cached stack (nor anything else) holds them, the cache lets them go.
    fields = [frame.fields for frame in first]
    del first, again
    cache.add({1: stack("other")})
    assert cache.frames(fields) == [None, None]
