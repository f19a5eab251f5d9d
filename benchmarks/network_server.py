"""Network latency and peers queries on a day of histograms, through a real server.

500 pods (50 namespaces, 100 workloads, 50 nodes) x 13 system calls, one
histogram per pod and call every 10 s for 24 h: 56 million rows of 8 to 40
non-empty buckets. The rows are generated inside ClickHouse by a process of
its own on the chDB path (as ingest writes them, hour by hour), because 56
million histograms through HTTP would take longer than this machine can spare;
ingest through HTTP is measured apart, on agent-shaped batches (one node's 10
pods x 13 calls per batch). Then a `podflame server` on that path answers the
queries, timed as medians of warm HTTP requests once the server idles.

Run alone: `python -m benchmarks.network_server [--hours 24]`.
"""

import argparse
import contextlib
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from benchmarks.server import settle
from podflame.model.network import bucket_of
from tests.conftest import running_server

PODS = 500
SYSCALLS = 13
BATCH_SECONDS = 10
HTTP_BATCHES = 400
QUERY_TIMEOUT_SECONDS = 600
WARMUP = 1
REPEATS = 5

# Per pod p: namespace ns-(p // 10), workload svc-(p // 5), node node-(p % 50).
_NAMES = """
    'node-' || leftPad(toString(pod % 50), 2, '0') AS node,
    'ns-' || leftPad(toString(intDiv(pod, 10)), 2, '0') AS namespace,
    'svc-' || leftPad(toString(intDiv(pod, 5)), 3, '0') AS workload,
    workload || '-' || toString(pod % 5) AS pod_name
"""
_LATENCY = f"""
INSERT INTO podflame.network_latency
SELECT fromUnixTimestamp64Milli(toInt64({{start_ms}} + batch * {BATCH_SECONDS * 1000}), 'UTC'),
    node, namespace, pod_name, 'app', 'Deployment', workload, 'server', 1000 + pod,
    map('team', 't' || toString(pod % 7)),
    ['connect', 'accept', 'accept4', 'sendto', 'recvfrom', 'sendmsg', 'recvmsg', 'sendmmsg',
     'recvmmsg', 'read', 'write', 'readv', 'writev'][call + 1],
    arraySum(counts), cityHash64(number, 'e') % 3, cityHash64(number, 'a') % 10,
    arraySum(counts) * 100000, 1000000 + cityHash64(number, 'm') % 1000000,
    arrayMap(i -> toUInt16(first + i), range(width)), counts
FROM (
    SELECT number, number % {PODS} AS pod, intDiv(number, {PODS}) % {SYSCALLS} AS call,
        {{first_batch}} + intDiv(number, {PODS * SYSCALLS}) AS batch, {_NAMES},
        toUInt16(60 + cityHash64(pod, call) % 150) AS first,
        8 + cityHash64(number, 'w') % 33 AS width,
        arrayMap(i -> toUInt32(1 + cityHash64(number, i) % 50), range(width)) AS counts
    FROM numbers({{rows}})
)
"""
# Each pod connects to 3 destinations once a minute; 1 in 50 refused, 1 in 70 in progress.
_PEERS = f"""
INSERT INTO podflame.network_peers
SELECT fromUnixTimestamp64Milli(toInt64({{start_ms}} + minute * 60000), 'UTC'),
    node, namespace, pod_name, 'app', 'Deployment', workload, 'server', 1000 + pod, map(),
    '10.0.' || toString(target) || '.1', 5432,
    multiIf(number % 50 = 0, 'ECONNREFUSED', number % 70 = 0, 'EINPROGRESS', 'ok'),
    5, 900000, [toUInt16(120 + target % 40), toUInt16(128 + target % 40)], [3, 2],
    map('namespace', 'ns-' || leftPad(toString(intDiv(target, 10)), 2, '0'),
        'pod', 'db-' || toString(target))
FROM (
    SELECT number, number % {PODS} AS pod, (pod * 7 + intDiv(number, {PODS}) % 3) % 250 AS target,
        {{first_minute}} + intDiv(number, {PODS * 3}) AS minute, {_NAMES}
    FROM numbers({{rows}})
)
"""


