"""Ships batches to the server over HTTP from a thread of its own.

The drain loop only queues a batch (`submit`, in memory or in the spool
directory, see spool.py); the sender thread sends them oldest first, so a slow
or absent server never delays a drain. A batch the server rejects as invalid
(4xx) is dropped and counted; on anything else (connection refused, 5xx, 408,
429, 401, 403, timeout) the batch stays queued and the sender waits before the next try:
the server's Retry-After when it gives one, otherwise an exponential backoff
with jitter (see Backoff). The batch id lets the server store a retry once.

Redirects are never followed: following one would send the ingest token to
wherever the Location points, and a redirected 200 would count as sent. A 3xx
is a failed send like a 5xx (counted in redirects_refused and send_failures,
logged with its Location, the batch kept and retried with backoff), permanent
(301, 308) or not: the agent cannot tell a moved server from a hostile
answer, so the fix is --server, and until then the bounded queue decides
what is kept.

401 and 403 say nothing about the batch but that the token is wrong, which is
what a token rotation looks like while agents and server restart in either
order: the batch is kept (counted in auth_refused), so with --spool-dir the
agent restarted with the new token sends it.
"""

import email.utils
import enum
import gzip
import logging
import math
import random
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from podflame.agent.metrics import PREFIX, StageCounters
from podflame.agent.spool import DiskSpool, MemoryQueue, Pending, PendingQueue
from podflame.model import Batch
from podflame.model.wire import ATTEMPT_HEADER

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 429}
AUTH_STATUS = {401, 403}  # the token, not the batch: kept and retried
# A Retry-After longer than this is taken as this: a misconfigured server must
# not silence an agent for hours.
MAX_RETRY_AFTER = 300.0


class Outcome(enum.Enum):
    SENT = "sent"
    REJECTED = "rejected"  # definitive 4xx: dropped, counted
    RETRY = "retry"


@dataclass
class ShipperStats:
    batches_sent: int = 0
    batches_rejected: int = 0
    batches_dropped_queue_full: int = 0  # the oldest, to fit the queue's bound
    batches_lost_at_exit: int = 0  # unacknowledged at exit, with no spool to keep them
    send_failures: int = 0
    retry_after_waits: int = 0  # waits the server asked for (Retry-After)
    redirects_refused: int = 0  # 3xx answers: not followed, the batch is retried
    auth_refused: int = 0  # 401/403 answers: the token is wrong, the batch is retried


class Backoff:
    """Waits between failed sends: a random time between half and all of
    min(high, low * 2^(failures-1)), so agents that lost the server together
    do not come back in lockstep."""

    def __init__(self, low: float = 1.0, high: float = 30.0, rng: random.Random | None = None):
        self.low, self.high = low, high
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self, retry_after: float | None = None) -> float:
        self.failures += 1
        if retry_after is not None:
            # Not earlier than asked; up to 10 % later, again against lockstep.
            return min(retry_after, MAX_RETRY_AFTER) * self._rng.uniform(1.0, 1.1)
        ceiling = min(self.high, self.low * 2 ** min(self.failures - 1, 32))
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


