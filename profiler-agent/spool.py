"""Where batches wait until the server acknowledges them: in memory, or in a spool directory.

Both queues hand out the oldest batch first and forget a batch only when told
(the server answered) or when the bound is reached (the oldest goes, counted).
The batch being sent is never dropped by the bound: it may be stored already.

On disk each batch is one file, the gzip body as sent, named by a sequence
number so that the names sort in send order. A file is written under a temporary
name, synced and renamed, so a crash leaves either the whole batch or none.
A restarted agent finds the files and sends them first; the batch_id inside
each body lets the server store a batch it already has only once.
"""

import contextlib
import logging
import os
import re
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

SUFFIX = ".batch.gz"
_NAME = re.compile(r"^(\d{20})\.batch\.gz$")
_TEMP = re.compile(r"^\.(\d{20})\.tmp$")
_CHECK_CHUNK = 1 << 20  # bytes decompressed at a time when checking a file


@dataclass(frozen=True)
class Pending:
    """One batch waiting for the server: `key` orders batches, oldest lowest."""

    key: int
    body: bytes
    # Never handed out before (by this process, nor found in the spool at start):
    # the server can hold it nowhere, so it need not look (model.wire.ATTEMPT_HEADER).
    first_send: bool = False


class PendingQueue(Protocol):
    def push(self, body: bytes) -> int:
        """Add the newest batch; returns how many of the oldest were dropped to fit it."""
        ...

    def oldest(self) -> Pending | None:
        """The oldest batch, now in flight (never dropped until done() or push())."""
        ...

    def done(self, key: int) -> None:
        """The server answered for this batch: forget it."""
        ...

    def release(self, key: int) -> None:
        """The send failed: the batch stays queued, and the bound may drop it again."""
        ...

    def __len__(self) -> int: ...

    @property
    def size_bytes(self) -> int: ...


class _BoundedQueue:
    """What both queues share: batches by key, oldest first, the one in flight kept.

    Each entry is (size, body): the body when held in memory, None when it lies
    in a file. Subclasses say when the bound is reached and how to read and
    discard what is not in memory.
    """

    def __init__(self) -> None:
        self._index: OrderedDict[int, tuple[int, bytes | None]] = OrderedDict()
        self._bytes = 0
        self._next = 0
        self._in_flight: int | None = None
        # Keys handed out by oldest() at least once, or found in a spool from before.
        self._handed_out: set[int] = set()
        self._lock = threading.Lock()

    def _full(self, size: int) -> bool:
        raise NotImplementedError

    def _read(self, key: int) -> bytes | None:
        """A body not held in memory, or None when it cannot be read (then forgotten)."""
        raise NotImplementedError

    def _discard(self, key: int) -> None:
        """Remove what is kept outside memory for `key`."""

    def _add(self, size: int, held: bytes | None) -> int:
        key, self._next = self._next, self._next + 1
        self._index[key] = (size, held)
        self._bytes += size
        return key

    def _make_room(self, size: int) -> int:
        dropped = 0
        while self._full(size):
            victim = next((key for key in self._index if key != self._in_flight), None)
            if victim is None:
                break
            self._forget(victim)
            dropped += 1
        return dropped

    def oldest(self) -> Pending | None:
        with self._lock:
            while self._index:
                key, (_, held) = next(iter(self._index.items()))
                body = held if held is not None else self._read(key)
                if body is not None:
                    self._in_flight = key
                    first_send = key not in self._handed_out
                    self._handed_out.add(key)
                    return Pending(key, body, first_send)
                self._forget(key)
            return None

    def done(self, key: int) -> None:
        with self._lock:
            if key in self._index:
                self._forget(key)
            if self._in_flight == key:
                self._in_flight = None

    def release(self, key: int) -> None:
        with self._lock:
            if self._in_flight == key:
                self._in_flight = None

    def _forget(self, key: int) -> None:
        size, held = self._index.pop(key)
        self._handed_out.discard(key)
        self._bytes -= size
        if held is None:
            self._discard(key)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def size_bytes(self) -> int:
        return self._bytes


class MemoryQueue(_BoundedQueue):
    """At most `max_batches` batches in memory; the oldest go first."""

    def __init__(self, max_batches: int) -> None:
        super().__init__()
        self.max_batches = max_batches

    def push(self, body: bytes) -> int:
        with self._lock:
            dropped = self._make_room(len(body))
            self._add(len(body), body)
            return dropped

    def _full(self, size: int) -> bool:
        return len(self._index) >= self.max_batches


