"""Reading and emptying BPF hash maps in batches, on real kernel maps."""

from collections.abc import Iterator
from typing import Any

import pytest

from podflame.agent.bpfmaps import BATCH_ENTRIES, read_and_clear, read_and_clear_counts

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

MAPS = """
struct key { u32 id; char name[12]; };
struct value { u64 counts[3]; };
BPF_HASH(counts, u32, u64, 4096);
BPF_HASH(records, struct key, struct value, 2048);
"""


@pytest.fixture
def maps() -> Iterator[Any]:
    from bcc import BPF

    bpf = BPF(text=MAPS.encode())
    try:
        yield bpf
    finally:
        bpf.cleanup()


def test_counts_map_larger_than_one_batch_is_read_whole_and_emptied(maps: Any) -> None:
    counts = maps[b"counts"]
    entries = 3 * BATCH_ENTRIES + 17  # several batch calls, the last one partial
    for i in range(entries):
        counts[counts.Key(i)] = counts.Leaf(7 * i)
    read = read_and_clear_counts(counts)
    assert sorted(read) == [(i, 7 * i) for i in range(entries)]  # simple types read as int
    assert len(list(counts.items())) == 0
    assert read_and_clear_counts(counts) == []  # an empty map reads as empty, buffers reused


def test_entries_read_are_copies_not_views_of_reused_buffers(maps: Any) -> None:
    records = maps[b"records"]

    def fill(first: int, count: int) -> None:
        for i in range(first, first + count):
            key, value = records.Key(), records.Leaf()
            key.id, key.name = i, b"n%d" % i
            value.counts[0], value.counts[2] = i, 2 * i
            records[key] = value

    fill(0, BATCH_ENTRIES + 5)
    before = read_and_clear(records)
    fill(10_000, BATCH_ENTRIES + 5)  # read through the same buffers
    after = read_and_clear(records)
    for read, first in ((before, 0), (after, 10_000)):
        ids = sorted(k.id for k, _ in read)
        assert ids == list(range(first, first + BATCH_ENTRIES + 5))
        assert all(k.name == b"n%d" % k.id and v.counts[2] == 2 * k.id for k, v in read)
    assert len(list(records.items())) == 0
