"""Turn a wire Batch into the rows of the `stacks` and `samples` tables."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from podflame.model import PROFILE_TYPES, Batch, Series
from podflame.server.schema import LABEL_COLUMNS, PID_LABEL, SAMPLE_COLUMNS
from podflame.server.store import InvalidBatchError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_PID = 2**32 - 1
_MAX_VALUE = 2**63 - 1  # the value column is Int64
# 2100-01-01: the TTL works on DateTime, which ends in 2106.
_MAX_TIME_NS = 4_102_444_800 * 10**9


def stack_hash(frames: Sequence[str]) -> int:
    """A stable 64-bit key for a stack.

    Each frame is length-prefixed, so no frame content (not even a newline or
    a NUL) can make two different stacks encode to the same bytes.
    """
    digest = hashlib.blake2b(digest_size=8)
    for frame in frames:
        encoded = frame.encode()
        digest.update(len(encoded).to_bytes(4, "big"))
        digest.update(encoded)
    return int.from_bytes(digest.digest(), "big")


@dataclass
class BatchRows:
    # Distinct stacks of the batch: hash -> frames.
    stacks: dict[int, list[str]]
    # Column-oriented sample rows, one list per name in SAMPLE_COLUMNS.
    columns: dict[str, list[Any]] = field(
        default_factory=lambda: {name: [] for name in SAMPLE_COLUMNS}
    )

    @property
    def sample_count(self) -> int:
        return len(self.columns["value"])


def batch_rows(batch: Batch) -> BatchRows:
    if batch.profile_type not in PROFILE_TYPES:
        known = ", ".join(sorted(PROFILE_TYPES))
        raise InvalidBatchError(f"unknown profile_type {batch.profile_type!r} (known: {known})")
    hashes = [stack_hash(frames) for frames in batch.stacks]
    rows = BatchRows(stacks=dict(zip(hashes, batch.stacks, strict=True)))
    timestamp = _timestamp(batch.end_time_ns)
    for index, series in enumerate(batch.series):
        _add_series(rows, batch, series, index, timestamp, hashes)
    return rows


def _add_series(
    rows: BatchRows,
    batch: Batch,
    series: Series,
    index: int,
    timestamp: datetime,
    hashes: list[int],
) -> None:
    count = len(series.samples)
    labels = dict(series.labels)
    fixed: dict[str, Any] = {name: labels.pop(name, "") for name in LABEL_COLUMNS}
    fixed["pid"] = _pid(labels.pop(PID_LABEL, None), index)
    fixed.update(profile_type=batch.profile_type, timestamp=timestamp, labels=labels)
    for name, value in fixed.items():
        rows.columns[name].extend([value] * count)
    values = [sample.value for sample in series.samples]
    if values and max(values) > _MAX_VALUE:
        raise InvalidBatchError(f"series[{index}]: a value exceeds {_MAX_VALUE}")
    rows.columns["stack_hash"].extend(hashes[sample.stack] for sample in series.samples)
    rows.columns["value"].extend(values)


def _pid(text: str | None, index: int) -> int:
    if text is None:
        return 0
    if not text.isascii() or not text.isdigit() or int(text) > _MAX_PID:
        raise InvalidBatchError(f"series[{index}]: label pid={text!r} is not a process id")
    return int(text)


def _timestamp(end_time_ns: int) -> datetime:
    if end_time_ns >= _MAX_TIME_NS:
        raise InvalidBatchError(f"end_time_ns={end_time_ns} is out of range")
    return _EPOCH + timedelta(microseconds=end_time_ns // 1000)
