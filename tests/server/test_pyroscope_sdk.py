"""A real Pyroscope SDK (pyroscope-io, Python) pushing to a real `podflame server`."""

import importlib.util
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import running_server

# The function name must come back from the server: py-spy reads it from the interpreter.
PROGRAM = textwrap.dedent(
    """
    import sys, time
    import pyroscope

    pyroscope.configure(
        application_name="sdk-test",
        server_address=sys.argv[1],
        sample_rate=100,
        tags={"team": "perf"},
    )

    def podflame_sdk_burn(seconds):
        end = time.monotonic() + seconds
        total = 0
        while time.monotonic() < end:
            total += sum(range(1000))
        return total

    podflame_sdk_burn(3)
    pyroscope.shutdown()  # flushes the last profile
    """
)


@pytest.fixture(scope="module")
def sdk_available() -> None:
    if importlib.util.find_spec("pyroscope") is None:
        if os.environ.get("CI"):
            pytest.fail("pyroscope-io is required in CI (pip install pyroscope-io)")
        pytest.skip("pyroscope-io is not installed")


def test_python_sdk_profile_shows_up(sdk_available: None, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(PROGRAM)
    with running_server(tmp_path) as url:
        run = subprocess.run(
            [sys.executable, str(script), url], capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        stacks = _wait_for_stacks(url, '{service_name="sdk-test", team="perf"}')
        burning = {stack: value for stack, value in stacks.items() if "podflame_sdk_burn" in stack}
        assert burning, stacks
        # About 3 s of CPU at 100 Hz (each sample is 10 ms), loosely: CI machines are noisy.
        assert 0.5e9 < sum(burning.values()) < 5e9
        assert all(stack.split(";")[-1] != "" for stack in stacks)
        types = {item["name"]: item["unit"] for item in _get(url, "/api/v1/profile-types")}
        assert types["process_cpu"] == "nanoseconds"
        # The SDK's OpenTelemetry-style labels, sanitized to podflame's label syntax.
        scoped = _wait_for_stacks(url, '{otel_scope_name=~".*pyroscope.*"}')
        assert scoped == stacks


def _get(url: str, path: str, **params: str) -> list[dict[str, str]]:
    response = httpx.get(url + path, params=params, timeout=10)
    assert response.status_code == 200, response.text
    result: list[dict[str, str]] = response.json()
    return result


def _wait_for_stacks(url: str, query: str, timeout: float = 30) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(
            url + "/api/v1/export",
            params={"type": "process_cpu", "query": query, "from": "now-10m"},
            timeout=10,
        )
        if response.status_code == 200 and response.text:
            stacks = (line.rsplit(" ", 1) for line in response.text.splitlines())
            return {stack: int(value) for stack, value in stacks}
        if time.monotonic() > deadline:
            pytest.fail(
                f"no process_cpu profile for {query}: {response.status_code} {response.text}"
            )
        time.sleep(0.5)
