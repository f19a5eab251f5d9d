"""Network latency data shared by the agent and the server: histogram buckets and wire records.

Latencies are counted in log-linear buckets: each power of two of nanoseconds
is split into 2**SUB_BUCKET_BITS equal sub-buckets, so a bucket's width is at
most 1/8 of its lower bound and a percentile read at the bucket's midpoint is
within about 6 % of the true value. The BPF program computes the same index
(bpf/network.bpf.c mirrors bucket_of); this module is the reference.
"""

from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

SUB_BUCKET_BITS = 3
SUB_BUCKETS = 1 << SUB_BUCKET_BITS
# Latencies at or above 2**MAX_EXPONENT ns (about 18 minutes) share the last bucket.
MAX_EXPONENT = 40
# Indexes 0..7 count 0..7 ns exactly; then 8 per power of two up to 2**MAX_EXPONENT;
# the last index counts everything from 2**MAX_EXPONENT on.
OVERFLOW_BUCKET = (MAX_EXPONENT - SUB_BUCKET_BITS + 1) * SUB_BUCKETS
BUCKET_COUNT = OVERFLOW_BUCKET + 1


def bucket_of(nanoseconds: int) -> int:
    """Index of the bucket that counts a latency of `nanoseconds`."""
    if nanoseconds < SUB_BUCKETS:
        return max(nanoseconds, 0)
    exponent = nanoseconds.bit_length() - 1
    if exponent >= MAX_EXPONENT:
        return OVERFLOW_BUCKET
    sub = (nanoseconds >> (exponent - SUB_BUCKET_BITS)) & (SUB_BUCKETS - 1)
    return (exponent - SUB_BUCKET_BITS + 1) * SUB_BUCKETS + sub


def bucket_bounds(index: int) -> tuple[int, int]:
    """The half-open range [low, high) of nanoseconds that bucket `index` counts."""
    if not 0 <= index < BUCKET_COUNT:
        raise ValueError(f"bucket index {index} out of range 0..{BUCKET_COUNT - 1}")
    if index < SUB_BUCKETS:
        return index, index + 1
    if index == OVERFLOW_BUCKET:  # unbounded above; report one more power of two
        return 1 << MAX_EXPONENT, 1 << (MAX_EXPONENT + 1)
    exponent = index // SUB_BUCKETS + SUB_BUCKET_BITS - 1
    sub = index % SUB_BUCKETS
    width = 1 << (exponent - SUB_BUCKET_BITS)
    low = (1 << exponent) + sub * width
    return low, low + width


def quantile(buckets: Mapping[int, int], q: float) -> float | None:
    """The q-quantile (0 <= q <= 1) in nanoseconds, read at its bucket's midpoint."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not within [0, 1]")
    total = sum(buckets.values())
    if total <= 0:
        return None
    rank = max(q * total, 1.0)
    seen = 0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= rank:
            low, high = bucket_bounds(index)
            return (low + high - 1) / 2
    low, high = bucket_bounds(max(buckets))
    return (low + high - 1) / 2


Label = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
LabelValue = Annotated[str, Field(max_length=4096)]
Buckets = dict[Annotated[int, Field(ge=0, lt=BUCKET_COUNT)], Annotated[int, Field(gt=0)]]


class LatencyHistogram(BaseModel):
    """One process's calls of one system call during a batch's interval."""

    model_config = ConfigDict(extra="forbid")

    labels: dict[Label, LabelValue] = Field(description="Labels of the calling process.")
    syscall: str = Field(min_length=1, max_length=64, description="Such as recvfrom or connect.")
    count: int = Field(ge=0, description="Completed calls, errors included, EAGAIN excluded.")
    errors: int = Field(ge=0, description="Calls that returned an error other than EAGAIN.")
    eagain: int = Field(ge=0, description="Non-blocking calls that returned EAGAIN.")
    sum_ns: int = Field(ge=0)
    max_ns: int = Field(ge=0)
    buckets: Buckets = Field(description="Bucket index (model.network.bucket_of) -> calls.")


class Connection(BaseModel):
    """connect() calls from one process to one address:port with one outcome."""

    model_config = ConfigDict(extra="forbid")

    labels: dict[Label, LabelValue] = Field(description="Labels of the connecting process.")
    address: str = Field(min_length=2, max_length=64, description="IPv4 or IPv6 text form.")
    port: int = Field(ge=0, le=65535)
    result: str = Field(
        min_length=1,
        max_length=32,
        description="'ok', an errno name such as ECONNREFUSED, or EINPROGRESS when a "
        "non-blocking connect could not be followed to completion.",
    )
    count: int = Field(gt=0)
    max_ns: int = Field(ge=0)
    buckets: Buckets = Field(description="Connect latency: bucket index -> calls.")
    peer: dict[Label, LabelValue] = Field(
        default_factory=dict,
        description="Labels of the destination when it is a pod the agent knows "
        "(namespace, pod, workload).",
    )
