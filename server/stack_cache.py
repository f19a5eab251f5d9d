"""An in-process LRU of the stacks known to be stored, by hash and by frames.

Looking frames up in ClickHouse costs more than aggregating the samples: the
hashes a query selects are scattered over the whole stacks table. A stack's
hash is derived from its frames, so an entry can never go stale: the cache
needs no invalidation, only a bound.

Ingest reads it the other way round: agents send the same stacks interval
after interval, so a stack found by its frames needs neither hashing nor a
round trip to learn whether the stacks table holds it already.
"""

import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from operator import attrgetter

from podflame.model.frames import Frame
from podflame.model.wire import FrameFields

Frames = tuple[Frame, ...]

# ~100 MB for stacks of ~30 frames, each distinct frame held once (see add).
DEFAULT_MAX_STACKS = 200_000


class StackCache:
    """Every entry is a stack stored in ClickHouse: add only what a store holds."""

    def __init__(self, max_stacks: int = DEFAULT_MAX_STACKS) -> None:
        self._max = max_stacks
        self._frames: OrderedDict[int, Frames] = OrderedDict()
        # By the frames' keys (Frame.key), which C code hashes and compares.
        self._hashes: dict[tuple[object, ...], int] = {}
        # Each distinct frame once, while a cached stack holds it.
        self._pool: weakref.WeakValueDictionary[object, Frame] = weakref.WeakValueDictionary()
        # The same frames by their fields, as a batch's frame table names them: an agent
        # sends every frame again in each batch, and making its Frame costs more than
        # the rest of its ingest.
        self._by_fields: weakref.WeakValueDictionary[FrameFields, Frame] = (
            weakref.WeakValueDictionary()
        )
        # Query and ingest endpoints run in worker threads.
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

    def hashes_of(self, stacks: Sequence[Sequence[Frame]]) -> list[int | None]:
        """Per stack, its hash if the cache holds it (so it is stored), else None."""
        return [None if found is None else found[0] for found in self.stored(map(_key, stacks))]

    def stored(self, keys: Iterable[tuple[object, ...]]) -> list[tuple[int, Frames] | None]:
        """Per stack given by its frames' keys (Frame.key), its hash and cached frames if
        the cache holds it (so it is stored), else None."""
        found: list[tuple[int, Frames] | None] = []
        with self._lock:
            for key in keys:
                stack_hash = self._hashes.get(key)
                if stack_hash is None:
                    found.append(None)
                else:
                    self._frames.move_to_end(stack_hash)
                    found.append((stack_hash, self._frames[stack_hash]))
        return found

    def frames(self, fields: list[FrameFields]) -> list[Frame | None]:
        """Per frame given by its fields, the cache's frame when a cached stack holds one
        (model.wire.KnownFrames)."""
        with self._lock:
            return list(map(self._by_fields.get, fields))

    def add(self, stacks: Mapping[int, Sequence[Frame]]) -> dict[int, Frames]:
        """Cache `stacks`; returns them as stored (tuples of shared frames)."""
        with self._lock:
            # Frames repeat across stacks; each distinct one is stored once (the
            # distinct ones found by C code: dict and map, no Python per frame).
            every = chain.from_iterable(stacks.values())
            distinct = dict(zip(map(id, every), chain.from_iterable(stacks.values()), strict=True))
            shared = {key: self._shared(frame) for key, frame in distinct.items()}
            added = {
                key: tuple(map(shared.__getitem__, map(id, frames)))
                for key, frames in stacks.items()
            }
            for key, frames in added.items():
                # Two stacks with one hash (a collision): keep the index in step.
                replaced = self._frames.get(key)
                if replaced is not None and replaced != frames:
                    self._hashes.pop(_key(replaced), None)
                self._frames[key] = frames
                self._hashes[_key(frames)] = key
            while len(self._frames) > self._max:
                _, frames = self._frames.popitem(last=False)
                self._hashes.pop(_key(frames), None)
        return added

    def _shared(self, frame: Frame) -> Frame:
        """The cache's copy of `frame` (its name interned), under the lock."""
        found = self._pool.get(frame.key)
        if found is None:
            name = sys.intern(frame.name)
            found = frame if name is frame.name else _renamed(frame, name)
            # Keyed by Frame.key (equal exactly for equal frames, hashed by C code): a
            # key is held strongly, and the entry must go once no stack holds the frame.
            self._pool[frame.key] = found
            self._by_fields[found.fields] = found
        return found


def _renamed(f: Frame, name: str) -> Frame:
    return Frame(f.kind, name, f.module, f.offset, f.file, f.line, f.resolved)


def _key(frames: Sequence[Frame]) -> tuple[object, ...]:
    return tuple(map(_FRAME_KEY, frames))  # map and attrgetter: no Python code per frame


_FRAME_KEY = attrgetter("key")
