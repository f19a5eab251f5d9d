"""Many simulated agents against one real server: ingest latency, errors and server memory.

Each simulated agent is one node: every `interval` seconds it sends one CPU
batch and one net_wait batch (latency histograms and connect() outcomes), as
the real agent does (profiler-agent/batch.py, netbatch.py), gzip JSON
(wire version 2: a frame table and stacks of indexes) over its own keep-alive
connection, each batch with a fresh batch_id and the current time, marked as
the agent marks a first send (Podflame-Attempt: 1; `--resent` leaves the mark
out, so the server looks every batch up in storage as it does for a retry).
Stacks come from one pool shared by all nodes (the same workloads run on many
nodes), 8 to 45 frames deep.

The generator shares the machine's CPUs with the server under test, so it is
kept cheap: every body is compressed once before the run; at send time only
a short tail (batch_id and times) is appended as a stored deflate block and
the gzip trailer recomputed (crc32 of the tail, combined with the prefix's).
Latency runs from just before a request is written to the end of its
response; a request sent late (the generator's loop busy) is counted as late,
and the generator's own CPU time is reported.

Run alone: `python -m benchmarks.load --agents 200 --seconds 300`.
"""

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import process_cpu_seconds, resident_bytes
from podflame.model.frames import Frame
from podflame.model.network import bucket_of
from podflame.model.wire import ATTEMPT_HEADER
from tests.conftest import running_server

INTERVAL_SECONDS = 10.0
PERIOD_NS = 10**9 // 19  # 19 Hz, the agent's default
STACK_POOL = 3000
NAMESPACES = 20
PROCESSES_PER_NODE = 30
CPU_ROWS_PER_BATCH = 600
NET_PROCESSES_PER_NODE = 15
NET_ROWS_PER_BATCH = 150
SYSCALLS = ("recvfrom", "sendto", "read", "write", "connect", "epoll_wait")
VARIANTS = 3  # different bodies per agent and kind, used in turn
RSS_PERIOD_SECONDS = 5.0

# The goals of issue 8: (label, goal, unit).
GOALS = {
    "errors": ("Errors (non-200 answers, connection failures)", 0, "requests"),
    "p99": ("p99 ingest latency", 1000, "ms"),
    "rss_growth": ("Server RSS growth over the second half (trend)", 10, "%"),
}

_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


@dataclass(frozen=True)
class Template:
    """A gzip body minus its tail: deflated prefix, its crc32 and length."""

    deflated: bytes
    crc: int
    size: int
    rows: int  # sample rows (one per series entry)
    latency_rows: int
    peer_rows: int
    kind: str

    def body(self, batch_id: str, start_ns: int, end_ns: int) -> bytes:
        tail = f'"batch_id":"{batch_id}","start_time_ns":{start_ns},"end_time_ns":{end_ns}}}'
        data = tail.encode()
        # A final stored block: 1 (BFINAL, BTYPE 00), LEN, NLEN, the bytes.
        block = b"\x01" + struct.pack("<HH", len(data), len(data) ^ 0xFFFF) + data
        trailer = struct.pack("<II", zlib.crc32(data, self.crc), (self.size + len(data)) % 2**32)
        return _GZIP_HEADER + self.deflated + block + trailer


