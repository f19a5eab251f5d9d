"""Debian's Chromium driven by Playwright, and helpers to read the page's flame graphs.

The graphs are drawn on canvases; tests read what was drawn from the page's test hook
(window.podflame.frames) and act with real mouse and keyboard events at those places.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
VIEWPORT = {"width": 1280, "height": 900}


class Frame(TypedDict):
    node: int
    name: str
    depth: int
    x: float
    y: float
    width: float
    height: float
    self: float
    total: float
    delta: float | None  # a diff's change of share (right minus left)
    color: str
    searched: bool
    chosen: bool


@pytest.fixture(scope="session")
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
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def open_page(page: Page, url: str, **state: str) -> None:
    page.goto(f"{url}/?{urlencode(state)}" if state else f"{url}/")


def wait_for_panel(page: Page, panel: str, state: str = "ready") -> None:
    """Wait until no request is in flight and a flame panel (explore, compare, network)
    is in `state` (ready, empty, error). Actions start their requests synchronously, so
    after one returns this waits for its answers, not for what was there before."""
    page.wait_for_function(
        """([panel, state]) => document.body.dataset.pending === "0" &&
            document.querySelector(`[data-panel="${panel}"]`)?.dataset.state === state""",
        arg=[panel, state],
        timeout=30_000,
    )


def frames(page: Page, graph: str) -> list[Frame]:
    result: list[Frame] = page.evaluate("(id) => window.podflame.frames(id)", graph)
    return result


def frame_named(page: Page, graph: str, name: str) -> Frame:
    drawn = frames(page, graph)
    found = [frame for frame in drawn if frame["name"] == name]
    assert found, f"no {name!r} frame in {graph}: {sorted({f['name'] for f in drawn})}"
    return max(found, key=lambda frame: frame["width"])


def frame_point(page: Page, graph: str, frame: Frame) -> tuple[float, float]:
    """Page coordinates of a frame's centre."""
    box = page.locator(f'canvas[data-graph="{graph}"]').bounding_box()
    assert box is not None
    return box["x"] + frame["x"] + frame["width"] / 2, box["y"] + frame["y"] + frame["height"] / 2


def root_width(page: Page, graph: str) -> float:
    return max(frame["width"] for frame in frames(page, graph) if frame["depth"] == 0)


def rgb(color: str) -> tuple[int, int, int]:
    """Parse the page's "rgb(r, g, b)" or "#rrggbb" colours."""
    if color.startswith("#"):
        return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)
    red, green, blue = (int(part) for part in color[color.index("(") + 1 : -1].split(","))
    return red, green, blue


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