def generate(chdb: Path, start_ms: int, hours: int) -> None:
    """Create the schema and the rows, in a process of its own (one per chDB path)."""
    per_hour = 3600 // BATCH_SECONDS
    statements = []
    for hour in range(hours):
        statements.append(_LATENCY.format(start_ms=start_ms, first_batch=hour * per_hour,
                                          rows=PODS * SYSCALLS * per_hour))  # fmt: skip
        statements.append(_PEERS.format(start_ms=start_ms, first_minute=hour * 60,
                                        rows=PODS * 3 * 60))  # fmt: skip
    script = f"""
import json, sys, clickhouse_connect
from podflame.server.clickhouse_store import ClickHouseStore
client = clickhouse_connect.get_client(dsn="chdb://{chdb}")
ClickHouseStore(client)  # migrations
for statement in json.loads(sys.stdin.read()):
    client.command(statement)
"""
    subprocess.run([sys.executable, "-c", script], input=json.dumps(statements), check=True,
                   capture_output=True, text=True)  # fmt: skip


def table_sizes(chdb: Path) -> dict[str, tuple[int, int]]:
    """{table: (rows, bytes on disk)} of the network tables' active parts."""
    script = f"""
import json, clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://{chdb}")
rows = client.query(
    "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts WHERE database = 'podflame'"
    " AND active AND table LIKE 'network_%' GROUP BY table"
).result_rows
print(json.dumps({{table: [int(r), int(b)] for table, r, b in rows}}))
"""
    output = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                            text=True).stdout  # fmt: skip
    return {table: (rows, size) for table, (rows, size) in json.loads(output).items()}


CALLS = ("read", "write", "recvfrom", "sendto", "connect", "accept4", "recvmsg", "sendmsg")
CALLS += ("readv", "writev", "accept", "sendmmsg", "recvmmsg")


def node_batches(end_ns: int, count: int) -> list[bytes]:
    """gzip JSON net_wait batches as one node's agent sends them: 10 pods x 13 calls."""
    buckets = {bucket_of(ns): 1 + ns % 7 for ns in range(20_000, 2_000_000, 61_000)}
    totals = {"count": sum(buckets.values()), "errors": 1, "eagain": 3, "sum_ns": 10**8}
    totals.update(max_ns=2_000_000)
    bodies = []
    for index in range(count):
        node = index % 50
        latency = [
            {"labels": _pod_labels(pod), "syscall": call, **totals, "buckets": buckets}
            for pod in range(node, PODS, 50)
            for call in CALLS
        ]
        batch_end = end_ns - (count - index) * 10**9 // 5
        body = {"batch_id": uuid.uuid4().hex, "profile_type": "net_wait", "period": 1,
                "start_time_ns": batch_end - 10**10, "end_time_ns": batch_end, "stacks": [],
                "series": [], "latency": latency}  # fmt: skip
        bodies.append(gzip.compress(json.dumps(body).encode(), compresslevel=1))
    return bodies


def _pod_labels(pod: int) -> dict[str, str]:
    return {"node": f"node-{pod % 50:02d}", "namespace": f"ns-{pod // 10:02d}",
            "pod": f"svc-{pod // 5:03d}-{pod % 5}", "pid": str(1000 + pod)}  # fmt: skip


