"""The install's tokens, end to end: the real server reads the tokens file exactly as the
base's Secret carries it, and the agents' token (their Secret) may ingest but not read,
the people's token may read but not ingest."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import running_server
from tests.deploy.install import Build
from tests.deploy.test_manifests import secret

INGEST = "/api/v1/ingest"
QUERY = "/api/v1/labels"


@pytest.fixture(scope="module")
def tokens(build: Build, install: Path) -> dict[str, str]:
    """The agents' token and the tokens file from the rendered Secrets; the people's token
    from the file they are told to use."""
    resources = build("base")
    return {
        "agent": secret(resources, "podflame-agent-token")["token"].decode(),
        "tokens.json": secret(resources, "podflame-server-tokens")["tokens.json"].decode(),
        "query": (install / "base" / "secrets" / "query-token").read_text(),
    }


@pytest.fixture(scope="module")
def server(tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("install-tokens")
    (folder / "tokens.json").write_text(tokens["tokens.json"])
    with running_server(folder, extra=["--tokens-file", str(folder / "tokens.json")]) as url:
        yield url


def batch() -> dict[str, object]:
    now = time.time_ns()
    return {
        "batch_id": f"deploy-{now}",
        "period": 1,
        "start_time_ns": now - 10**9,
        "end_time_ns": now,
        "stacks": [["main"]],
        "series": [{"labels": {"node": "n1", "comm": "x", "pid": "1"}, "samples": []}],
    }


def call(server: str, path: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    if path == INGEST:
        return httpx.post(server + path, json=batch(), headers=headers, timeout=30).status_code
    return httpx.get(server + path, headers=headers, timeout=30).status_code


def test_the_agents_token_ingests_and_reads_nothing(server: str, tokens: dict[str, str]) -> None:
    assert call(server, INGEST, tokens["agent"]) < 300
    assert call(server, QUERY, tokens["agent"]) == 403


def test_the_query_token_reads_and_ingests_nothing(server: str, tokens: dict[str, str]) -> None:
    assert call(server, QUERY, tokens["query"]) == 200
    assert call(server, INGEST, tokens["query"]) == 403


def test_any_other_token_is_refused(server: str) -> None:
    assert call(server, QUERY, "x" * 43) == 401
    assert call(server, INGEST, "x" * 43) == 401
