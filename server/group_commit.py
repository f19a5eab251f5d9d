"""Group commit: requests that arrive while a write is under way are written together next.

Embedded ClickHouse runs one statement at a time (one engine per process),
and every insert pays a fixed cost (parsing, a new part, its merge later) far
above its per-row cost: ten batches in one insert cost about what two cost
alone. So instead of queueing for the engine one by one, ingest threads hand
their prepared batches to a GroupCommit. One of them becomes the writer and
writes everything queued in one go; the others wait for their outcome. Under
light load a group is one batch and nothing waits; under heavy load groups
grow, which is what keeps latency bounded.

The writer is whichever waiting thread gets there first, so no thread of its
own is needed and shutdown has nothing to stop.
"""

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# A group's outcome per item, in the group's order: its result or what it raises.
WriteGroup = Callable[[Sequence[T]], Sequence[R | Exception]]


@dataclass
class _Entry(Generic[T, R]):
    item: T
    weight: int
    done: bool = False
    result: R | None = None
    error: Exception | None = None
    # Set when the item is written, or when its thread is to become the writer.
    wake: threading.Event = field(default_factory=threading.Event)


class GroupCommit(Generic[T, R]):
    """Writes submitted items in groups of at most `max_items` items and `max_weight` weight.

    An item heavier than `max_weight` is written alone.
    """

    def __init__(self, write_group: WriteGroup[T, R], max_items: int, max_weight: int) -> None:
        if max_items < 1 or max_weight < 1:
            raise ValueError("a group holds at least one item of some weight")
        self._write_group = write_group
        self._max_items = max_items
        self._max_weight = max_weight
        self._lock = threading.Lock()
        self._queue: deque[_Entry[T, R]] = deque()
        self._writing = False

    def submit(self, item: T, weight: int = 1) -> R:
        """Write `item` (with whatever else is queued); its result, or raise its error."""
        entry: _Entry[T, R] = _Entry(item, weight)
        with self._lock:
            self._queue.append(entry)
            become_writer = not self._writing
            self._writing = True
        if not become_writer:
            entry.wake.wait()
            if not entry.done:  # handed the writer's role
                entry.wake.clear()
                become_writer = True
        if become_writer:
            self._write_until_done(entry)
        if entry.error is not None:
            raise entry.error
        return entry.result  # type: ignore[return-value]  # set when error is None

    def _write_until_done(self, own: _Entry[T, R]) -> None:
        # The writer writes what is queued, group after group, until its own
        # item is written; then it hands the role to the oldest waiter, if any.
        while True:
            with self._lock:
                group = self._take()
            self._write(group)
            with self._lock:
                if own.done:
                    successor = self._queue[0] if self._queue else None
                    self._writing = successor is not None
                    break
        if successor is not None:
            # Woken without an outcome: it becomes the writer (see submit).
            successor.wake.set()

    def _take(self) -> list[_Entry[T, R]]:
        group = [self._queue.popleft()]
        weight = group[0].weight
        while self._queue and len(group) < self._max_items:
            if weight + self._queue[0].weight > self._max_weight:
                break
            entry = self._queue.popleft()
            group.append(entry)
            weight += entry.weight
        return group

    def _write(self, group: list[_Entry[T, R]]) -> None:
        try:
            outcomes = self._write_group([entry.item for entry in group])
            if len(outcomes) != len(group):
                raise RuntimeError(f"{len(outcomes)} outcomes for a group of {len(group)}")
        except Exception as error:  # every waiter must learn of it
            outcomes = [error] * len(group)
        for entry, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, Exception):
                entry.error = outcome
            else:
                entry.result = outcome
            entry.done = True
            entry.wake.set()
