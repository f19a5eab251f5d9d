"""Turn a wire Batch into the rows of the `stacks` and `samples` tables.

A batch's samples come in series that share their labels, so labels are kept
once per series and only stack hashes and values once per row (numpy
arrays); samples_block() writes them as one Native block for ClickHouse.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from podflame.model import Batch
from podflame.server.native import NativeBlock, strings
from podflame.server.schema import LABEL_COLUMNS, PID_LABEL, SAMPLE_COLUMNS
from podflame.server.stack_cache import StackCache
from podflame.server.store import InvalidBatchError

_MAX_PID = 2**32 - 1
# 2100-01-01: the TTL works on DateTime, which ends in 2106.
_MAX_TIME_NS = 4_102_444_800 * 10**9
_NOT_EXTRA = frozenset((*LABEL_COLUMNS, PID_LABEL))


def stack_hash(frames: Sequence[str]) -> int:
    """A stable 64-bit key for a stack.

    Each frame is length-prefixed, so no frame content (not even a newline or
    a NUL) can make two different stacks encode to the same bytes.
    """
    encoded = [frame.encode() for frame in frames]
    data = b"".join(len(frame).to_bytes(4, "big") + frame for frame in encoded)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def batch_key(batch_id: str) -> int:
    """The 64-bit key that marks a batch's rows in every table (schema version 4)."""
    digest = hashlib.blake2b(batch_id.encode(), digest_size=8, person=b"podflame-batch").digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class SeriesLabels:
    """Per series (in batch order): its label columns, pid and other labels."""

    columns: dict[str, list[str]]
    pid: list[int]
    extra: list[dict[str, str]]


@dataclass(frozen=True)
class BatchRows:
    batch_key: int
    profile_type: str
    timestamp_ms: int
    # Distinct stacks of the batch: hash -> frames; `uncached` those the stack
    # cache does not know to be stored.
    stacks: dict[int, list[str]]
    uncached: dict[int, list[str]]
    series: SeriesLabels
    # Sample rows per series; then per row (series after series) its stack and value.
    counts: np.ndarray
    stack_hash: np.ndarray
    value: np.ndarray

    @property
    def sample_count(self) -> int:
        return len(self.value)


def batch_rows(batch: Batch, cache: StackCache | None = None) -> BatchRows:
    """The batch's rows; stacks in `cache` are known stored and not hashed again."""
    if batch.end_time_ns >= _MAX_TIME_NS:
        raise InvalidBatchError(f"end_time_ns={batch.end_time_ns} is out of range")
    cached = cache.hashes_of(batch.stacks) if cache else [None] * len(batch.stacks)
    hashes = [stack_hash(f) if h is None else h for h, f in zip(cached, batch.stacks, strict=True)]
    uncached = {h: f for h, c, f in zip(hashes, cached, batch.stacks, strict=True) if c is None}
    stack_index: list[int] = []
    values: list[int] = []
    for series in batch.series:
        stack_index += [sample.stack for sample in series.samples]
        values += [sample.value for sample in series.samples]
    return BatchRows(
        batch_key=batch_key(batch.batch_id),
        profile_type=batch.profile_type,
        timestamp_ms=batch.end_time_ns // 10**6,
        stacks=dict(zip(hashes, batch.stacks, strict=True)),
        uncached=uncached,
        series=_series_labels(batch),
        counts=np.array([len(series.samples) for series in batch.series], dtype=np.intp),
        stack_hash=np.array(hashes, dtype=np.uint64)[np.array(stack_index, dtype=np.intp)],
        value=_values(values, batch),
    )


def _series_labels(batch: Batch) -> SeriesLabels:
    labels = SeriesLabels({name: [] for name in LABEL_COLUMNS}, [], [])
    for index, series in enumerate(batch.series):
        for name, column in labels.columns.items():
            column.append(series.labels.get(name, ""))
        labels.pid.append(_pid(series.labels.get(PID_LABEL), index))
        labels.extra.append({k: v for k, v in series.labels.items() if k not in _NOT_EXTRA})
    return labels


def _values(values: list[int], batch: Batch) -> np.ndarray:
    try:
        return np.array(values, dtype=np.int64)  # the value column is Int64
    except OverflowError:
        limit = np.iinfo(np.int64).max
        too_big = (any(s.value > limit for s in series.samples) for series in batch.series)
        index = next(i for i, big in enumerate(too_big) if big)
        raise InvalidBatchError(f"series[{index}]: a value exceeds {limit}") from None


def _pid(text: str | None, index: int) -> int:
    if text is None:
        return 0
    if not text.isascii() or not text.isdigit() or int(text) > _MAX_PID:
        raise InvalidBatchError(f"series[{index}]: label pid={text!r} is not a process id")
    return int(text)


def samples_block(rows: BatchRows) -> bytes:
    """The rows of the samples table as a Native block, columns in SAMPLE_COLUMNS order."""
    block = NativeBlock(rows.sample_count)
    rows_count = rows.sample_count
    block.add_low_cardinality("profile_type", [rows.profile_type], np.zeros(rows_count, np.intp))
    timestamps = np.full(rows_count, rows.timestamp_ms, dtype=np.int64)
    block.add_array("timestamp", "DateTime64(3, 'UTC')", timestamps)
    for name in LABEL_COLUMNS:
        dictionary, keys = _dictionary(rows.series.columns[name])
        block.add_low_cardinality(name, dictionary, np.repeat(keys, rows.counts))
    block.add_array("pid", "UInt32", np.repeat(np.array(rows.series.pid, np.uint32), rows.counts))
    _add_extra_labels(block, rows.series.extra, rows.counts)
    block.add_array("stack_hash", "UInt64", rows.stack_hash)
    block.add_array("value", "Int64", rows.value)
    block.add_array("batch_key", "UInt64", np.full(rows_count, rows.batch_key, dtype=np.uint64))
    if block.names != SAMPLE_COLUMNS:
        raise AssertionError(f"samples block columns {block.names} != {SAMPLE_COLUMNS}")
    return block.encode()


def _dictionary(values: list[str]) -> tuple[list[str], np.ndarray]:
    """(distinct values, index of each value among them)."""
    index: dict[str, int] = {}
    keys = [index.setdefault(value, len(index)) for value in values]
    return list(index), np.array(keys, dtype=np.intp)


def _add_extra_labels(block: NativeBlock, extra: list[dict[str, str]], counts: np.ndarray) -> None:
    """The `labels` Map column: every row holds its series' other labels."""
    sizes = np.repeat(np.array([len(labels) for labels in extra], dtype=np.intp), counts)
    key_index: dict[str, int] = {}
    keys: list[np.ndarray] = []
    values: list[bytes] = []
    for labels, count in zip(extra, counts.tolist(), strict=True):
        if labels and count:
            series_keys = [key_index.setdefault(key, len(key_index)) for key in labels]
            keys.append(np.tile(np.array(series_keys, dtype=np.intp), count))
            values.append(strings(list(labels.values())) * count)
    all_keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.intp)
    block.add_string_map("labels", np.cumsum(sizes), list(key_index), all_keys, b"".join(values))
