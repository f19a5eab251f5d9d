"""SIGTERM to a real `podflame server`: in-flight ingests finish and are stored, then it exits."""

import gzip
import json
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from benchmarks.load import stored_counts
from tests.conftest import PODFLAME, free_port, wait_until_ready

ROWS = 150_000


def large_batch() -> bytes:
    """A batch heavy enough to be still parsing or storing when the signal arrives."""
    end_ns = time.time_ns()
    stacks = [["main", f"handler{i % 500}", f"leaf{i}"] for i in range(ROWS // 10)]
    series = [
        {"labels": {"node": "n1", "pod": f"p{p}", "pid": str(100 + p)},
         "samples": [{"stack": s, "value": 7} for s in range(len(stacks))]}
        for p in range(ROWS // len(stacks))
    ]  # fmt: skip
    body = {"batch_id": uuid.uuid4().hex, "period": 7, "start_time_ns": end_ns - 10**10,
            "end_time_ns": end_ns, "stacks": stacks, "series": series}  # fmt: skip
    return gzip.compress(json.dumps(body).encode(), compresslevel=1)


def http_request(port: int, body: bytes) -> bytes:
    head = (
        f"POST /api/v1/ingest HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def read_response(sock: socket.socket) -> tuple[int, dict[str, int]]:
    sock.settimeout(60)
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_finishes_the_ingest_in_flight_then_exits(tmp_path: Path) -> None:
    port = free_port()
    storage = tmp_path / "chdb"
    log = (tmp_path / "server.log").open("wb")
    command = [*PODFLAME, "server", "--port", str(port), "--storage", f"chdb://{storage}"]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", server)
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(http_request(port, large_batch()))
        time.sleep(0.5)  # the server has the body and works on it
        sock.setblocking(False)
        try:
            early = sock.recv(1)
        except BlockingIOError:
            early = b""
        assert early == b"", "the batch was stored before the signal: make it larger"
        server.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not refused(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.poll() is None and refused(port), "still accepting after SIGTERM"
        sock.setblocking(True)
        status, answer = read_response(sock)
        assert status == 200
        assert answer["stored_samples"] == ROWS
        # uvicorn re-raises the SIGTERM it caught once it is done, so a
        # supervisor sees the process end by that signal (or 0).
        assert server.wait(60) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
    assert "storage closed" in (tmp_path / "server.log").read_text()
    # Closed cleanly: another process opens the path and finds every row.
    assert stored_counts(storage)["cpu_rows"] == ROWS
