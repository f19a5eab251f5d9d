"""The agent's spool and shutdown, measured: `python -m benchmarks.spool` (needs root, BPF).

Not part of `make bench`: figures for docs/operations.md. It prints
- how long the drain loop waits on a blackholed server: the old path (queue and
  send in the drain thread, Shipper.ship) beside the new one (Shipper.submit,
  the sender thread sends);
- spool write and replay throughput for batches of a realistic size;
- seconds from SIGTERM to exit of `podflame agent` (defaults: network tracer on),
  with the server up and blackholed.
"""

import argparse
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from podflame.agent.shipper import Shipper, encode
from podflame.agent.spool import DiskSpool
from podflame.model import Batch, Series, StackValue
from tests.agent.outage import blackhole, start_server
from tests.conftest import PODFLAME, free_port, stop


def realistic_batch(rng: random.Random, stacks: int = 3000, processes: int = 150) -> Batch:
    """About what a busy node's 10 s drain holds: thousands of stacks, ~20 frames deep."""
    names = [f"pkg{rng.randrange(200)}.module.function_{i}" for i in range(5000)]
    now = time.time_ns()
    return Batch(
        batch_id=uuid.uuid4().hex,
        period=1_000_000_000 // 19,
        start_time_ns=now - 10**10,
        end_time_ns=now,
        stacks=[rng.sample(names, rng.randrange(8, 32)) for _ in range(stacks)],
        series=[
            Series(
                labels={"comm": f"proc{p}", "pid": str(1000 + p), "node": "bench"},
                samples=[
                    StackValue(stack=rng.randrange(stacks), value=rng.randrange(1, 50) * 52631578)
                    for _ in range(stacks // processes * 3)
                ],
            )
            for p in range(processes)
        ],
    )


def drain_delay(batches: int) -> tuple[list[float], list[float]]:
    """Seconds each hand-over to the shipper took with a server that never answers."""
    body = realistic_batch(random.Random(1))
    old, new = [], []
    with blackhole() as hole:
        synchronous = Shipper(hole.url, max_pending=30)
        threaded = Shipper(hole.url, max_pending=30)
        threaded.start()
        for _ in range(batches):
            start = time.perf_counter()
            synchronous.ship(body)
            old.append(time.perf_counter() - start)
            start = time.perf_counter()
            threaded.submit(body)
            new.append(time.perf_counter() - start)
        threaded.close(time.monotonic() + 1)
    return old, new


def spool_throughput(directory: Path, batches: int) -> dict[str, float]:
    rng = random.Random(2)
    bodies = [encode(realistic_batch(rng)) for _ in range(batches)]
    size = sum(len(b) for b in bodies)
    spool = DiskSpool(directory, max_bytes=1 << 34)
    start = time.perf_counter()
    for body in bodies:
        spool.push(body)
    write = time.perf_counter() - start
    restarted = DiskSpool(directory, max_bytes=1 << 34)
    start = time.perf_counter()
    while (item := restarted.oldest()) is not None:
        restarted.done(item.key)
    replay = time.perf_counter() - start
    return {
        "batch_bytes": size / batches,
        "write_batches_s": batches / write,
        "write_mb_s": size / write / 1e6,
        "replay_batches_s": batches / replay,
        "replay_mb_s": size / replay / 1e6,
    }


def replay_to_server(directory: Path, batches: int) -> tuple[float, float]:
    """Batches/s and MB/s a restarted agent's spool reaches a local server at."""
    rng = random.Random(3)
    spool = DiskSpool(directory / "spool", max_bytes=1 << 34)
    for _ in range(batches):
        spool.push(encode(realistic_batch(rng)))
    size = spool.size_bytes
    port = free_port()
    server = start_server(directory, port)
    try:
        shipper = Shipper(f"http://127.0.0.1:{port}", queue=spool, timeout=60)
        start = time.perf_counter()
        assert shipper.flush(), "the server refused a batch"
        elapsed = time.perf_counter() - start
    finally:
        stop(server)
    return batches / elapsed, size / elapsed / 1e6


def exit_seconds(directory: Path, server: str) -> float:
    log = directory / "agent.log"
    command = [*PODFLAME, "agent", "--server", server, "--metrics-port", "0"]
    with log.open("ab") as out:
        agent = subprocess.Popen(
            [*command, "--spool-dir", str(directory / "spool"), "--interval", "2"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        while "sampling all CPUs" not in log.read_text():
            assert agent.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        time.sleep(3)  # a drain or two, the sender busy or backing off
        start = time.monotonic()
        agent.terminate()
        agent.wait(60)
        return time.monotonic() - start
    finally:
        stop(agent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    old, new = drain_delay(3)
    print(
        f"drain hand-over, blackholed server: old {statistics.median(old):.3f} s,"
        f" new {statistics.median(new) * 1000:.1f} ms (median of {len(old)})"
    )
    with tempfile.TemporaryDirectory() as directory:
        figures = spool_throughput(Path(directory), 200)
    print("spool: " + ", ".join(f"{k} {v:,.1f}" for k, v in figures.items()))
    with tempfile.TemporaryDirectory() as directory:
        per_s, mb_s = replay_to_server(Path(directory), 50)
    print(f"replay to a local server: {per_s:.1f} batches/s, {mb_s:.2f} MB/s")
    up, hole = [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as directory:
            port = free_port()
            server = start_server(Path(directory), port)
            try:
                up.append(exit_seconds(Path(directory), f"http://127.0.0.1:{port}"))
            finally:
                stop(server)
        with tempfile.TemporaryDirectory() as directory, blackhole() as bh:
            hole.append(exit_seconds(Path(directory), bh.url))
    print(
        f"exit after SIGTERM: server up {[round(s, 2) for s in up]},"
        f" blackholed {[round(s, 2) for s in hole]}"
    )


if __name__ == "__main__":
    main()
