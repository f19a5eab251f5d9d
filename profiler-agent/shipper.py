"""Ships batches to the server over HTTP, keeping a bounded queue while it is away.

Batches are sent in order; a batch the server rejects as invalid (4xx) is
dropped, anything else (connection refused, 5xx, timeout) stays queued and is
retried at the next drain. The batch id lets the server store a retry once.
"""

import gzip
import logging
import ssl
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from podflame.model import Batch

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 429}


@dataclass
class ShipperStats:
    batches_sent: int = 0
    batches_rejected: int = 0
    batches_dropped_queue_full: int = 0
    send_failures: int = 0


class Shipper:
    def __init__(
        self,
        server_url: str,
        *,
        max_pending: int,
        timeout: float = 10.0,
        token: str | None = None,
        ca_file: Path | None = None,
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
        self.pending: deque[bytes] = deque()
        self.max_pending = max_pending
        self.stats = ShipperStats()
        self._server_down = False

    def ship(self, batch: Batch) -> None:
        """Queue the batch, then send everything queued, oldest first."""
        if len(self.pending) >= self.max_pending:
            self.pending.popleft()
            self.stats.batches_dropped_queue_full += 1
            log.warning("server unreachable: dropped the oldest queued batch")
        self.pending.append(gzip.compress(batch.model_dump_json().encode(), compresslevel=5))
        self.flush()

    def flush(self) -> None:
        while self.pending:
            outcome = self._send(self.pending[0])
            if outcome == "retry":
                return
            self.pending.popleft()

    def _send(self, body: bytes) -> str:
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers=self.headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.tls):
                pass
        except urllib.error.HTTPError as error:
            if 400 <= error.code < 500 and error.code not in RETRYABLE_STATUS:
                self.stats.batches_rejected += 1
                log.error("server rejected a batch (%d): %s", error.code, error.read()[:500])
                return "dropped"
            return self._failed(f"HTTP {error.code}")
        except (OSError, TimeoutError) as error:
            return self._failed(str(error))
        self.stats.batches_sent += 1
        if self._server_down:
            log.info("server reachable again at %s", self.url)
            self._server_down = False
        return "sent"

    def _failed(self, reason: str) -> str:
        self.stats.send_failures += 1
        if not self._server_down:  # log once per outage, not once per batch
            log.warning("cannot ship to %s (%s); keeping batches queued", self.url, reason)
            self._server_down = True
        return "retry"
