"""The shipper against a real server: queue while it is away, send in order, drop rejects."""

import time
import uuid
from pathlib import Path

import httpx

from podflame.agent.shipper import Shipper
from podflame.model import Batch, Series, StackValue
from tests.conftest import free_port, running_server


def batch(value: int, *, profile_type: str = "cpu") -> Batch:
    now = time.time_ns()
    return Batch(
        batch_id=uuid.uuid4().hex,
        profile_type=profile_type,
        period=1,
        start_time_ns=now - 10**9,
        end_time_ns=now,
        stacks=[["main", "work"]],
        series=[
            Series(
                labels={"comm": "shipper-test", "pid": "7"},
                samples=[StackValue(stack=0, value=value)],
            )
        ],
    )


def stored_total(url: str) -> int:
    params = {"query": '{comm="shipper-test"}', "from": "now-5m"}
    total: int = httpx.get(url + "/api/v1/top", params=params, timeout=30).json()["total"]
    return total


def test_queues_while_server_is_away_then_sends_in_order(tmp_path: Path) -> None:
    port = free_port()
    shipper = Shipper(f"http://127.0.0.1:{port}", max_pending=3, timeout=2)
    for value in (1, 10, 100, 1000):  # nothing listens yet; the oldest is dropped
        shipper.ship(batch(value))
    assert len(shipper.pending) == 3
    assert shipper.stats.batches_dropped_queue_full == 1
    assert shipper.stats.batches_sent == 0

    with running_server(tmp_path, port=port) as url:
        shipper.flush()
        assert not shipper.pending
        assert shipper.stats.batches_sent == 3
        assert stored_total(url) == 10 + 100 + 1000


def test_a_rejected_batch_is_dropped_not_retried(podflame_server: str) -> None:
    shipper = Shipper(podflame_server, max_pending=3)
    shipper.ship(batch(5, profile_type="no-such-type"))
    shipper.ship(batch(7))
    assert shipper.stats.batches_rejected == 1
    assert shipper.stats.batches_sent == 1
    assert not shipper.pending
    assert stored_total(podflame_server) == 7


def test_token_is_sent_to_a_server_that_requires_one(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    secret = "agent-token-0123456789"
    tokens.write_text(f'[{{"token": "{secret}", "scopes": ["ingest", "query"]}}]')
    with running_server(tmp_path, extra=["--tokens-file", str(tokens)]) as url:
        refused = Shipper(url, max_pending=3)
        refused.ship(batch(3))
        assert refused.stats.batches_rejected == 1  # 401: the batch is not retried forever

        shipper = Shipper(url, max_pending=3, token=secret)
        shipper.ship(batch(11))
        assert shipper.stats.batches_sent == 1
        params = {"query": '{comm="shipper-test"}', "from": "now-5m"}
        headers = {"Authorization": f"Bearer {secret}"}
        top = httpx.get(url + "/api/v1/top", params=params, headers=headers, timeout=30).json()
        assert top["total"] == 11
