"""Loads the network tracer (bpf/network.bpf.c) and drains what it counted.

The kernel side aggregates, per process, a latency histogram per system call,
the summed duration of network calls per user stack (the net_wait profile)
and connect() outcomes per destination, into double-buffered maps drained
like the CPU sampler's. Which tracepoints exist is read from tracefs first:
a missing one turns off only the feature that needs it, with a log line.
"""

import errno
import ipaddress
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from podflame.agent.bpfmaps import (
    DropCounters,
    clear_stack_map,
    read_and_clear,
    read_and_clear_counts,
    stack_call_sites,
)
from podflame.agent.netprobes import FEATURES, Feature, Plan, plan_features
from podflame.agent.programs import DoubleBuffered, ProcessGeneration, Program, Programs
from podflame.agent.sockets import processes, socket_descriptors
from podflame.agent.tracefs import events_root
from podflame.symbolizer.text import decode

log = logging.getLogger(__name__)

BPF_SOURCE = "network.bpf.c"

# The measured calls, in the order of enum call_kind in the BPF program.
NETWORK_SYSCALLS = (
    "connect",
    "accept",
    "accept4",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "read",
    "write",
    "readv",
    "writev",
)

# Must match enum net_drop_reason in the BPF program (an announcement lost is the
# CPU sampler's drop "new_process": the programs share one announcement stream).
DROP_REASONS = (
    "inflight",
    "latency_map",
    "connection_map",
    "wait_map",
    "user_stack",
    "fd_map",
)

# As in the BPF program: descriptors below TABLE_FDS live in a process's table.
TABLE_WORDS = 64
TABLE_FDS = TABLE_WORDS * 64

AF_INET, AF_INET6 = 2, 10


# Calls shorter than this record their stack with probability duration / STACK_MIN_NS,
# weighted STACK_MIN_NS: the net_wait profile stays an unbiased estimate while
# stack walks (about 0.7 us each, measured) stay rare on busy sockets: at most
# one per millisecond of waiting. Longer calls always record theirs.
STACK_MIN_NS = 1_000_000


@dataclass(frozen=True)
class NetworkSizes:
    """Map sizes (entries); the per-slot maps hold one drain interval."""

    inflight: int = 16384  # threads inside a traced call at once
    latency: int = 4096  # (process, call) pairs per interval
    connections: int = 2048  # (process, destination, outcome) per interval
    waits: int = 16384  # (process, stack) per interval
    stacks: int = 4096  # distinct stacks per interval
    fd_tables: int = 16384  # processes with sockets
    fd_high_words: int = 16384  # 64-descriptor words above TABLE_FDS
    pending: int = 8192  # non-blocking connects in progress

    def cflags(self) -> list[str]:
        names = {
            "INFLIGHT_ENTRIES": self.inflight,
            "LATENCY_ENTRIES": self.latency,
            "CONNECTION_ENTRIES": self.connections,
            "WAIT_ENTRIES": self.waits,
            "WAIT_STACK_ENTRIES": self.stacks,
            "FD_TABLES": self.fd_tables,
            "FD_HIGH_WORDS": self.fd_high_words,
            "PENDING_ENTRIES": self.pending,
        }
        return [f"-D{name}={value}" for name, value in names.items()]


@dataclass(frozen=True)
class CallLatency:
    """One process's calls of one system call in an interval (histogram in ns)."""

    process: ProcessGeneration
    syscall: str
    count: int
    errors: int
    eagain: int
    sum_ns: int
    max_ns: int
    buckets: dict[int, int]


@dataclass(frozen=True)
class ConnectOutcome:
    """connect() calls of one process to one destination with one result."""

    process: ProcessGeneration
    address: str
    port: int
    result: str  # "ok", an errno name, or EINPROGRESS (not followed to the end)
    count: int
    max_ns: int
    buckets: dict[int, int]


@dataclass(frozen=True)
class Wait:
    """Time one process spent in network calls made from one user stack (net_wait)."""

    process: ProcessGeneration
    comm: str  # the calling thread's name
    user_stack: tuple[int, ...]  # leaf first, as call sites (see bpfmaps.call_sites)
    nanoseconds: int

    # What the drain's steps read of a sample (lifetimes.StackSample): the value is
    # the time; the calls' kernel stacks and Python stacks are not recorded.
    kernel_stack: tuple[int, ...] = ()
    python: None = None

    @property
    def count(self) -> int:
        return self.nanoseconds


@dataclass
class NetworkDrain:
    start_ns: int
    end_ns: int
    waits: list[Wait] = field(default_factory=list)
    latency: list[CallLatency] = field(default_factory=list)
    connections: list[ConnectOutcome] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return sum(entry.count for entry in self.latency)


