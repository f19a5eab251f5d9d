"""Reading and emptying BCC maps: what the CPU sampler and the network tracer share."""

import contextlib
import ctypes
import errno
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# BPF programs (perf_event or tracepoint) run for microseconds; waiting this long
# after a slot switch lets any run that read the old slot finish writing it.
FLIP_GRACE_SECONDS = 0.005


def switch_slot(set_slot: Callable[[int], None], old: int) -> int:
    """Make the other slot of a double-buffered program active and wait for runs still
    writing `old`; returns the end of the interval `old` holds, in Unix nanoseconds."""
    set_slot(1 - old)
    end_ns = time.time_ns()
    time.sleep(FLIP_GRACE_SECONDS)
    return end_ns


def release_compiler_memory() -> None:
    """Give the heap the BPF compile left behind back to the system.

    Clang and LLVM free tens of megabytes once the program is loaded, but glibc
    keeps freed memory in the process unless asked: about 60 MB of resident
    memory for an agent that compiles once and then runs for weeks.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def read_and_clear(table: Any) -> list[tuple[Any, Any]]:
    """All (key, value) entries of an inactive hash map, which is then empty."""
    try:
        return lookup_and_delete_all(table)
    except OSError:  # kernels without batch operations
        items = list(table.items())
        table.clear()
        return items


def read_and_clear_counts(table: Any) -> list[tuple[Any, int]]:
    """As read_and_clear, for maps whose values are u64 counts."""
    try:
        return [(k, int(v)) for k, v in lookup_and_delete_all(table)]  # u64 values read as int
    except OSError:
        items = [(k, int(v.value)) for k, v in table.items()]
        table.clear()
        return items


# Entries per batch call. BCC's own batch read allocates (and zeroes) arrays of
# the map's max_entries at every call: megabytes per drain for the network maps.
# These buffers are allocated once per map, kept on BCC's table object (a mapping,
# so not a weak dictionary's key) and go with it.
BATCH_ENTRIES = 512
_BUFFERS = "_podflame_batch_buffers"


def lookup_and_delete_all(table: Any) -> list[tuple[Any, Any]]:
    """Every entry of a BCC hash map, deleted as read (BPF_MAP_LOOKUP_AND_DELETE_BATCH).

    Returns copies, not views of the reused buffers. Raises OSError if the kernel
    refuses (before 5.6 it has no batch operations).
    """
    from bcc import lib  # BCC's ctypes library, loaded with use_errno

    keys, values = _buffers_of(table)
    token_in, token_out, count = ctypes.c_uint32(0), ctypes.c_uint32(0), ctypes.c_uint32(0)
    entries: list[tuple[Any, Any]] = []
    first = True
    while True:
        count.value = len(keys)
        result = lib.bpf_lookup_and_delete_batch(
            table.map_fd,
            None if first else ctypes.byref(token_in),
            ctypes.byref(token_out),
            keys,
            values,
            ctypes.byref(count),
        )
        error = ctypes.get_errno()
        n = count.value
        if n:
            # One copy of the filled part; the elements keep the copy alive.
            copied_keys = (table.Key * n).from_buffer_copy(keys)
            copied_values = (table.Leaf * n).from_buffer_copy(values)
            entries += zip(copied_keys, copied_values, strict=True)
        if result != 0:
            if error == errno.ENOENT:  # the whole map was read
                return entries
            raise OSError(error, f"BPF_MAP_LOOKUP_AND_DELETE_BATCH: {os.strerror(error)}")
        if n == 0:  # no progress (as BCC guards against): what is left waits for the next read
            return entries
        token_in.value, first = token_out.value, False


def _buffers_of(table: Any) -> "tuple[ctypes.Array[Any], ctypes.Array[Any]]":
    buffers: tuple[ctypes.Array[Any], ctypes.Array[Any]] | None = getattr(table, _BUFFERS, None)
    if buffers is None:
        size = min(BATCH_ENTRIES, table.max_entries)
        buffers = ((table.Key * size)(), (table.Leaf * size)())
        setattr(table, _BUFFERS, buffers)
    return buffers


def clear_stack_map(stacks: Any) -> None:
    """Empty a stack map. BCC's StackTrace.clear() does nothing, so delete key by key;
    a stack left behind would make the next interval's equal-hash stacks collide."""
    for key in list(stacks.keys()):
        del stacks[key]  # nothing else deletes from the inactive slot


def stack_call_sites(
    stacks: Any, stack_id: int, cache: dict[int, tuple[int, ...]]
) -> tuple[int, ...]:
    """The call sites of a recorded stack (see `call_sites`), leaf first; empty when the
    kernel recorded none. `cache` keeps those of the stacks read in this drain."""
    if stack_id < 0:
        return ()
    if stack_id not in cache:
        try:
            cache[stack_id] = call_sites(tuple(stacks.walk(stack_id)))
        except KeyError:
            cache[stack_id] = ()
    return cache[stack_id]


def call_sites(stack: tuple[int, ...]) -> tuple[int, ...]:
    """The sampled address, then the address of each call instruction.

    Every frame but the leaf is a return address, the instruction after a call.
    After a call to a function that never returns it can be the first byte of
    the next function, so the byte before it, inside the call, is looked up.
    """
    return stack[:1] + tuple(address - 1 for address in stack[1:])


def detach_tracepoints(bpf: Any) -> None:
    """Detach every tracepoint program at once, before `bpf.cleanup()`.

    The kernel waits for RCU grace periods when a tracepoint loses its last
    program; one after the other that took 3.3 s for the network tracer's 45,
    together 1.9 s (measured), which a stopping agent needs for its last sends.
    """
    from bcc import lib  # BCC's ctypes library: the call releases the GIL

    fds = list(bpf.tracepoint_fds.values())
    if fds:
        with ThreadPoolExecutor(min(len(fds), 64), thread_name_prefix="detach") as pool:
            list(pool.map(lib.bpf_close_perf_event_fd, fds))
    bpf.tracepoint_fds.clear()  # closed: cleanup() must not close them again


class DropCounters:
    """Per-CPU counters of what a program could not record, one per reason (the map's
    index), read as the increase since the last reading: they are never reset, since
    a reset would race with the kernel incrementing them."""

    def __init__(self, reasons: tuple[str, ...]) -> None:
        self.reasons = reasons
        self._seen = dict.fromkeys(reasons, 0)

    def read(self, table: Any) -> dict[str, int]:
        drops = {}
        for index, reason in enumerate(self.reasons):
            total = int(table.sum(ctypes.c_int(index)).value)
            drops[reason] = total - self._seen[reason]
            self._seen[reason] = total
        return drops
