"""The shipper against a real server: queue while it is away, send in order, drop rejects."""

import gzip
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from podflame.agent.shipper import Shipper
from podflame.agent.spool import DiskSpool
from podflame.model import Batch, Series, StackValue
from podflame.model.wire import ATTEMPT_HEADER
from tests.agent.outage import RefusingProxy, blackhole, kill, rows_per_sample, start_server
from tests.conftest import free_port, running_server, stop


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
    """A refused token (a rotation: agents and server restart in either order) loses
    nothing: the batch stays in the spool and the agent restarted with the new token
    sends it."""
    tokens = tmp_path / "tokens.json"
    secret = "agent-token-0123456789"
    tokens.write_text(f'[{{"token": "{secret}", "scopes": ["ingest", "query"]}}]')
    spool = tmp_path / "spool"
    with running_server(tmp_path, extra=["--tokens-file", str(tokens)]) as url:
        refused = Shipper(url, queue=DiskSpool(spool, 1 << 20))
        refused.ship(batch(3))
        for token in (None, "the-token-before-rotation"):
            refused = Shipper(url, queue=DiskSpool(spool, 1 << 20), token=token)
            refused.flush()
            assert refused.stats.auth_refused == 1
            assert refused.stats.batches_rejected == 0
            assert len(spool_files(spool)) == 1

        shipper = Shipper(url, queue=DiskSpool(spool, 1 << 20), token=secret)
        shipper.ship(batch(11))
        assert shipper.stats.batches_sent == 2
        assert not spool_files(spool)
        params = {"query": '{comm="shipper-test"}', "from": "now-5m"}
        headers = {"Authorization": f"Bearer {secret}"}
        top = httpx.get(url + "/api/v1/top", params=params, headers=headers, timeout=30).json()
        assert top["total"] == 3 + 11


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Until `condition` holds; the timeout only stops a broken test from hanging."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def spool_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.batch.gz"))


def test_spooled_batches_reach_a_server_that_comes_back(tmp_path: Path) -> None:
    port = free_port()
    spool = DiskSpool(tmp_path / "spool", max_bytes=1 << 20)
    shipper = Shipper(f"http://127.0.0.1:{port}", queue=spool, timeout=2)
    shipper.start()
    for value in (1, 10, 100):  # nothing listens yet
        shipper.submit(batch(value))
    assert len(spool_files(tmp_path / "spool")) == 3
    time.sleep(3)
    # Backed off: a try at once, then after at least 0.5 s, 1 s, 2 s (not thousands).
    assert 1 <= shipper.stats.send_failures <= 3
    assert shipper.stats.batches_sent == 0

    with running_server(tmp_path, port=port) as url:
        wait_for(lambda: shipper.stats.batches_sent == 3)
        assert spool_files(tmp_path / "spool") == []
        assert stored_total(url) == 111
        shipper.close(time.monotonic() + 5)


def test_a_503_with_retry_after_is_waited_out(podflame_server: str) -> None:
    with RefusingProxy(podflame_server, refusals=2, retry_after="2") as proxy:
        shipper = Shipper(proxy.url, max_pending=5)
        shipper.start()
        shipper.submit(batch(13))
        wait_for(lambda: shipper.stats.batches_sent == 1)
        shipper.close(time.monotonic() + 5)
    assert proxy.statuses == [503, 503, 200]
    gaps = [later - earlier for earlier, later in itertools.pairwise(proxy.arrivals)]
    assert min(gaps) >= 2.0, f"a retry came before the Retry-After of 2 s: {gaps}"
    assert shipper.stats.retry_after_waits == 2
    assert stored_total(podflame_server) == 13


def test_a_server_that_never_answers_blocks_only_the_sender(tmp_path: Path) -> None:
    """Batches keep being spooled while the sender waits for an answer; closing gives up
    at its deadline and leaves them all in the spool."""
    directory = tmp_path / "spool"
    with blackhole() as hole:
        shipper = Shipper(hole.url, queue=DiskSpool(directory, 1 << 20), timeout=30)
        shipper.start()
        shipper.submit(batch(1))
        wait_for(lambda: hole.connections == 1)  # the sender waits for an answer
        for value in (2, 3):
            shipper.submit(batch(value))  # returns although the first send hangs
        assert len(spool_files(directory)) == 3
        assert (hole.connections, shipper.stats.send_failures) == (1, 0)
        shipper.close(time.monotonic() + 1)
        assert shipper.stats.batches_sent == 0
    assert len(spool_files(directory)) == 3
    assert shipper.stats.batches_lost_at_exit == 0


