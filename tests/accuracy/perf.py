"""`perf record` attached to a workload, enabled exactly when its busy phase starts."""

import os
import select
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

FREQUENCY = 99


class PerfRecord:
    """`perf record -F 99 -g -e cpu-clock -p PID`, started with its events disabled.

    perf attaches while the workload waits; `enable` switches sampling on
    through perf's control descriptor and returns once perf acknowledges, so
    the workload is told to start only when perf really samples. Leaving the
    `with` block stops perf with SIGINT, as a user would.

    -N -B: no build-id cache under ~/.debug and no build-id pass at the end;
    `script` reads the binaries where the workload mapped them, which is why
    it must run while the workload is still alive (a binary in a private
    mount namespace disappears with it).
    """

    def __init__(self, pid: int, output: Path) -> None:
        self.pid = pid
        self.output = output
        self.log = output.with_suffix(".log")
        self._process: subprocess.Popen[bytes] | None = None
        self._control = -1  # our end of perf's control pipe
        self._ack = -1  # our end of perf's acknowledgement pipe

    def __enter__(self) -> "PerfRecord":
        control_read, self._control = os.pipe()
        self._ack, ack_write = os.pipe()
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    *("perf", "record", "-F", str(FREQUENCY), "-g", "-e", "cpu-clock"),
                    *("-p", str(self.pid), "-o", str(self.output), "-N", "-B", "-D", "-1"),
                    f"--control=fd:{control_read},{ack_write}",
                ],
                pass_fds=(control_read, ack_write),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        os.close(control_read)
        os.close(ack_write)
        return self

    def enable(self, timeout: float = 10) -> None:
        """Start sampling; returns once perf has acknowledged."""
        os.write(self._control, b"enable\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self._ack], [], [], 0.1)
            if readable and b"ack" in os.read(self._ack, 64):
                return
            if self._process is not None and self._process.poll() is not None:
                break
        raise RuntimeError(f"perf record did not start sampling: {self.log.read_text()}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGINT)
        try:
            code = self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            raise
        finally:
            # Only now: perf 6.1 stops writing its file ("Thread and evlist
            # pollfd index mismatch") if its control pipe hangs up first.
            os.close(self._control)
            os.close(self._ack)
        # perf re-raises the SIGINT it caught after writing its file.
        if code not in (0, -signal.SIGINT) and exc_type is None:
            raise RuntimeError(f"perf record exited with {code}: {self.log.read_text()}")

    def script(self) -> str:
        """The recorded samples as `perf script -F comm,pid,ip,sym` prints them.

        -v: perf 6.1 demangles C++ names with their parameter lists, as
        c++filt (and podflame) print them, only when verbose; it changes
        nothing else on stdout.
        """
        result = subprocess.run(
            ["perf", "script", "-v", "-i", str(self.output), "-F", "comm,pid,ip,sym"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"perf script failed: {result.stderr}")
        return result.stdout