class NetworkTracer(DoubleBuffered):
    """The network programs: attach, drain periodically, detach on close."""

    config_map = "net_config"
    not_started = "network tracer not started"

    def __init__(
        self,
        *,
        sizes: NetworkSizes | None = None,
        stack_min_ns: int = STACK_MIN_NS,
        events: Path | None = None,
        proc: Path = Path("/proc"),
    ) -> None:
        self.sizes = sizes or NetworkSizes()
        self.stack_min_ns = stack_min_ns
        self._events = events  # tracefs events folder; found at start when None
        self._proc = proc
        self.plan: Plan | None = None
        super().__init__()
        self._drops = DropCounters(DROP_REASONS)

    @property
    def enabled(self) -> tuple[str, ...]:
        """Names of the features attached (see netprobes.FEATURES)."""
        return self.plan.enabled if self.plan else ()

    def program(self) -> Program:
        """For the tracepoints tracefs shows (read now)."""
        events = self._events or events_root()
        if events is None:
            raise RuntimeError("tracefs is not mounted (see scripts/install.sh)")
        self.plan = plan_features(events, FEATURES)
        for feature, reason in self.plan.disabled:
            log.warning("network: %s: %s", reason, feature.loses)
        cflags = (*self.sizes.cflags(), f"-DSTACK_MIN_NS={self.stack_min_ns}", *self.plan.cflags)
        return Program(BPF_SOURCE, cflags)

    def attach(self, programs: Programs) -> None:
        assert self.plan is not None, "program() plans the features"
        self._use(programs)
        # Descriptor bookkeeping first, then the seed from /proc, so that no
        # socket falls between the two; the measured calls last.
        for feature in self.plan.features:
            if not feature.measured:
                self._attach(feature)
        seeded = self._seed_sockets()
        self.resume()
        self._last_drain_ns = time.time_ns()  # measuring from now on
        measured = [f.name for f in self.plan.features if f.measured and f.name in self.enabled]
        log.info(
            "network: tracing %s; %d sockets of running processes seeded from /proc",
            ", ".join(measured) or "nothing",
            seeded,
        )

    def suspend(self) -> None:
        """Stop measuring calls; descriptor bookkeeping goes on, so resume() is exact."""
        assert self.plan is not None
        for feature in self.plan.features:
            if feature.measured and feature.name in self.plan.enabled:
                for probe in feature.probes:
                    self._bpf().detach_tracepoint(tp=probe.tracepoint.encode())

    def resume(self) -> None:
        """Measure calls (again)."""
        assert self.plan is not None
        for feature in self.plan.features:
            if feature.measured:
                self._attach(feature)

    def program_fd(self, function: str) -> int:
        """The file descriptor of a loaded program (for its kernel statistics)."""
        fd: int = self._bpf().funcs[function.encode()].fd
        return fd

    def _attach(self, feature: Feature) -> None:
        """Attach a feature's programs, all or none (a feature whose requirement failed: none)."""
        assert self.plan is not None
        if feature.name not in self.plan.enabled:
            return
        missing = [name for name in feature.requires if name not in self.plan.enabled]
        if missing:
            self.plan.fail(feature, f"{feature.name} needs {', '.join(missing)}, which is off")
            log.warning("network: %s is off with %s: %s", feature.name, missing, feature.loses)
            return
        attached = []
        try:
            for probe in feature.probes:
                self._bpf().attach_tracepoint(
                    tp=probe.tracepoint.encode(), fn_name=probe.function.encode()
                )
                attached.append(probe)
        except Exception as error:  # BCC raises Exception for a failed attach
            for probe in attached:
                self._bpf().detach_tracepoint(tp=probe.tracepoint.encode())
            self.plan.fail(feature, f"attaching {feature.name} failed ({error})")
            log.warning("network: attaching %s failed (%s): %s", feature.name, error, feature.loses)

    def drain(self) -> NetworkDrain:
        """Switch slots, then read and clear what the kernel counted in the old one."""
        old, start_ns, end_ns = self._switch()
        drain = NetworkDrain(start_ns=start_ns, end_ns=end_ns)
        drain.latency = [_latency(k, v) for k, v in read_and_clear(self._table(f"latency_{old}"))]
        drain.connections = merged_outcomes(
            _connection(k, v)
            for k, v in read_and_clear(self._table(f"connections_{old}"))
            if v.count > 0
        )
        drain.waits = self._read_waits(old)
        drain.drops = self._drops.read(self._table("net_drops"))
        self._forget_ended_processes()
        return drain

    def _bpf(self) -> Any:
        return self._programs().bpf

    def _read_waits(self, slot: int) -> list[Wait]:
        stacks = self._table(f"wait_stacks_{slot}")
        cache: dict[int, tuple[int, ...]] = {}
        waits = [
            Wait(
                process=ProcessGeneration(key.pid, key.generation),
                comm=decode(key.comm),
                user_stack=stack_call_sites(stacks, key.user_stack_id, cache),
                nanoseconds=nanoseconds,
            )
            for key, nanoseconds in read_and_clear_counts(self._table(f"waits_{slot}"))
        ]
        clear_stack_map(stacks)
        return waits

    def _forget_ended_processes(self) -> None:
        """Delete the tables of processes that are gone.

        Exit does that in the kernel, but only when the thread group leader
        exits last; this sweep catches the rest (one entry per process with
        sockets, so it stays cheap).
        """
        tables = self._table("fd_tables")
        for key in list(tables.keys()):
            if not (self._proc / str(key.value)).exists():
                tables.pop(key, None)

    def _seed_sockets(self) -> int:
        """Mark the sockets running processes already hold; returns how many."""
        seeded = 0
        tables, high = self._table("fd_tables"), self._table("fd_high")
        for pid in processes(self._proc):
            descriptors = socket_descriptors(pid, self._proc)
            if not descriptors:
                continue
            key = tables.Key(pid)
            table = tables.get(key) or _new_table(tables)
            for descriptor in descriptors:
                if descriptor.fd < TABLE_FDS:
                    word, bit = divmod(descriptor.fd, 64)
                    table.sockets[word] |= 1 << bit
                    if descriptor.cloexec:
                        table.cloexec[word] |= 1 << bit
                else:
                    _seed_high(high, pid, table.id, descriptor.fd)
            tables[key] = table
            seeded += len(descriptors)
        return seeded