class Shipper:
    def __init__(
        self,
        server_url: str,
        *,
        max_pending: int = 30,
        queue: PendingQueue | None = None,
        timeout: float = 10.0,
        token: str | None = None,
        ca_file: Path | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = server_url.rstrip("/") + "/api/v1/ingest"
        # Certificates are always verified; `ca_file` only says whom to trust. Loaded
        # now, so a missing or bad file stops the start rather than every send.
        self.tls = ssl.create_default_context(cafile=ca_file)
        if token and urlsplit(self.url).scheme != "https":
            log.warning("the ingest token is sent in clear text: use an https --server")
        self.headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self._opener = urllib.request.build_opener(
            _NoRedirects(), urllib.request.HTTPSHandler(context=self.tls)
        )
        self.queue: PendingQueue = queue if queue is not None else MemoryQueue(max_pending)
        self.stats = ShipperStats()
        self.backoff = backoff or Backoff()
        self._server_down = False
        self._wake = threading.Condition()
        self._closing = False
        self._deadline = math.inf
        self._retry_at = 0.0  # time.monotonic() before which the sender does not send
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> PendingQueue:
        return self.queue

    def submit(self, batch: Batch) -> None:
        """Queue the batch for the sender; returns once it is queued (on disk with a spool)."""
        dropped = self.queue.push(encode(batch))
        if dropped:
            self.stats.batches_dropped_queue_full += dropped
            log.warning("server unreachable: dropped the %d oldest queued batches", dropped)
        with self._wake:
            self._wake.notify()

    def ship(self, batch: Batch) -> None:
        """Queue the batch and send what is queued now, in this thread (no sender thread)."""
        self.submit(batch)
        self.flush()

    def flush(self, deadline: float = math.inf) -> bool:
        """Send oldest first until the queue is empty (True), a send fails or `deadline`
        (time.monotonic()) passes. Only for the thread that sends: the sender, or the
        caller when there is none."""
        while (item := self.queue.oldest()) is not None:
            # close() sets a deadline for the sender's sends too.
            remaining = min(deadline, self._deadline) - time.monotonic()
            if remaining <= 0:
                return False
            outcome, retry_after = self._send(item, min(self.timeout, remaining))
            if outcome is Outcome.RETRY:
                self.queue.release(item.key)
                self._retry_at = time.monotonic() + self.backoff.next_delay(retry_after)
                return False
            self._done(item)
        return True

    def start(self) -> None:
        """Send from a thread of our own from now on, until close()."""
        self._thread = threading.Thread(target=self._run, name="shipper", daemon=True)
        self._thread.start()

    def close(self, deadline: float) -> None:
        """Give what is queued until `deadline` (time.monotonic()) to reach the server, then
        stop; a send still waiting for an answer then is abandoned (the thread is a daemon)."""
        if self._thread is None:
            self.flush(deadline)
        else:
            with self._wake:
                self._closing, self._deadline = True, deadline
                self._wake.notify()
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._report_unsent()

    def _run(self) -> None:
        while self._wait_for_work():
            self.flush()
        self.flush(self._deadline)  # once more, backoff or not: the agent is leaving

    def _wait_for_work(self) -> bool:
        """Until there is a batch and no backoff to wait out; False once closing."""
        with self._wake:
            while not self._closing:
                wait = self._retry_at - time.monotonic()
                if len(self.queue) and wait <= 0:
                    return True
                self._wake.wait(wait if len(self.queue) else None)
            return False

    def _done(self, item: Pending) -> None:
        self.queue.done(item.key)
        self.backoff.reset()
        self._retry_at = 0.0

    def _report_unsent(self) -> None:
        unsent = len(self.queue)
        if not unsent:
            return
        if isinstance(self.queue, MemoryQueue):
            self.stats.batches_lost_at_exit += unsent
            log.error("exiting with %d batches the server did not acknowledge: lost", unsent)
        else:
            log.warning("exiting with %d unacknowledged batches; they stay in the spool", unsent)

    def _send(self, item: Pending, timeout: float) -> tuple[Outcome, float | None]:
        # The first send says so: the server then does not look for the batch in storage.
        headers = {**self.headers, ATTEMPT_HEADER: "1"} if item.first_send else self.headers
        request = urllib.request.Request(self.url, data=item.body, method="POST", headers=headers)
        try:
            with self._opener.open(request, timeout=timeout):
                pass
        except urllib.error.HTTPError as error:
            with error:
                if 300 <= error.code < 400:
                    return self._redirected(error.code, error.headers.get("Location")), None
                if error.code in AUTH_STATUS:
                    return self._unauthorized(error.code), None
                if 400 <= error.code < 500 and error.code not in RETRYABLE_STATUS:
                    self.stats.batches_rejected += 1
                    log.error("server rejected a batch (%d): %s", error.code, error.read()[:500])
                    return Outcome.REJECTED, None
                retry_after = retry_after_seconds(error.headers.get("Retry-After"))
            if retry_after is not None:
                self.stats.retry_after_waits += 1
            return self._failed(f"HTTP {error.code}"), retry_after
        except (OSError, TimeoutError) as error:
            return self._failed(str(error)), None
        self.stats.batches_sent += 1
        if self._server_down:
            log.info("server reachable again at %s", self.url)
            self._server_down = False
        return Outcome.SENT, None

    def _redirected(self, code: int, location: str | None) -> Outcome:
        self.stats.redirects_refused += 1
        log.warning(
            "server answered HTTP %d redirecting to %s: not followed (the token stays here); "
            "the batch stays queued: point --server at the right address",
            code,
            location,
        )
        return self._failed(f"HTTP {code} redirect")

    def _unauthorized(self, code: int) -> Outcome:
        self.stats.auth_refused += 1
        if not self._server_down:
            log.error(
                "server refused the ingest token (HTTP %d): batches stay queued until "
                "--token matches one of the server's tokens with the ingest scope",
                code,
            )
        return self._failed(f"HTTP {code}: token refused")

    def _failed(self, reason: str) -> Outcome:
        self.stats.send_failures += 1
        if not self._server_down:  # log once per outage, not once per batch
            log.warning("cannot ship to %s (%s); keeping batches queued", self.url, reason)
            self._server_down = True
        return Outcome.RETRY


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turns every 3xx into an HTTPError instead of a new request."""

    def redirect_request(self, *_: object, **__: object) -> None:
        return None


def encode(batch: Batch) -> bytes:
    """The request body, as sent and as spooled."""
    return gzip.compress(batch.model_dump_json().encode(), compresslevel=5)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now: delay-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP-dates are GMT
    return max(0.0, when.timestamp() - time.time())


class ShipperCollector(Collector):
    """What waits for the server, and the shipper's (and the spool's) counters."""

    def __init__(self, shipper: Shipper) -> None:
        self._queue = shipper.queue
        self._stages = [StageCounters("shipper", shipper.stats)]
        if isinstance(shipper.queue, DiskSpool):
            self._stages.append(StageCounters("spool", shipper.queue.stats))

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            PREFIX + "shipper_pending_batches",
            "Batches waiting for the server to acknowledge them.",
            value=len(self._queue),
        )
        yield GaugeMetricFamily(
            PREFIX + "shipper_pending_bytes",
            "Bytes of batches waiting for the server (on disk with --spool-dir).",
            value=self._queue.size_bytes,
        )
        for stage in self._stages:
            yield from stage.collect()
