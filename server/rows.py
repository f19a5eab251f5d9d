"""Turn a wire Batch into the rows of the `stacks` and `samples` tables.

A batch's samples come in series that share their labels, so labels are kept
once per series and only stack hashes and values once per row (numpy
arrays); samples_block() writes them as one Native block for ClickHouse.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter, itemgetter

import numpy as np

from podflame.model import Batch
from podflame.model.frames import KERNEL_FRAME_SUFFIX, Frame, FrameKind
from podflame.server.native import NativeBlock, strings
from podflame.server.schema import LABEL_COLUMNS, PID_LABEL, SAMPLE_COLUMNS
from podflame.server.stack_cache import StackCache
from podflame.server.store import InvalidBatchError

_MAX_PID = 2**32 - 1
# 2100-01-01: the TTL works on DateTime, which ends in 2106.
_MAX_TIME_NS = 4_102_444_800 * 10**9
_NOT_EXTRA = frozenset((*LABEL_COLUMNS, PID_LABEL))


def stack_hash(
    stack: Sequence[Frame] | Sequence[str], encoded: dict[int, tuple[bytes, bytes]] | None = None
) -> int:
    """A stable 64-bit key for a stack (a name is read as `Frame.from_label`).

    Each frame's label is length-prefixed, so no frame content (not even a newline
    or a NUL) can make two different stacks encode to the same bytes. A stack whose
    frames all say no more than their labels hashes as it did before frames were
    typed (as strings), so it is stored once; the others add their details.
    `encoded`: each frame's bytes by id(frame), kept across the stacks of a batch (whose
    frames are shared objects, Batch.typed_stacks, alive while it is hashed).
    """
    memo = {} if encoded is None else encoded
    frames = [f if isinstance(f, Frame) else Frame.from_label(f) for f in stack]
    for frame in frames:
        if id(frame) not in memo:
            memo[id(frame)] = _encoded(frame)
    return _hash_of_encoded(frames, memo)


def _hash_of_encoded(frames: Sequence[Frame], encoded: dict[int, tuple[bytes, bytes]]) -> int:
    """stack_hash of frames whose bytes `encoded` holds: map with C functions only,
    no Python code per frame of the many stacks of a batch."""
    parts = list(map(encoded.__getitem__, map(id, frames)))
    data = b"".join(map(_FIRST, parts))
    if not all(map(_IS_PLAIN, frames)):
        data += b"\0details" + b"".join(map(_SECOND, parts))
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


@dataclass(frozen=True)
class _FrameBytes:
    """A batch's distinct frames by id(frame): each one's length-prefixed label; the
    ids of those whose label does not say all; and, only if there are any, each
    frame's length-prefixed details (a stack of plain frames hashes its labels only)."""

    labels: dict[int, bytes]
    detailed: set[int]
    details: dict[int, bytes]


def _frame_bytes(stacks: Sequence[Sequence[Frame]]) -> _FrameBytes:
    """Each distinct frame of `stacks` encoded once for all of them."""
    every = chain.from_iterable(stacks)
    distinct = dict(zip(map(id, every), chain.from_iterable(stacks), strict=True))
    detailed = {key for key, frame in distinct.items() if not frame.is_plain}
    return _FrameBytes(
        labels={key: _prefixed(frame.label) for key, frame in distinct.items()},
        detailed=detailed,
        details={key: _prefixed(repr(_detail(f))) for key, f in distinct.items()}
        if detailed
        else {},
    )


def _hash_of_bytes(frames: Sequence[Frame], encoded: _FrameBytes) -> int:
    """stack_hash of frames that `encoded` holds, by C code only (map, join, isdisjoint):
    no Python code per frame of the many stacks of a batch."""
    ids = list(map(id, frames))
    data = b"".join(map(encoded.labels.__getitem__, ids))
    if encoded.detailed and not encoded.detailed.isdisjoint(ids):
        data += b"\0details" + b"".join(map(encoded.details.__getitem__, ids))
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


# Frame._plain, not the property: attrgetter reads a slot without Python code.
_FIRST, _SECOND, _IS_PLAIN = itemgetter(0), itemgetter(1), attrgetter("_plain")


def _encoded(frame: Frame) -> tuple[bytes, bytes]:
    """(the length-prefixed label, the length-prefixed details) of a frame."""
    return _prefixed(frame.label), _prefixed(repr(_detail(frame)))


def _prefixed(text: str) -> bytes:
    encoded = text.encode()
    return len(encoded).to_bytes(4, "big") + encoded


FrameDetail = tuple[str, str, int, str, int, bool]


def frame_details(frames: Sequence[Frame]) -> list[FrameDetail]:
    """The stacks table's `details` of a stack: per frame (kind, module, offset or -1,
    file, line, resolved); none when every frame is what its label says."""
    if all(frame.is_plain for frame in frames):
        return []
    return [_detail(frame) for frame in frames]


def _detail(f: Frame) -> FrameDetail:
    return (f.kind, f.module, -1 if f.offset is None else f.offset, f.file, f.line, f.resolved)


def stack_of(labels: Sequence[str], details: Sequence[FrameDetail]) -> tuple[Frame, ...]:
    """A stored stack's frames: from its details, or else (rows stored before frames
    were typed, and plain stacks) from its labels."""
    if len(details) != len(labels):
        return tuple(Frame.from_label(label) for label in labels)
    return tuple(
        Frame(kind, _name(kind, label), module, None if offset < 0 else offset, file, line, ok)
        for label, (kind, module, offset, file, line, ok) in zip(labels, details, strict=True)
    )


def _name(kind: str, label: str) -> str:
    return label.removesuffix(KERNEL_FRAME_SUFFIX) if kind == FrameKind.KERNEL else label


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
    stacks: dict[int, tuple[Frame, ...]]
    uncached: dict[int, tuple[Frame, ...]]
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
    records = batch.frame_records(cache.frames if cache else None)
    # A cached stack is found by its frames' keys, without frames made for its names.
    found = cache.stored(batch.stack_keys(records)) if cache else [None] * len(batch.stacks)
    new = batch.typed_stacks(records, [i for i, stack in enumerate(found) if stack is None])
    encoded = _frame_bytes(new)
    hashed = [(_hash_of_bytes(frames, encoded), frames) for frames in new]
    made = iter(hashed)  # a batch may list one stack twice: one made per listing
    # Per stack in batch order: (hash, frames), the cache's or made just now.
    stacks = [next(made) if stack is None else stack for stack in found]
    stack_index: list[int] = []
    values: list[int] = []
    for series in batch.series:
        stack_index += [sample.stack for sample in series.samples]
        values += [sample.value for sample in series.samples]
    return BatchRows(
        batch_key=batch_key(batch.batch_id),
        profile_type=batch.profile_type,
        timestamp_ms=batch.end_time_ns // 10**6,
        stacks=dict(stacks),
        uncached=dict(hashed),
        series=_series_labels(batch),
        counts=np.array([len(series.samples) for series in batch.series], dtype=np.intp),
        stack_hash=np.array([h for h, _ in stacks], dtype=np.uint64)[
            np.array(stack_index, dtype=np.intp)
        ],
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
