"""An in-process LRU of stack frames by stack hash.

Looking frames up in ClickHouse costs more than aggregating the samples: the
hashes a query selects are scattered over the whole stacks table. A stack's
hash is derived from its frames, so an entry can never go stale: the cache
needs no invalidation, only a bound.
"""

import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

Frames = tuple[str, ...]

# ~100 MB for stacks of ~30 frames, the names shared through sys.intern.
DEFAULT_MAX_STACKS = 200_000


class StackCache:
    def __init__(self, max_stacks: int = DEFAULT_MAX_STACKS) -> None:
        self._max = max_stacks
        self._frames: OrderedDict[int, Frames] = OrderedDict()
        # Query endpoints run in worker threads.
        self._lock = threading.Lock()

    def lookup(self, hashes: Iterable[int]) -> tuple[dict[int, Frames], list[int]]:
        """(frames of the cached hashes, the hashes not cached)."""
        found: dict[int, Frames] = {}
        missing: list[int] = []
        with self._lock:
            for key in hashes:
                frames = self._frames.get(key)
                if frames is None:
                    missing.append(key)
                else:
                    self._frames.move_to_end(key)
                    found[key] = frames
        return found, missing

    def add(self, stacks: Mapping[int, Sequence[str]]) -> dict[int, Frames]:
        """Cache `stacks`; returns them as stored (tuples of interned names)."""
        # Function names repeat across stacks; interning stores each once.
        added = {key: tuple(sys.intern(name) for name in frames) for key, frames in stacks.items()}
        with self._lock:
            self._frames.update(added)
            while len(self._frames) > self._max:
                self._frames.popitem(last=False)
        return added
