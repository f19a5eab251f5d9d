"""Servers that go away, answer 503 or never answer, for the shipper and outage tests."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.conftest import PODFLAME, wait_until_ready


def start_server(directory: Path, port: int) -> subprocess.Popen[bytes]:
    """A real `podflame server` on the chDB under `directory`; a restart reuses it."""
    log = (directory / "server.log").open("ab")
    process = subprocess.Popen(
        [*PODFLAME, "server", "--port", str(port), "--storage", f"chdb://{directory / 'chdb'}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    wait_until_ready(f"http://127.0.0.1:{port}/readyz", process)
    return process


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL: no chance to finish a request or flush anything."""
    process.send_signal(signal.SIGKILL)
    process.wait(30)


class Blackhole:
    """Takes connections and never answers; `connections` counts them."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._held: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def connections(self) -> int:
        return len(self._held)

    def _accept(self) -> None:
        while True:
            try:
                self._held.append(self._sock.accept()[0])
            except OSError:
                return  # closed

    def close(self) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(10)
        for connection in self._held:
            connection.close()


@contextmanager
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    try:
        yield hole
    finally:
        hole.close()


class RefusingProxy:
    """Answers the first `refusals` ingests with 503 and Retry-After, then forwards
    to the real server; records when each request arrived (time.monotonic())."""

    def __init__(self, upstream: str, refusals: int, retry_after: str) -> None:
        self.upstream, self.refusals, self.retry_after = upstream, refusals, retry_after
        self.arrivals: list[float] = []
        self.statuses: list[int] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "RefusingProxy":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        self.arrivals.append(time.monotonic())
        if len(self.arrivals) <= self.refusals:
            return 503, b'{"detail": "storage unavailable"}'
        request = urllib.request.Request(self.upstream + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                forwarded = {k: v for k, v in self.headers.items() if k.startswith("Content-")}
                status, answer = proxy._answer(self.path, forwarded, body)
                proxy.statuses.append(status)
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", proxy.retry_after)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def rows_per_sample(chdb_directory: Path, where: str) -> dict[tuple[int, int], int]:
    """(timestamp, stack) -> rows stored, read from the stopped server's chDB directly.
    A batch holds one row per process and stack, at its end time: a count above 1
    means a batch was stored twice."""
    query = (
        "SELECT toUnixTimestamp64Milli(timestamp), stack_hash, count() FROM podflame.samples"
        f" WHERE {where} GROUP BY 1, 2 FORMAT JSONCompact"
    )
    # One chDB engine per process: the query runs in a process of its own.
    script = (
        "import sys, chdb; s = chdb.session.Session(sys.argv[1]);"
        " print(s.query(sys.argv[2]).bytes().decode())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(chdb_directory), query],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows: list[list[int]] = json.loads(result.stdout)["data"]
    return {(int(time), int(stack)): int(count) for time, stack, count in rows}