def template(prefix: dict[str, Any], kind: str) -> Template:
    """`prefix` without batch_id and times, as the opening of a JSON object left open."""
    text = json.dumps(prefix, separators=(",", ":"))
    opening = (text[:-1] + ",").encode()  # drop the closing brace, more keys follow
    compressor = zlib.compressobj(5, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(opening) + compressor.flush(zlib.Z_SYNC_FLUSH)
    series = prefix["series"]
    return Template(
        deflated=deflated,
        crc=zlib.crc32(opening),
        size=len(opening),
        rows=sum(len(item["samples"]) for item in series),
        latency_rows=len(prefix.get("latency", ())),
        peer_rows=len(prefix.get("connections", ())),
        kind=kind,
    )


def stack_pool(rng: random.Random) -> list[list[str]]:
    """Stacks sharing entry paths, then diverging, 8 to 45 frames, as Go/Java/C services have."""
    words = ("api", "db", "cache", "auth", "grpc", "json", "http", "queue", "log", "sched")
    names = [f"github.com/acme/{words[i % 10]}.(*T{i % 37}).Method{i}" for i in range(4000)]
    kernel = [f"{name}_[k]" for name in ("do_syscall_64", "tcp_sendmsg", "vfs_read", "schedule")]
    entries = [["runtime.goexit", "main.main", *rng.sample(names, rng.randint(2, 5))]
               for _ in range(60)]  # fmt: skip
    pool = []
    for _ in range(STACK_POOL):
        depth = rng.randint(8, 45)
        entry = rng.choice(entries)
        rest = rng.sample(names, max(depth - len(entry), 1))
        tail = rng.sample(kernel, rng.randint(1, 2)) if rng.random() < 0.3 else []
        pool.append([*entry, *rest, *tail][:depth])
    return pool


def node_processes(node: int, rng: random.Random) -> list[dict[str, str]]:
    processes = []
    for index in range(PROCESSES_PER_NODE):
        namespace = f"ns-{rng.randrange(NAMESPACES):02d}"
        workload = f"svc-{rng.randrange(100):03d}"
        processes.append({
            "node": f"node-{node:03d}", "namespace": namespace,
            "pod": f"{workload}-{rng.randrange(16**8):08x}-{index}", "container": workload,
            "workload_kind": "Deployment", "workload": workload, "comm": workload[:15],
            "pid": str(1000 + index),
        })  # fmt: skip
    return processes


Labels = list[dict[str, str]]


def cpu_prefix(processes: Labels, pool: list[list[str]], rng: random.Random) -> dict[str, Any]:
    chosen = rng.sample(range(len(pool)), CPU_ROWS_PER_BATCH // 2)
    per_process = CPU_ROWS_PER_BATCH // len(processes)
    series = []
    for labels in processes:
        picks = rng.sample(range(len(chosen)), per_process)
        samples = [{"stack": i, "value": PERIOD_NS * rng.randint(1, 20)} for i in picks]
        series.append({"labels": labels, "samples": samples})
    return {"profile_type": "cpu", "period": PERIOD_NS, **_typed([pool[i] for i in chosen]),
            "series": series, "counters": {"lost_samples": 0}}  # fmt: skip


def net_prefix(processes: Labels, pool: list[list[str]], rng: random.Random) -> dict[str, Any]:
    chosen = rng.sample(range(len(pool)), NET_ROWS_PER_BATCH // 2)
    talkers = processes[:NET_PROCESSES_PER_NODE]
    per_process = NET_ROWS_PER_BATCH // len(talkers)
    series, latency, connections = [], [], []
    for labels in talkers:
        picks = rng.sample(range(len(chosen)), per_process)
        samples = [{"stack": i, "value": rng.randint(10**4, 10**9)} for i in picks]
        series.append({"labels": labels, "samples": samples})
        for syscall in rng.sample(SYSCALLS, 4):
            latency.append(_histogram(labels, syscall, rng))
        for _ in range(rng.randint(0, 2)):
            connections.append(_connection(labels, rng))
    return {"profile_type": "net_wait", "period": 1, **_typed([pool[i] for i in chosen]),
            "series": series, "latency": latency, "connections": connections}  # fmt: skip


def _typed(stacks: list[list[str]]) -> dict[str, Any]:
    """The stacks as the agent sends them: wire version 2, a frame table (fields at their
    defaults left out, as pydantic's exclude_defaults writes them) and indexes."""
    index: dict[str, int] = {}
    indexes = [[index.setdefault(label, len(index)) for label in stack] for stack in stacks]
    return {"version": 2, "frames": list(map(_wire_frame, index)), "stacks": indexes}


@functools.lru_cache(maxsize=1 << 16)  # the pool's frames recur in every batch
def _wire_frame(label: str) -> dict[str, str | bool]:
    """A kernel or native frame without module offsets (all the pool has), as
    Frame.from_label reads it."""
    frame = Frame.from_label(label)
    wire: dict[str, str | bool] = {"kind": frame.kind, "name": frame.name}
    return wire if frame.resolved else {**wire, "resolved": False}


def _buckets(rng: random.Random, calls: int) -> dict[str, int]:
    buckets: dict[str, int] = {}
    for _ in range(min(calls, 40)):
        key = str(bucket_of(int(rng.lognormvariate(11, 1.5))))
        buckets[key] = buckets.get(key, 0) + max(calls // 40, 1)
    return buckets


def _histogram(labels: dict[str, str], syscall: str, rng: random.Random) -> dict[str, Any]:
    buckets = _buckets(rng, rng.randint(5, 5000))
    count = sum(buckets.values())
    return {"labels": labels, "syscall": syscall, "count": count, "errors": 0,
            "eagain": rng.randint(0, 50), "sum_ns": count * 60_000, "max_ns": 10**8,
            "buckets": buckets}  # fmt: skip


def _connection(labels: dict[str, str], rng: random.Random) -> dict[str, Any]:
    buckets = _buckets(rng, rng.randint(1, 30))
    result = "ok" if rng.random() < 0.95 else "ECONNREFUSED"
    peer = {"namespace": f"ns-{rng.randrange(NAMESPACES):02d}", "workload": "db"}
    return {"labels": labels, "address": f"10.0.{rng.randrange(256)}.{rng.randrange(256)}",
            "port": rng.choice((80, 443, 5432, 6379)), "result": result,
            "count": sum(buckets.values()), "max_ns": 10**7, "buckets": buckets,
            "peer": peer if result == "ok" else {}}  # fmt: skip


@dataclass(frozen=True)
class Agent:
    node: int
    cpu: tuple[Template, ...]
    net: tuple[Template, ...]


def build_agents(count: int, seed: int = 11) -> list[Agent]:
    rng = random.Random(seed)
    pool = stack_pool(rng)
    agents = []
    for node in range(count):
        processes = node_processes(node, rng)
        cpu = tuple(template(cpu_prefix(processes, pool, rng), "cpu") for _ in range(VARIANTS))
        net = tuple(template(net_prefix(processes, pool, rng), "net") for _ in range(VARIANTS))
        agents.append(Agent(node, cpu, net))
    return agents


@dataclass
class Tally:
    """What the agents sent and what came back."""

    latencies: list[float] = field(default_factory=list)  # seconds, 200 answers
    answered_at: list[float] = field(default_factory=list)  # monotonic time of each of them
    errors: dict[str, int] = field(default_factory=dict)
    late: int = 0  # requests started more than 1 s after their schedule
    sent: int = 0
    rows: int = 0
    latency_rows: int = 0
    peer_rows: int = 0
    body_bytes: int = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def _send(client: httpx.AsyncClient, body: bytes, tally: Tally) -> bool:
    started = time.perf_counter()
    try:
        response = await client.post("/api/v1/ingest", content=body)
    except httpx.HTTPError as error:
        tally.error(type(error).__name__)
        return False
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        tally.error(f"HTTP {response.status_code}")
        return False
    tally.latencies.append(elapsed)
    tally.answered_at.append(time.monotonic())
    return True


async def _agent_loop(
    client: httpx.AsyncClient,
    templates: tuple[Template, ...],
    due: float,
    until: float,
    tally: Tally,
) -> None:
    turn = 0
    while due < until:
        await asyncio.sleep(max(due - time.monotonic(), 0))
        if time.monotonic() - due > 1.0:
            tally.late += 1
        chosen = templates[turn % len(templates)]
        end_ns = time.time_ns()
        body = chosen.body(uuid.uuid4().hex, end_ns - int(INTERVAL_SECONDS * 1e9), end_ns)
        tally.sent += 1
        tally.body_bytes += len(body)
        if await _send(client, body, tally):
            tally.rows += chosen.rows
            tally.latency_rows += chosen.latency_rows
            tally.peer_rows += chosen.peer_rows
        turn += 1
        due += INTERVAL_SECONDS


async def drive(
    url: str, agents: list[Agent], seconds: float, seed: int = 3, first_send: bool = True
) -> Tally:
    """Every agent's CPU and network loops, phases spread over the interval."""
    rng = random.Random(seed)
    tally = Tally()
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    if first_send:
        headers[ATTEMPT_HEADER] = "1"
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    # Every client is made before the schedule starts: each costs ~30 ms of the
    # generator's loop (an SSL context of its own unless given one), and 400 of
    # them made on the way blocked it for 12 s, then fired ~260 overdue
    # requests at once: a burst no spread-out fleet of agents sends.
    shared_tls = ssl.create_default_context()
    async with contextlib.AsyncExitStack() as stack:
        loops = []
        for agent in agents:
            for templates in (agent.cpu, agent.net):
                client = httpx.AsyncClient(
                    base_url=url, headers=headers, limits=limits, timeout=30, verify=shared_tls
                )
                await stack.enter_async_context(client)
                loops.append((client, templates, rng.uniform(0, INTERVAL_SECONDS)))
        start = time.monotonic()
        await asyncio.gather(
            *(
                _agent_loop(client, templates, start + offset, start + seconds, tally)
                for client, templates, offset in loops
            )
        )
    return tally


@dataclass
class RssSampler:
    """The server's RSS every `period` seconds, on a thread-free asyncio task."""

    pid: int
    period: float = RSS_PERIOD_SECONDS
    samples: list[tuple[float, int]] = field(default_factory=list)

    async def run(self, done: asyncio.Event) -> None:
        """Until `done`: the whole run, including agents still sending their backlog."""
        start = time.monotonic()
        while not done.is_set():
            self.samples.append((time.monotonic() - start, resident_bytes(self.pid)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.period)
        self.samples.append((time.monotonic() - start, resident_bytes(self.pid)))


def rss_trend_percent(samples: list[tuple[float, int]]) -> float:
    """Least-squares growth over the second half of the run, in % of its mean RSS."""
    half = samples[len(samples) // 2 :]
    if len(half) < 3:
        return 0.0
    xs = [x for x, _ in half]
    ys = [float(y) for _, y in half]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    return 100 * slope * (xs[-1] - xs[0]) / mean_y


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q`th percentile of `values`; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(int(q / 100 * len(ordered)), len(ordered) - 1)]


@dataclass
class LoadResult:
    agents: int
    seconds: float  # of schedule: each agent's last batch is due before this
    elapsed: float  # until the last answer: agents behind schedule send their backlog
    tally: Tally
    rss: list[tuple[float, int]]
    server_cpu_seconds: float
    generator_cpu_seconds: float
    stored: dict[str, int]
    # The machine's 1-minute load average at the end: the generator and the
    # server share the CPUs with whatever else runs, which moves the latency.
    load_average: float = field(default_factory=lambda: os.getloadavg()[0])

    def percentile(self, q: float) -> float:
        return percentile(self.tally.latencies, q)

    @property
    def error_count(self) -> int:
        return sum(self.tally.errors.values())


def _server_pid(directory: Path) -> int:
    """The server process serving `directory` (running_server yields only its URL)."""
    marker = f"chdb://{directory / 'chdb'}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
    raise LookupError(f"no server for {directory}")


def stored_counts(chdb_dir: Path) -> dict[str, int]:
    """Rows per table, read in a separate process (chDB allows one path per process)."""
    code = (
        "import json, sys, clickhouse_connect\n"
        "c = clickhouse_connect.get_client(dsn='chdb://' + sys.argv[1])\n"
        "q = lambda sql: int(c.query(sql).result_rows[0][0])\n"
        "print(json.dumps({\n"
        " 'cpu_rows': q(\"SELECT count() FROM podflame.samples WHERE profile_type='cpu'\"),\n"
        " 'net_rows': q(\"SELECT count() FROM podflame.samples WHERE profile_type='net_wait'\"),\n"
        " 'latency_rows': q('SELECT count() FROM podflame.network_latency'),\n"
        " 'peer_rows': q('SELECT count() FROM podflame.network_peers')}))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code, str(chdb_dir)], check=True, capture_output=True, text=True
    ).stdout
    counts: dict[str, int] = json.loads(output)
    return counts


def run_load(
    directory: Path,
    agents: int,
    seconds: float,
    rss_period: float = RSS_PERIOD_SECONDS,
    first_send: bool = True,
) -> LoadResult:
    """Start a server under `directory`, drive it, stop it, count what it stored."""
    built = build_agents(agents)
    with running_server(directory) as url:
        pid = _server_pid(directory)
        sampler = RssSampler(pid, rss_period)
        server_cpu = process_cpu_seconds(pid)
        generator_cpu = time.process_time()

        async def both() -> Tally:
            done = asyncio.Event()
            sampling = asyncio.create_task(sampler.run(done))
            try:
                return await drive(url, built, seconds, first_send=first_send)
            finally:
                done.set()
                await sampling

        started = time.monotonic()
        tally = run_in_own_loop(both)
        elapsed = time.monotonic() - started
        generator_cpu = time.process_time() - generator_cpu
        server_cpu = process_cpu_seconds(pid) - server_cpu
    stored = stored_counts(directory / "chdb")
    return LoadResult(
        agents, seconds, elapsed, tally, sampler.samples, server_cpu, generator_cpu, stored
    )


def run_in_own_loop(main: Callable[[], Coroutine[Any, Any, Tally]]) -> Tally:
    """asyncio.run(main()) in a thread of its own: the caller's thread may already run an
    event loop (Playwright's sync API leaves one running in pytest's thread)."""
    results: list[Tally] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(asyncio.run(main()))
        except BaseException as error:  # re-raised in the caller's thread
            errors.append(error)

    thread = threading.Thread(target=run, name="load-generator")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def expected_counts(tally: Tally) -> dict[str, int]:
    """What storage holds when every 200-answered batch is stored exactly once."""
    return {
        "rows": tally.rows,
        "latency_rows": tally.latency_rows,
        "peer_rows": tally.peer_rows,
    }


def report(result: LoadResult) -> list[str]:
    tally = result.tally
    mb = 1 / 2**20
    rss = [value for _, value in result.rss]
    trend = rss_trend_percent(result.rss)
    p50, p95, p99 = (result.percentile(q) * 1000 for q in (50, 95, 99))
    requests_per_second = len(tally.latencies) / result.elapsed
    rows_per_second = tally.rows / result.elapsed
    figures = {"errors": result.error_count, "p99": p99, "rss_growth": trend}
    stored_rows = result.stored["cpu_rows"] + result.stored["net_rows"]
    lines = [
        f"{result.agents} simulated agents for {result.seconds:.0f} s over loopback (the run"
        f" took {result.elapsed:.0f} s: an agent behind schedule sends its backlog), each"
        f" sending one CPU batch (~{CPU_ROWS_PER_BATCH} sample rows, ~{CPU_ROWS_PER_BATCH // 2}"
        f" distinct stacks 8-45 frames deep) and one net_wait batch"
        f" ({NET_ROWS_PER_BATCH} rows, histograms and connections) every"
        f" {INTERVAL_SECONDS:.0f} s, gzip JSON (wire version 2, marked as first sends),"
        " unique batch_id each (benchmarks/load.py).",
        "",
        "| Figure | Value |",
        "|---|---|",
        f"| Requests answered 200 | {len(tally.latencies)} of {tally.sent}"
        f" ({requests_per_second:.1f}/s, {rows_per_second:,.0f} sample rows/s,"
        f" {tally.body_bytes / max(tally.sent, 1) / 1024:.1f} KiB gzip per request) |",
        f"| Ingest latency p50 / p95 / p99 / max | {p50:.0f} / {p95:.0f} / {p99:.0f} /"
        f" {max(tally.latencies, default=0) * 1000:.0f} ms |",
        f"| p99 per minute of the run | {_p99_per_minute(tally)} |",
        f"| Errors | {result.error_count} {dict(tally.errors) or ''} |",
        f"| Requests sent > 1 s after schedule (generator late) | {tally.late} |",
        f"| Server RSS start / peak / end | {rss[0] * mb:.0f} / {max(rss) * mb:.0f} /"
        f" {rss[-1] * mb:.0f} MiB |",
        f"| Server RSS trend over the second half | {trend:+.1f} % |",
        f"| Server CPU | {result.server_cpu_seconds / result.elapsed:.2f} CPU,"
        f" {1000 * result.server_cpu_seconds / max(len(tally.latencies), 1):.1f} ms"
        " per batch answered |",
        f"| Generator CPU (its own, same machine) |"
        f" {result.generator_cpu_seconds / result.elapsed:.2f} CPU |",
        f"| Stored: sample rows / expected | {stored_rows:,} / {tally.rows:,} |",
        f"| Machine load average (1 min) at the end, {os.cpu_count()} CPUs |"
        f" {result.load_average:.1f} |",
        "",
        "| Goal | Target | Measured | Met |",
        "|---|---|---|---|",
    ]
    for key, (label, goal, unit) in GOALS.items():
        value = figures[key]
        target = f"{goal}" if key == "errors" else f"< {goal} {unit}"
        met = "yes" if _met(key, value, goal) else "**no**"
        lines.append(f"| {label} | {target} | {value:.1f} {unit} | {met} |")
    return lines


def _p99_per_minute(tally: Tally) -> str:
    """Where in the run the slow answers were: the p99 of each minute's answers."""
    if not tally.answered_at:
        return "-"
    start = min(tally.answered_at)
    minutes: dict[int, list[float]] = {}
    for at, latency in zip(tally.answered_at, tally.latencies, strict=True):
        minutes.setdefault(int((at - start) // 60), []).append(latency)
    p99s = [percentile(values, 99) for _, values in sorted(minutes.items())]
    return ", ".join(f"{value * 1000:.0f}" for value in p99s) + " ms"


def _met(key: str, value: float, goal: float) -> bool:
    return value <= goal if key == "errors" else value < goal


def goals_met(result: LoadResult) -> dict[str, bool]:
    figures = {
        "errors": float(result.error_count),
        "p99": result.percentile(99) * 1000,
        "rss_growth": rss_trend_percent(result.rss),
    }
    return {key: _met(key, figures[key], GOALS[key][1]) for key in GOALS}


def section(agents: int, seconds: float) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="podflame-load-") as tmp:
        yield from report(run_load(Path(tmp), agents, seconds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument(
        "--resent", action="store_true", help="send no first-send mark (as retries are sent)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podflame-load-") as tmp:
        result = run_load(Path(tmp), args.agents, args.seconds, first_send=not args.resent)
        print("\n".join(report(result)))
        print(json.dumps({"stored": result.stored, "rss": result.rss}))
        met = goals_met(result)
        print("goals met:", met)
        return 0 if all(met.values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
