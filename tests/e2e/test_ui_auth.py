"""Bearer tokens in the browser: a server started with --tokens-file answers 401/403; the
page says so in words, asks for a token, keeps it in localStorage and sends it."""

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import running_server
from tests.e2e.browser import open_page, screenshot, wait_for_panel

pytestmark = [pytest.mark.browser]

QUERY_TOKEN = "query-token-0123456789"
INGEST_TOKEN = "ingest-token-0123456789"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path = tmp_path_factory.mktemp("auth")
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            [
                {"name": "reader", "token": QUERY_TOKEN, "scopes": ["query"]},
                {"name": "agent", "token": INGEST_TOKEN, "scopes": ["ingest"]},
            ]
        )
    )
    with running_server(tmp_path, extra=["--tokens-file", str(tokens)]) as url:
        store_one_batch(url)
        yield url


def store_one_batch(url: str) -> None:
    """A tiny profile, so a query with the right token shows a graph."""
    now = time.time_ns()
    batch = {
        "batch_id": "ui-auth-0000000001",
        "profile_type": "cpu",
        "period": 10_000_000,
        "start_time_ns": now - 10**10,
        "end_time_ns": now,
        "stacks": [["main", "serve"]],
        "series": [{"labels": {"pod": "api-1"}, "samples": [{"stack": 0, "value": 30_000_000}]}],
    }
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}"}
    response = httpx.post(f"{url}/api/v1/ingest", json=batch, headers=headers, timeout=30)
    assert response.status_code == 200, response.text


def test_missing_token_is_asked_for_then_sent(guarded: str, page: Page) -> None:
    open_page(page, guarded)
    prompt = page.locator("#auth")
    expect(prompt).to_be_visible()
    expect(prompt.locator("#auth-reason")).to_contain_text("needs a token (401)")
    expect(page.locator("#auth-token")).to_be_focused()
    wait_for_panel(page, "explore", "error")
    error = page.locator("#view-explore .message-error")
    expect(error).to_contain_text("This server needs a token")
    screenshot(page, "token-prompt")

    page.locator("#auth-token").fill(QUERY_TOKEN)
    page.get_by_role("button", name="Use token").click()
    expect(prompt).to_be_hidden()
    wait_for_panel(page, "explore")
    assert page.evaluate("localStorage.getItem('podflame.token')") == QUERY_TOKEN
    names = {frame["name"] for frame in page.evaluate("window.podflame.frames('explore')")}
    assert {"main", "serve"} <= names

    page.reload()  # the token is remembered
    wait_for_panel(page, "explore")
    expect(prompt).to_be_hidden()


def test_token_without_the_scope_is_refused_readably(guarded: str, page: Page) -> None:
    open_page(page, guarded)
    page.evaluate(f"localStorage.setItem('podflame.token', '{INGEST_TOKEN}')")
    page.reload()
    expect(page.locator("#auth-reason")).to_contain_text(re.compile(r"refused \(403\).*query"))
    wait_for_panel(page, "explore", "error")
    expect(page.locator("#view-explore .message-error")).to_contain_text("may not read this")

    page.get_by_role("button", name="Forget token").click()
    assert page.evaluate("localStorage.getItem('podflame.token')") is None
    expect(page.locator("#auth-reason")).to_contain_text("401")


def test_token_applies_to_exports(guarded: str, page: Page) -> None:
    open_page(page, guarded)
    page.evaluate(f"localStorage.setItem('podflame.token', '{QUERY_TOKEN}')")
    page.reload()
    wait_for_panel(page, "explore")
    with page.expect_download() as download:
        page.get_by_role("button", name="Folded").click()
    assert Path(download.value.path()).read_text().strip() == "main;serve 30000000"
