"""Reading and emptying BCC maps: what the CPU sampler and the network tracer share."""

import contextlib
import ctypes
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
        return list(table.items_lookup_and_delete_batch())  # one syscall per chunk
    except Exception:  # kernels without batch operations
        items = list(table.items())
        table.clear()
        return items


def read_and_clear_counts(table: Any) -> list[tuple[Any, int]]:
    """As read_and_clear, for maps whose values are u64 counts."""
    try:
        # The batch call yields counts as ints.
        return [(k, int(v)) for k, v in table.items_lookup_and_delete_batch()]
    except Exception:
        items = [(k, int(v.value)) for k, v in table.items()]
        table.clear()
        return items


def clear_stack_map(stacks: Any) -> None:
    """Empty a stack map. BCC's StackTrace.clear() does nothing, so delete key by key;
    a stack left behind would make the next interval's equal-hash stacks collide."""
    for key in list(stacks.keys()):
        del stacks[key]  # nothing else deletes from the inactive slot


def stack_addresses(
    stacks: Any, stack_id: int, cache: dict[int, tuple[int, ...]]
) -> tuple[int, ...]:
    """The addresses of a recorded stack, leaf first; empty when the kernel recorded none."""
    if stack_id < 0:
        return ()
    if stack_id not in cache:
        try:
            cache[stack_id] = tuple(stacks.walk(stack_id))
        except KeyError:
            cache[stack_id] = ()
    return cache[stack_id]


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