@dataclass
class SpoolStats:
    batches_recovered: int = 0  # found on disk at start, from an earlier run
    files_corrupt: int = 0  # named as ours but unreadable or not a whole gzip stream
    files_foreign: int = 0  # other files in the directory, left alone
    write_failures: int = 0  # batches kept in memory because the disk refused them
    batches_dropped_at_start: int = 0  # over --spool-max-bytes already when the agent started


class DiskSpool(_BoundedQueue):
    """Batches as files in `directory`, at most `max_bytes` of them.

    A batch the disk refuses (full, read-only) is kept in memory in its place,
    within the same bound, so the order and the count stay right.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        super().__init__()
        self.directory = directory
        self.max_bytes = max_bytes
        self.stats = SpoolStats()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._scan()
        self._next = max(self._index, default=-1) + 1

    def _scan(self) -> None:
        for entry in sorted(os.scandir(self.directory), key=lambda e: e.name):
            name = _NAME.match(entry.name)
            if name and entry.is_file(follow_symlinks=False):
                self._index[int(name.group(1))] = (entry.stat().st_size, None)
                self._handed_out.add(int(name.group(1)))  # an earlier run may have sent it
                self._bytes += entry.stat().st_size
            elif _TEMP.match(entry.name):
                _unlink(Path(entry.path))  # a write a crash interrupted: never renamed, never sent
            else:
                self.stats.files_foreign += 1
                log.warning("spool: leaving %s alone (not a batch file)", entry.path)
        self.stats.batches_recovered = len(self._index)
        if self._index:
            log.info(
                "spool: %d batches (%d bytes) from an earlier run in %s; sending them first",
                len(self._index),
                self._bytes,
                self.directory,
            )
        self.stats.batches_dropped_at_start = self._make_room(0)
        if self.stats.batches_dropped_at_start:
            log.warning(
                "spool: dropped the %d oldest batches to fit --spool-max-bytes",
                self.stats.batches_dropped_at_start,
            )

    def push(self, body: bytes) -> int:
        with self._lock:
            if len(body) > self.max_bytes:
                log.error("spool: a %d-byte batch exceeds --spool-max-bytes; dropped", len(body))
                return 1
            dropped = self._make_room(len(body))
            key = self._add(len(body), None)
            held = self._write(key, body)
            if held is not None:
                self._index[key] = (len(body), held)
            return dropped

    def _write(self, key: int, body: bytes) -> bytes | None:
        """Write the file atomically; on failure return the body to hold in memory."""
        temp = self.directory / f".{key:020d}.tmp"
        try:
            # Owner-only: batches name every workload's functions and pods.
            with os.fdopen(
                os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb"
            ) as stream:
                stream.write(body)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temp, self._path(key))
            _sync_directory(self.directory)
        except OSError as error:
            _unlink(temp)
            self.stats.write_failures += 1
            log.error("spool: cannot write a batch to %s (%s); holding it in memory", temp, error)
            return body
        return None

    def _full(self, size: int) -> bool:
        return self._bytes + size > self.max_bytes

    def _read(self, key: int) -> bytes | None:
        path = self._path(key)
        try:
            body = path.read_bytes()
        except OSError as error:
            reason = str(error)
        else:
            if _whole_gzip(body):
                return body
            reason = "not a whole gzip stream"
        self.stats.files_corrupt += 1
        log.error("spool: skipping %s: %s", path, reason)
        return None

    def _discard(self, key: int) -> None:
        _unlink(self._path(key))

    def _path(self, key: int) -> Path:
        return self.directory / f"{key:020d}{SUFFIX}"


def _whole_gzip(body: bytes) -> bool:
    """Decompress in bounded chunks: the gzip trailer's CRC and length must match."""
    stream = zlib.decompressobj(zlib.MAX_WBITS | 16)
    data = body
    try:
        while not stream.eof:
            out = stream.decompress(data, _CHECK_CHUNK)
            data = stream.unconsumed_tail
            if not out and not data:
                break  # input used up before the end of the stream: truncated
    except zlib.error:
        return False
    return stream.eof and not stream.unused_data


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    # Already gone, or never written: either way nothing left to remove.
    with contextlib.suppress(OSError):
        path.unlink()
