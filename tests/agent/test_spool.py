"""The queues batches wait in (spool.py), and the shipper's waits between tries."""

import gzip
import os
import random
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from podflame.agent.shipper import MAX_RETRY_AFTER, Backoff, retry_after_seconds
from podflame.agent.spool import DiskSpool, MemoryQueue, PendingQueue


def body(n: int, size: int = 100) -> bytes:
    """A whole gzip stream; `size` bytes of random payload keep it about that big."""
    return gzip.compress(n.to_bytes(4, "big") + random.Random(n).randbytes(size))


def number(data: bytes) -> int:
    return int.from_bytes(gzip.decompress(data)[:4], "big")


def drain(queue: PendingQueue) -> list[int]:
    """Everything queued, oldest first, acknowledging each."""
    numbers = []
    while (item := queue.oldest()) is not None:
        numbers.append(number(item.body))
        queue.done(item.key)
    return numbers


def batch_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".batch.gz"))


def test_spool_hands_out_batches_oldest_first_and_deletes_them_when_done(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1 << 20)
    for n in range(12):  # past 10: the names must sort by number, not by text
        assert spool.push(body(n)) == 0
    assert len(batch_files(tmp_path)) == 12
    modes = {(tmp_path / name).stat().st_mode & 0o777 for name in batch_files(tmp_path)}
    assert modes == {0o600}, "batches name every workload's functions: owner only"
    assert drain(spool) == list(range(12))
    assert batch_files(tmp_path) == []
    assert (len(spool), spool.size_bytes) == (0, 0)


def test_a_failed_send_keeps_the_batch_first_in_line(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1 << 20)
    spool.push(body(1))
    spool.push(body(2))
    first = spool.oldest()
    assert first is not None
    spool.release(first.key)
    assert drain(spool) == [1, 2]


def test_a_restarted_agent_finds_the_batches_and_numbers_after_them(tmp_path: Path) -> None:
    before = DiskSpool(tmp_path, max_bytes=1 << 20)
    for n in range(3):
        before.push(body(n))
    acknowledged = before.oldest()
    assert acknowledged is not None
    before.done(acknowledged.key)

    after = DiskSpool(tmp_path, max_bytes=1 << 20)  # the agent restarted
    assert after.stats.batches_recovered == 2
    after.push(body(3))
    assert drain(after) == [1, 2, 3]


def test_past_the_bound_the_oldest_are_dropped_and_counted(tmp_path: Path) -> None:
    size = len(body(0, 1000))
    spool = DiskSpool(tmp_path, max_bytes=int(3.5 * size))
    dropped = [spool.push(body(n, 1000)) for n in range(6)]
    assert dropped == [0, 0, 0, 1, 1, 1]
    assert spool.size_bytes <= 3.5 * size
    assert len(batch_files(tmp_path)) == 3
    assert drain(spool) == [3, 4, 5]


def test_a_batch_larger_than_the_bound_is_dropped_alone(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=2000)
    spool.push(body(1))
    assert spool.push(body(2, 5000)) == 1
    assert drain(spool) == [1]


def test_the_batch_being_sent_is_never_dropped(tmp_path: Path) -> None:
    """It may be stored by now: dropping it would count a batch lost that was not."""
    size = len(body(0, 1000))
    spool = DiskSpool(tmp_path, max_bytes=int(2.5 * size))
    spool.push(body(0, 1000))
    in_flight = spool.oldest()
    assert in_flight is not None
    for n in (1, 2, 3):
        spool.push(body(n, 1000))
    assert number(in_flight.body) == 0
    assert drain(spool) == [0, 3]


def test_a_smaller_bound_at_start_drops_the_oldest(tmp_path: Path) -> None:
    size = len(body(0, 1000))
    before = DiskSpool(tmp_path, max_bytes=10 * size)
    for n in range(5):
        before.push(body(n, 1000))
    after = DiskSpool(tmp_path, max_bytes=2 * size)
    assert after.stats.batches_dropped_at_start == 3
    assert drain(after) == [3, 4]


def test_corrupt_and_foreign_files_are_skipped_and_counted(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1 << 20)
    for n in range(4):
        spool.push(body(n))
    names = batch_files(tmp_path)
    whole = (tmp_path / names[1]).read_bytes()
    (tmp_path / names[1]).write_bytes(whole[: len(whole) // 2])  # truncated
    (tmp_path / names[2]).write_bytes(b"\x1f\x8b" + os.urandom(200))  # garbage after the magic
    (tmp_path / "README").write_text("not a batch")
    (tmp_path / "00000000000000000009.batch.gz.bak").write_bytes(whole)
    (tmp_path / ".00000000000000000007.tmp").write_bytes(whole[:10])  # a crash mid-write

    restarted = DiskSpool(tmp_path, max_bytes=1 << 20)
    assert restarted.stats.files_foreign == 2
    assert not (tmp_path / ".00000000000000000007.tmp").exists()
    assert drain(restarted) == [0, 3]
    assert restarted.stats.files_corrupt == 2
    assert batch_files(tmp_path) == []
    assert (tmp_path / "README").exists(), "files that are not ours stay"


def test_an_unreadable_file_is_skipped(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1 << 20)
    spool.push(body(0))
    spool.push(body(1))
    first = tmp_path / batch_files(tmp_path)[0]
    first.unlink()
    first.mkdir()  # read_bytes() fails, even for root
    assert drain(spool) == [1]
    assert spool.stats.files_corrupt == 1


def test_a_batch_the_disk_refuses_waits_in_memory_in_order(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = DiskSpool(directory, max_bytes=1 << 20)
    spool.push(body(0))
    directory.chmod(0o500)
    try:
        # Root ignores permission bits: replace the directory by a file instead.
        os.rename(directory, tmp_path / "moved")
        directory.write_text("")
        spool.push(body(1))
    finally:
        directory.unlink()
        os.rename(tmp_path / "moved", directory)
        directory.chmod(0o700)
    spool.push(body(2))
    assert spool.stats.write_failures == 1
    assert drain(spool) == [0, 1, 2]


def test_memory_queue_keeps_at_most_its_bound(tmp_path: Path) -> None:
    queue = MemoryQueue(max_batches=3)
    assert [queue.push(body(n)) for n in range(5)] == [0, 0, 0, 1, 1]
    assert drain(queue) == [2, 3, 4]


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(low=1.0, high=30.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(10)]
    ceilings = [min(30.0, 2.0**n) for n in range(10)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
    assert len(set(delays)) == len(delays), "jittered"
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_retry_after_is_honored_not_earlier() -> None:
    backoff = Backoff(rng=random.Random(1))
    assert 7.0 <= backoff.next_delay(7.0) <= 7.7
    assert backoff.next_delay(10**6) <= MAX_RETRY_AFTER * 1.1


@pytest.mark.parametrize(
    ("header", "expected"),
    [("5", 5.0), (" 120 ", 120.0), (None, None), ("", None), ("soon", None), ("-3", None)],
)
def test_retry_after_header_in_seconds(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header) == expected


def test_retry_after_header_as_a_date() -> None:
    seconds = retry_after_seconds(formatdate(time.time() + 60, usegmt=True))
    assert seconds is not None and 55 <= seconds <= 61
    assert retry_after_seconds(formatdate(time.time() - 60, usegmt=True)) == 0.0
