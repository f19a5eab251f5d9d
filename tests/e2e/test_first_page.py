"""The first page in a real browser: Debian's Chromium driven by Playwright."""

import os
import shutil
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.conftest import Profiled

pytestmark = [pytest.mark.browser, pytest.mark.bpf]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        message = f"{CHROMIUM} is missing: scripts/install.sh dev installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    yield page
    page.close()


def hovered_names(page: Page) -> set[str]:
    """Hover over a grid of points on the canvas and collect the tooltip's function names."""
    canvas = page.locator("#flamegraph")
    box = canvas.bounding_box()
    assert box is not None and box["height"] > 0
    names = set()
    for row in range(int(box["height"] // 18)):
        for step in range(40):
            page.mouse.move(box["x"] + (step + 0.5) * box["width"] / 40, box["y"] + row * 18 + 9)
            tooltip = page.locator("#tooltip")
            if tooltip.is_visible():
                names.add(tooltip.inner_text().split("\n")[0])
    return names


def test_flame_graph_shows_the_workload(profiled: Profiled, page: Page) -> None:
    query = urlencode({"query": f'{{pid="{profiled.pid}"}}', "from": "now-1h"})
    page.goto(f"{profiled.url}/?{query}")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Total')")
    names = hovered_names(page)
    assert {"main", "run", "burn_a", "burn_b", "spin"} <= names, sorted(names)


def test_bad_selector_shows_the_server_error(profiled: Profiled, page: Page) -> None:
    page.goto(f"{profiled.url}/?{urlencode({'query': '{pid=}'})}")
    status = page.locator("#status.error")
    status.wait_for()
    assert "Error 400" in status.inner_text()
    assert "at position" in status.inner_text()