def test_unacknowledged_batches_without_a_spool_are_counted_lost() -> None:
    with blackhole() as hole:
        shipper = Shipper(hole.url, max_pending=5, timeout=30)
        shipper.start()
        for value in (1, 2):
            shipper.submit(batch(value))
        shipper.close(time.monotonic() + 1)
    assert shipper.stats.batches_lost_at_exit == 2


def test_a_replayed_batch_is_stored_once_across_restarts(tmp_path: Path) -> None:
    """The agent died after the server stored a batch but before deleting its file, and the
    server was killed too: the restarted agent sends the file again, the restarted server
    (same chDB) keeps it once, by its batch_id."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    directory = tmp_path / "spool"
    server = start_server(tmp_path, port)
    try:
        first = Shipper(url, queue=DiskSpool(directory, 1 << 20))
        first.submit(batch(17))
        (saved,) = [(path.name, path.read_bytes()) for path in spool_files(directory)]
        assert first.flush()
        assert spool_files(directory) == []
        assert stored_total(url) == 17
        kill(server)
        (directory / saved[0]).write_bytes(saved[1])  # as if never deleted

        server = start_server(tmp_path, port)
        spool = DiskSpool(directory, 1 << 20)
        assert spool.stats.batches_recovered == 1
        restarted = Shipper(url, queue=spool)
        restarted.submit(batch(19))
        assert restarted.flush()
        assert restarted.stats.batches_sent == 2
        assert stored_total(url) == 17 + 19
    finally:
        stop(server)
    rows = rows_per_sample(tmp_path / "chdb", "comm = 'shipper-test'")
    assert sorted(rows.values()) == [1, 1], "one row per batch: each stored once"


class _Recording(BaseHTTPRequestHandler):
    """Answers 200 to anything, remembering each request's headers on its server."""

    def _answer(self) -> None:
        self.server.seen.append(dict(self.headers))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


def _redirecting(code: int, location: str) -> type[BaseHTTPRequestHandler]:
    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(code)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Redirecting


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_the_batch_is_kept(code: int) -> None:
    with serving(_Recording) as elsewhere:
        location = f"http://127.0.0.1:{elsewhere.server_address[1]}/api/v1/ingest"
        with serving(_redirecting(code, location)) as server:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            shipper = Shipper(url, max_pending=3, token="agent-token-0123456789")
            shipper.ship(batch(3))
        assert elsewhere.seen == []  # type: ignore[attr-defined]
    assert (shipper.stats.batches_sent, shipper.stats.redirects_refused) == (0, 1)
    assert shipper.stats.send_failures == 1
    assert len(shipper.pending) == 1  # retried later, by the usual backoff


class _FailingOnce(_Recording):
    """503 to the first request, 200 to the others; every request's headers remembered."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.server.seen:  # type: ignore[attr-defined]
            self._answer()
            return
        self.server.seen.append(dict(self.headers))  # type: ignore[attr-defined]
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_only_a_first_send_says_so(tmp_path: Path) -> None:
    # The server skips looking for a first send in storage; a retry must not claim to be one.
    with serving(_FailingOnce) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        shipper = Shipper(url, max_pending=3)
        shipper.ship(batch(3))  # sent once, answered 503
        shipper._retry_at = 0.0  # the backoff, waited out
        assert shipper.flush()
    attempts = [headers.get(ATTEMPT_HEADER) for headers in server.seen]  # type: ignore[attr-defined]
    assert attempts == ["1", None]
    # A batch found in the spool at start may have been sent by the run before.
    DiskSpool(tmp_path, 10**6).push(gzip.compress(b"{}"))
    recovered = DiskSpool(tmp_path, 10**6).oldest()
    assert recovered is not None and not recovered.first_send