def http_ingest(client: httpx.Client, bodies: list[bytes]) -> float:
    """Histograms per second, one sender."""
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    started = time.perf_counter()
    for body in bodies:
        response = client.post("/api/v1/ingest", content=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(response.text)
    return len(bodies) * (PODS // 50) * SYSCALLS / (time.perf_counter() - started)


def queries(end_s: int, hours: int) -> dict[str, tuple[str, dict[str, str]]]:
    """label -> (path, parameters), over the generated day (`hours` ending at end_s)."""
    hour = {"from": str(end_s - 7200), "until": str(end_s - 3600)}
    day = {"from": str(end_s - hours * 3600), "until": str(end_s)}
    pod = {"query": '{namespace="ns-27", pod="svc-054-2"}'}
    namespace = {"query": '{namespace="ns-27"}'}
    workload = {"query": '{workload="svc-054"}'}
    by_call = {"group_by": "syscall"}
    latency, peers = "/api/v1/network/latency", "/api/v1/network/peers"
    return {
        "One pod, 1 h, by syscall (13 groups)": (latency, {**pod, **hour}),
        "One pod, 24 h, by syscall, step 5 min": (latency, {**pod, "step": "300", **day}),
        "One namespace (10 pods), 1 h, by pod and syscall": (latency, {**namespace, **hour}),
        "One namespace, 24 h, by syscall": (latency, {**namespace, **by_call, **day}),
        "One workload, 24 h, by syscall, step 10 min": (
            latency,
            {**workload, **by_call, "step": "600", **day},
        ),
        "All 500 pods, 1 h, by pod and syscall (6,500 groups)": (
            latency,
            {"limit": "10000", **hour},
        ),
        "All 500 pods, 24 h, by syscall": (latency, {**by_call, **day}),
        "Peers of one namespace, 24 h": (peers, {**namespace, **day}),
        "Peers of all pods, 1 h": (peers, {"limit": "10000", **hour}),
    }


def run(directory: Path, hours: int = 24, reuse: bool = False) -> list[str]:
    end_s = (int(time.time()) // 3600) * 3600
    generated = time.perf_counter()
    if reuse:  # data of an earlier run in `directory`: its day ended at its last row
        end_s = _last_hour_end(directory / "chdb")
    else:
        generate(directory / "chdb", (end_s - hours * 3600) * 1000, hours)
    generated = time.perf_counter() - generated
    sizes = table_sizes(directory / "chdb")
    bodies = node_batches(end_s * 10**9, HTTP_BATCHES)
    timings: dict[str, tuple[float | str, int]] = {}
    # A long query timeout: the whole day of every pod takes longer than the default 30 s.
    extra = ["--query-timeout-seconds", str(QUERY_TIMEOUT_SECONDS)]
    with (
        running_server(directory, extra=extra) as url,
        httpx.Client(base_url=url, timeout=QUERY_TIMEOUT_SECONDS + 60) as client,
    ):
        settle(client, timeout=1800)
        for label, (path, params) in queries(end_s, hours).items():
            timings[label] = _timed(client, path, params)
        rate = http_ingest(client, bodies)
    return report(sizes, timings, rate, generated, hours)


def _last_hour_end(chdb: Path) -> int:
    script = f"""
import clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://{chdb}")
print(client.query("SELECT toUnixTimestamp(max(timestamp)) FROM podflame.network_latency"
                   " WHERE timestamp < now() - 120").result_rows[0][0])
"""
    output = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                            text=True).stdout  # fmt: skip
    return (int(output) // 3600 + 1) * 3600


def _timed(client: httpx.Client, path: str, params: dict[str, str]) -> tuple[float | str, int]:
    """(p50 ms, response bytes), or (the error, 0) when the query fails."""
    response = client.get(path, params=params)
    if response.status_code != 200:
        return f"{response.status_code}: {response.json().get('error', '')}", 0
    return _p50(client, path, params), len(response.content)


def _p50(client: httpx.Client, path: str, params: dict[str, str]) -> float:
    """Median of REPEATS requests after WARMUP ones, in milliseconds (fewer than
    benchmarks.server's: the day-long queries take seconds on this machine)."""
    timings = []
    for attempt in range(WARMUP + REPEATS):
        started = time.perf_counter()
        response = client.get(path, params=params)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{path} {params}: {response.status_code} {response.text}")
        if attempt >= WARMUP:
            timings.append(elapsed)
    return 1000 * statistics.median(timings)


def report(
    sizes: dict[str, tuple[int, int]],
    timings: dict[str, tuple[float | str, int]],
    rate: float,
    generated: float,
    hours: int,
) -> list[str]:
    rows, size = sizes["network_latency"]
    peer_rows, peer_size = sizes.get("network_peers", (0, 0))
    lines = [
        f"A `podflame server` on chDB holding {rows:,} latency histograms ({PODS} pods x",
        f"{SYSCALLS} system calls x {hours} h of {BATCH_SECONDS} s batches, 8-40 non-empty buckets",
        f"each) and {peer_rows:,} connection rows, generated in ClickHouse ({generated:.0f} s, not",
        f"timed). Medians of {REPEATS} warm HTTP requests, timed once the server idles.",
        "",
        "| query | p50 | response |",
        "|---|---|---|",
    ]
    for label, (ms, body) in timings.items():
        shown = f"{ms:,.1f} ms" if isinstance(ms, float) else f"failed ({ms})"
        lines.append(f"| {label} | {shown} | {body / 1024:,.0f} KiB |")
    lines += [
        "",
        f"- Storage (active parts, before a final merge): {size / rows:.1f} bytes per histogram,",
        f"  {peer_size / max(peer_rows, 1):.1f} bytes per connection row.",
        f"- Ingest through HTTP, one sender, batches of one node (130 histograms): "
        f"{rate:,.0f} histograms/s.",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--directory", type=Path, help="keep the data here (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true", help="query the data already in it")
    args = parser.parse_args(argv)
    with _directory(args.directory) as directory:
        print("\n".join(run(directory, args.hours, args.reuse)))
    return 0


@contextlib.contextmanager
def _directory(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="podflame-bench-network-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    sys.exit(main())
