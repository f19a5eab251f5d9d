"""Errors the agent survives: counted per kind, logged at most once a minute per kind.

A process's odd data (text, files, a cgroup it moved out of) must cost that
process's stacks or names for one interval, never the drain; a drain or an
announcement that fails as a whole costs that one iteration, never the agent.
What was caught is counted at /metrics, and logged with its traceback, but
rarely: a process that fails at every drain must not flood the log.
"""

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# At most one log line per kind in this many seconds; the others are counted.
LOG_INTERVAL = 60.0
# Where one process's error is caught: its capture (announcement, or lookup at
# a drain), reading the symbols of a file it maps, naming its frames, its labels.
PROCESS_STAGES = ("capture", "read_symbols", "symbolize", "labels")
# Loops whose iteration is guarded as a whole.
LOOPS = ("drain", "network_drain", "announce")


@dataclass
class CaughtErrors:
    """Errors caught in one place (`where`, e.g. "process" or "loop"), counted per kind."""

    where: str
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _logged_at: dict[str, float] = field(default_factory=dict)
    _unlogged: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, where: str, kinds: tuple[str, ...]) -> "CaughtErrors":
        """Counting `kinds` from 0, so that /metrics shows them before the first error
        (and a scrape never iterates over a dict that is growing)."""
        return cls(where, counts=defaultdict(int, dict.fromkeys(kinds, 0)))

    def record(self, kind: str, error: Exception, subject: str = "") -> None:
        """Count `error`, caught in `kind` (a stage, a loop) for `subject` (e.g. "pid 42")."""
        with self._lock:
            self.counts[kind] += 1
            now = time.monotonic()
            last = self._logged_at.get(kind)
            if last is not None and now - last < LOG_INTERVAL:
                self._unlogged[kind] += 1
                return
            self._logged_at[kind] = now
            unlogged = self._unlogged.pop(kind, 0)
        log.error(
            "%s error in %s%s, skipped (%d more since the last such message): %r",
            self.where,
            kind,
            f" ({subject})" if subject else "",
            unlogged,
            error,
            exc_info=error,
        )
