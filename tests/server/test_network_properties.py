"""Property: percentiles of histograms merged in ClickHouse equal those of the concatenated
latencies, within the precision of one bucket (half its width, from its midpoint)."""

import itertools
import math
import time

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podflame.model.network import MAX_EXPONENT, bucket_bounds, bucket_of
from tests.server.network_batches import histogram, net_batch

# Below the overflow bucket, whose width is unbounded.
LATENCY = st.one_of(
    st.integers(min_value=0, max_value=2**MAX_EXPONENT - 1),
    st.integers(min_value=1_000, max_value=100_000_000),  # 1 us to 100 ms, where calls are
)
# Each inner list is one process's histogram in a batch of its own.
BATCHES = st.lists(st.lists(LATENCY, max_size=40), min_size=1, max_size=4).filter(
    lambda batches: any(batches)
)
_pods = itertools.count()


def exact_quantile(values: list[int], q: float) -> int:
    """The value quantile() ranks at: the ceil(q * n)-th smallest, at least the first."""
    rank = max(q * len(values), 1.0)
    return sorted(values)[math.ceil(rank) - 1]


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    # One store for all examples: each example writes and reads a pod of its own.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=BATCHES)
def test_merged_percentiles_match_the_concatenated_values(
    api: TestClient, batches: list[list[int]]
) -> None:
    pod = f"pod-{next(_pods)}"
    end_ns = time.time_ns() - 60 * 10**9
    for offset, values in enumerate(batches):
        labels = {"pod": pod, "pid": str(offset + 1)}
        body = net_batch([histogram(labels, "read", values)], end_ns=end_ns - offset * 10**9)
        assert api.post("/api/v1/ingest", json=body).status_code == 200
    response = api.get(
        "/api/v1/network/latency", params={"query": f'{{pod="{pod}"}}', "group_by": ""}
    )
    assert response.status_code == 200, response.text
    (group,) = response.json()["groups"]
    values = [value for batch in batches for value in batch]
    assert group["count"] == len(values)
    assert group["max_us"] == max(values) / 1000
    for q, name in ((0.5, "p50_us"), (0.9, "p90_us"), (0.99, "p99_us")):
        exact = exact_quantile(values, q)
        low, high = bucket_bounds(bucket_of(exact))
        reported_ns = group[name] * 1000
        # The midpoint of the exact value's bucket, or the maximum when that is lower.
        assert abs(reported_ns - exact) <= (high - low) / 2 + 1e-9 * exact, (q, exact)
        assert low - 1e-6 <= reported_ns < high, (q, exact)
