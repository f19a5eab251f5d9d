"""Typed frames through ingest, storage and the exports (issue 18): a frame's kind,
module, offset, file and line survive; stacks stored as strings before still read
back as frames; a version 1 batch of names is still accepted."""

import gzip
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from podflame.model import Batch
from podflame.model.frames import Frame, FrameKind
from podflame.model.pprof import decode
from podflame.model.profile import CPU
from podflame.model.wire import stacks_of
from podflame.server import schema
from podflame.server.clickhouse_store import ClickHouseStore
from podflame.server.exports import folded, pprof, speedscope
from podflame.server.limits import IngestLimitExceeded, IngestLimits, bound_batch
from podflame.server.rows import stack_hash
from podflame.server.schema import MIGRATIONS
from podflame.server.store import ProfileQuery
from podflame.server.timerange import TimeRange
from tests.server.conftest import batch

PYTHON = Frame(FrameKind.PYTHON, "Shop.checkout", module="shop", file="/app/shop.py", line=42)
NATIVE = Frame(FrameKind.NATIVE, "PyEval_EvalFrame", module="libpython3.11.so")
UNNAMED = Frame(FrameKind.NATIVE, "app+0x1a2b", module="app", offset=0x1A2B, resolved=False)
KERNEL = Frame(FrameKind.KERNEL, "do_syscall_64")
TYPED = (NATIVE, PYTHON, UNNAMED, KERNEL)


def typed_batch(*stacks: tuple[Frame, ...], end_ns: int | None = None) -> Batch:
    frames, indexed = stacks_of(list(stacks))
    body: dict[str, Any] = batch([[] for _ in stacks], [], end_ns=end_ns)
    body |= {"version": 2, "frames": [f.model_dump() for f in frames], "stacks": indexed}
    body["series"] = [{"labels": {"pod": "p"}, "samples": [{"stack": 0, "value": 7}]}]
    return Batch.model_validate_json(Batch.model_validate(body).model_dump_json())


def last_hour() -> ProfileQuery:
    now = datetime.now(UTC)
    return ProfileQuery("cpu", (), TimeRange(now - timedelta(hours=1), now + timedelta(minutes=1)))


def test_labels_read_back_as_the_frames_they_name() -> None:
    assert Frame.from_label("read_[k]") == Frame(FrameKind.KERNEL, "read")
    assert Frame.from_label("libc.so.6+0x1a") == Frame(
        FrameKind.NATIVE, "libc.so.6+0x1a", module="libc.so.6", offset=0x1A, resolved=False
    )
    assert not Frame.from_label("[unknown]").resolved
    assert Frame.from_label("main").is_plain and not PYTHON.is_plain
    assert [f.label for f in TYPED] == [
        "PyEval_EvalFrame",
        "Shop.checkout",
        "app+0x1a2b",
        "do_syscall_64_[k]",
    ]


def test_typed_frames_survive_storage(store: ClickHouseStore) -> None:
    store.ingest(typed_batch(TYPED))
    (found,) = store.stacks(last_hour())
    assert found.stack == TYPED
    assert found.frames == tuple(f.label for f in TYPED)


def test_a_stack_stored_as_strings_reads_back_as_frames_and_is_stored_once(
    chdb_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = "t_frames_from_v4"
    chdb_client.command(f"DROP DATABASE IF EXISTS {database}")
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:4])  # before typed frames
    ClickHouseStore(chdb_client, database=database)
    names = ["main", "libc.so.6+0x1a", "read_[k]"]
    # The row as the string-frame server wrote it (the hash it computed is pinned
    # in test_stack_cache).
    chdb_client.insert(
        "stacks", [[stack_hash(names), names]], column_names=["hash", "frames"], database=database
    )
    monkeypatch.undo()
    store = ClickHouseStore(chdb_client, database=database)
    store.ingest(Batch.model_validate(batch([names], [({"pod": "p"}, [(0, 5)])])))
    count = chdb_client.query(f"SELECT count() FROM {database}.stacks").result_rows[0][0]
    assert count == 1  # the same stack, recognised by its hash
    store._cache = type(store._cache)()  # read from the table, not from the ingest's cache
    (found,) = store.stacks(last_hour())
    assert found.stack == (
        Frame(FrameKind.NATIVE, "main"),
        Frame(FrameKind.NATIVE, "libc.so.6+0x1a", module="libc.so.6", offset=0x1A, resolved=False),
        Frame(FrameKind.KERNEL, "read"),
    )
    chdb_client.command(f"DROP DATABASE {database}")


def test_exports_carry_file_and_line(store: ClickHouseStore) -> None:
    store.ingest(typed_batch(TYPED))
    stacks = store.stacks(last_hour())
    query = last_hour()
    assert folded(stacks) == "PyEval_EvalFrame;Shop.checkout;app+0x1a2b;do_syscall_64_[k] 7\n"
    profile = decode(gzip.decompress(pprof(stacks, CPU, query.time_range)), 1 << 20)
    function = next(
        f for f in profile.message.function if profile.string(f.name) == "Shop.checkout"
    )
    assert profile.string(function.filename) == "/app/shop.py"
    lines = [line for loc in profile.message.location for line in loc.line]
    assert any(line.function_id == function.id and line.line == 42 for line in lines)
    shared = speedscope(stacks, CPU, "x")["shared"]["frames"]
    assert {"name": "Shop.checkout", "file": "/app/shop.py", "line": 42} in shared
    assert {"name": "PyEval_EvalFrame"} in shared


def test_deep_typed_stacks_are_cut_to_their_leaf_end() -> None:
    deep = typed_batch(tuple(Frame(FrameKind.PYTHON, f"f{i}", line=i) for i in range(10)))
    limits = IngestLimits(max_stack_frames=4)
    (stack,) = bound_batch(deep, limits).typed_stacks()
    assert [f.label for f in stack] == ["[truncated]", "f7", "f8", "f9"]
    assert stack[-1].line == 9


def test_a_batch_refers_only_to_frames_it_holds() -> None:
    body = typed_batch(TYPED).model_dump()
    body["stacks"] = [[len(TYPED)]]
    with pytest.raises(ValueError, match="refers to frame 4"):
        Batch.model_validate(body)
    body["version"] = 1
    body["stacks"] = [[0]]
    with pytest.raises(ValueError, match="frames need version 2"):
        Batch.model_validate(body)


def test_the_frame_table_counts_toward_the_frame_limit() -> None:
    """Frames no stack refers to still cost parsing: the table is bounded as well."""
    body = typed_batch((NATIVE,)).model_dump()
    body["frames"] += [{"kind": "native", "name": f"f{i}"} for i in range(20)]
    with pytest.raises(IngestLimitExceeded, match="21 frames"):
        bound_batch(Batch.model_validate(body), IngestLimits(max_frames_per_push=10))