def _new_table(tables: Any) -> Any:
    table = tables.Leaf()
    table.id = random.getrandbits(32) | 1  # as new_table_id() in the BPF program
    return table


def _seed_high(high: Any, pid: int, table_id: int, fd: int) -> None:
    word, bit = divmod(fd, 64)
    key = high.Key(pid, word)
    entry = high.get(key)
    if entry is None or entry.id != table_id:
        entry = high.Leaf()
        entry.id = table_id
    entry.sockets |= 1 << bit
    high[key] = entry


def _buckets(histogram: Any) -> dict[int, int]:
    counts = np.frombuffer(histogram.buckets, dtype=np.uint32)
    return {int(i): int(counts[i]) for i in np.flatnonzero(counts)}


def _latency(key: Any, value: Any) -> CallLatency:
    return CallLatency(
        process=ProcessGeneration(key.pid, key.generation),
        syscall=NETWORK_SYSCALLS[key.kind],
        count=value.count,
        errors=value.errors,
        eagain=value.eagain,
        sum_ns=value.sum_ns,
        max_ns=value.max_ns,
        buckets=_buckets(value),
    )


def _connection(key: Any, value: Any) -> ConnectOutcome:
    return ConnectOutcome(
        process=ProcessGeneration(key.pid, key.generation),
        address=address_text(key.family, bytes(key.addr)),
        port=key.port,
        result=result_name(key.result),
        count=value.count,
        max_ns=value.max_ns,
        buckets=_buckets(value),
    )


def merged_outcomes(outcomes: Iterable[ConnectOutcome]) -> list[ConnectOutcome]:
    """One outcome per (process, address, port, result): an IPv4-mapped IPv6
    destination is the same as its IPv4 one, though the kernel keyed them apart."""
    merged: dict[tuple[ProcessGeneration, str, int, str], ConnectOutcome] = {}
    for outcome in outcomes:
        key = (outcome.process, outcome.address, outcome.port, outcome.result)
        seen = merged.get(key)
        if seen is not None:
            buckets = dict(seen.buckets)
            for index, count in outcome.buckets.items():
                buckets[index] = buckets.get(index, 0) + count
            outcome = replace(
                seen,
                count=seen.count + outcome.count,
                max_ns=max(seen.max_ns, outcome.max_ns),
                buckets=buckets,
            )
        merged[key] = outcome
    return list(merged.values())


def address_text(family: int, raw: bytes) -> str:
    """An address as text; IPv4-mapped IPv6 addresses (dual-stack sockets) as IPv4."""
    if family == AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    address = ipaddress.IPv6Address(raw[:16])
    return str(address.ipv4_mapped or address)


def result_name(result: int) -> str:
    """'ok' for 0, else the errno name (EINPROGRESS: not followed to completion)."""
    if result == 0:
        return "ok"
    return errno.errorcode.get(result, f"errno {result}")
