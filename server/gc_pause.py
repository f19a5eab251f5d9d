"""Hold Python's cyclic garbage collector off while a batch is parsed and stored.

A 30,000-row batch becomes some 100,000 container objects (a pydantic model
per sample) that live until the batch is stored and hold no reference cycles.
Allocating them sets off collections that scan them again and again, and
full ones that scan the whole server's heap: measured, more than half of the
server's ingest time. Paused, they are freed by reference counting when the
request ends, and the collector never sees them.

The collector is process-wide, so the pause is shared: it starts with the
first holder and ends with the last. Under a steady stream of requests there
might never be a last one, so after `max_seconds` new requests stop joining
the pause and the collector runs again once the current holders finish.
"""

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class CollectorPause:
    def __init__(self, max_seconds: float = 2.0) -> None:
        self._max_seconds = max_seconds
        self._lock = threading.Lock()
        self._holders = 0
        self._since = 0.0

    @contextmanager
    def __call__(self) -> Iterator[None]:
        joined = self._join()
        try:
            yield
        finally:
            if joined:
                self._leave()

    @property
    def holders(self) -> int:
        return self._holders

    def _join(self) -> bool:
        with self._lock:
            if self._holders == 0:
                if not gc.isenabled():
                    return False  # paused by someone else: theirs to resume
                gc.disable()
                self._since = time.monotonic()
            elif time.monotonic() - self._since > self._max_seconds:
                return False
            self._holders += 1
            return True

    def _leave(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                gc.enable()


# One per process, as the collector is.
pause_collector = CollectorPause()
