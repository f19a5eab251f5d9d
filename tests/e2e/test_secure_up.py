"""`podflame up` with everything on: HTTPS (--tls-cert, --tls-key), the agent verifying
it (--ca-file) and bearer tokens (--tokens-file, --token), profiling a real workload."""

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import PODFLAME, free_port, stop, wait_for_sampling, wait_until_ready
from tests.fixtures import build_burn7030
from tests.server.test_tls import trusting
from tests.tlscerts import make_certificates

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

AGENT_TOKEN = "agent-token-0123456789"
READER_TOKEN = "reader-token-0123456789"


def test_up_over_https_with_tokens(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path / "tls")
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            [
                {"token": AGENT_TOKEN, "scopes": ["ingest"]},
                {"token": READER_TOKEN, "scopes": ["query"]},
            ]
        )
    )
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    workload = build_burn7030(tmp_path / "burn7030")
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [
                *PODFLAME,
                "up",
                "--port",
                str(port),
                "--storage",
                f"chdb://{tmp_path / 'chdb'}",
                "--tls-cert",
                str(certificates.cert),
                "--tls-key",
                str(certificates.key),
                "--ca-file",
                str(certificates.ca),
                "--tokens-file",
                str(tokens),
                "--token",
                AGENT_TOKEN,
                "--frequency",
                "99",
                "--interval",
                "1",
                "--metrics-port",
                "0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_ready(url + "/readyz", up, verify=trusting(certificates.ca))
            wait_for_sampling(up, log_path)
            burn = subprocess.run([str(workload), "1.5"], capture_output=True, check=True)
            assert burn.returncode == 0
            params = {"query": '{comm="burn7030"}', "from": "now-5m"}
            headers = {"Authorization": f"Bearer {READER_TOKEN}"}

            def read_top() -> httpx.Response:
                return httpx.get(
                    url + "/api/v1/top",
                    params=params,
                    headers=headers,
                    verify=trusting(certificates.ca),
                    timeout=30,
                )

            # Until a drain or two have shipped the samples (or a minute has passed).
            deadline = time.monotonic() + 60
            while not shows_the_workload(top := read_top()) and time.monotonic() < deadline:
                time.sleep(0.2)
            anonymous = httpx.get(url + "/api/v1/top", verify=trusting(certificates.ca))
        finally:
            code = stop(up)
    assert top.status_code == 200, top.text
    names = function_names(top)
    assert {"burn_a", "burn_b", "spin"} <= names, (sorted(names), log_path.read_text()[-2000:])
    assert anonymous.status_code == 401
    assert code == 0, log_path.read_text()[-2000:]
    assert "cannot ship" not in log_path.read_text()


def function_names(top: httpx.Response) -> set[str]:
    return {item["name"] for item in top.json()["functions"]}


def shows_the_workload(top: httpx.Response) -> bool:
    return top.status_code == 200 and {"burn_a", "burn_b", "spin"} <= function_names(top)
