"""The BPF program's histogram index is model.network.bucket_of's, for every kind of value."""

import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

from podflame.bpf import source_text
from podflame.model.network import MAX_EXPONENT, SUB_BUCKETS, bucket_of

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

SELFTEST_VALUES = 512  # as in bpf/network.bpf.c


def sample_values() -> list[int]:
    edges = set(range(4 * SUB_BUCKETS))
    for exponent in range(64):
        for delta in (-1, 0, 1):
            edges.add(max(0, (1 << exponent) + delta))
        edges.add((1 << exponent) | ((1 << exponent) - 1))  # all ones below the top bit
    edges |= {(1 << MAX_EXPONENT) - 1, 1 << MAX_EXPONENT, (1 << 64) - 1}
    rng = random.Random(4)
    # Log-uniform over the whole range, then uniform within each octave.
    drawn = {int(2 ** rng.uniform(0, 64)) for _ in range(20000)}
    drawn |= {rng.randrange(1 << e, 1 << (e + 1)) for e in range(3, 63) for _ in range(50)}
    return sorted(v for v in edges | drawn if v < 1 << 64)


@pytest.fixture(scope="module")
def selftest(require_bpf: None) -> Iterator[Any]:
    from bcc import BPF

    bpf = BPF(text=source_text("network.bpf.c").encode(), cflags=["-DBUCKET_SELFTEST=1"])
    bpf.attach_tracepoint(tp=b"syscalls:sys_enter_getppid", fn_name=b"bucket_selftest")
    yield bpf
    bpf.cleanup()


def bpf_buckets(bpf: Any, values: list[int]) -> list[int]:
    table = bpf[b"selftest"]
    key = table.Key(0)
    test = table.Leaf()
    test.pid = os.getpid()
    for index in range(SELFTEST_VALUES):
        test.input[index] = values[index] if index < len(values) else 0
    table[key] = test
    os.getppid()  # runs bucket_selftest in this process
    return list(table[key].out[: len(values)])


def test_bpf_bucket_index_equals_bucket_of(selftest: Any) -> None:
    values = sample_values()
    assert len(values) > 20000
    mismatches = []
    for start in range(0, len(values), SELFTEST_VALUES):
        chunk = values[start : start + SELFTEST_VALUES]
        for value, bucket in zip(chunk, bpf_buckets(selftest, chunk), strict=True):
            if bucket != bucket_of(value):
                mismatches.append((value, bucket, bucket_of(value)))
    assert not mismatches, mismatches[:10]
