"""The Explore view in Chromium against a server holding real profiles of three pods.

Pick a pod with the label pickers and see its functions; hover, zoom, search, the top
table, the sandwich view, exports, themes, keyboard shortcuts, errors and empty states.
"""

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.browser import (
    frame_named,
    frame_point,
    frames,
    open_page,
    root_width,
    screenshot,
    wait_for_panel,
)
from tests.e2e.conftest import Shop

pytestmark = [pytest.mark.browser, pytest.mark.bpf]

BURN_FUNCTIONS = {"main", "run", "burn_a", "burn_b", "spin"}
# About 300 samples per pod: a share's standard error is under 3 points; 10 is > 3 sigma.
SAMPLING_NOISE = 0.10
V1_SELECTOR = '{version="v1"}'


def pick(page: Page, label: str, value: str) -> None:
    """Choose a value in a label picker once its options have loaded."""
    picker = page.locator(f'#view-explore select[data-label="{label}"]')
    expect(picker.locator(f'option[value="{value}"]')).to_have_count(1, timeout=15_000)
    picker.select_option(value)


def open_pod(page: Page, shop: Shop) -> None:
    open_page(page, shop.url, query=f'{{pod="{shop.v1.pod}"}}')
    wait_for_panel(page, "explore")


def zoom_path(page: Page) -> list[str]:
    path: list[str] = page.evaluate("window.podflame.focus('explore')")
    return path


def share(page: Page, name: str) -> float:
    return frame_named(page, "explore", name)["width"] / root_width(page, "explore")


def test_picking_a_pod_shows_its_functions(shop: Shop, page: Page) -> None:
    open_page(page, shop.url, **{"from": "now-15m"})
    wait_for_panel(page, "explore")
    pick(page, "namespace", "batch")
    expect(page).to_have_url(re.compile(r"namespace%3D%22batch%22"))
    wait_for_panel(page, "explore")
    expect(page.locator("#view-explore .selector-input")).to_have_value('{namespace="batch"}')
    names = {frame["name"] for frame in frames(page, "explore")}
    # The report pod reads /dev/zero: its time is in the kernel's read_zero.
    assert "read_zero_[k]" in names and "burn_a" not in names, sorted(names)

    pick(page, "namespace", "shop")
    expect(page).to_have_url(re.compile(r"namespace%3D%22shop%22"))
    pick(page, "workload", "checkout")
    pick(page, "pod", shop.v1.pod)
    pick(page, "container", "app")
    wait_for_panel(page, "explore")
    expect(page.locator("#view-explore .selector-input")).to_have_value(
        f'{{namespace="shop", workload="checkout", pod="{shop.v1.pod}", container="app"}}'
    )
    names = {frame["name"] for frame in frames(page, "explore")}
    assert names >= BURN_FUNCTIONS, sorted(names)
    assert "read_zeros" not in names, sorted(names)
    assert share(page, "burn_a") == pytest.approx(0.70, abs=SAMPLING_NOISE)
    assert share(page, "burn_b") == pytest.approx(0.30, abs=SAMPLING_NOISE)
    # Each picker lists only the values under the choices before it.
    pods = page.locator('#view-explore select[data-label="pod"] option').all_inner_texts()
    assert shop.report.pod not in pods and shop.v2.pod in pods, pods
    screenshot(page, "explore")


def test_hover_tooltip_shows_values_and_shares(shop: Shop, page: Page) -> None:
    open_pod(page, shop)
    page.mouse.move(*frame_point(page, "explore", frame_named(page, "explore", "burn_a")))
    tooltip = page.locator(".flame-view .tooltip").first
    expect(tooltip).to_be_visible()
    text = tooltip.inner_text()
    assert text.splitlines()[0] == "burn_a"
    found = re.search(r"CPU time: ([\d.,]+) (ms|s) total, ([\d.]+) % of all", text)
    assert found, text
    assert float(found[3]) == pytest.approx(70, abs=100 * SAMPLING_NOISE)
    assert float(found[3]) == pytest.approx(100 * share(page, "burn_a"), abs=0.6)
    assert re.search(r"Self: 0 ns, 0 % of all", text), text


def test_click_zooms_with_breadcrumbs_and_history(shop: Shop, page: Page) -> None:
    open_pod(page, shop)
    page.mouse.click(*frame_point(page, "explore", frame_named(page, "explore", "burn_b")))
    expect(page).to_have_url(re.compile(r"focus=[^&]*main%3Brun%3Bburn_b"))
    assert zoom_path(page)[-3:] == ["main", "run", "burn_b"]
    # The zoomed frame now spans the whole width; its sibling is gone.
    zoomed = frame_named(page, "explore", "burn_b")
    assert zoomed["width"] == pytest.approx(root_width(page, "explore"))
    assert "burn_a" not in {frame["name"] for frame in frames(page, "explore")}
    crumbs = page.locator("#view-explore .breadcrumbs")
    expect(crumbs.locator("[aria-current]")).to_have_text("burn_b")

    crumbs.get_by_role("button", name="run").click()  # zoom out one step
    expect(page).to_have_url(re.compile(r"focus=[^&]*main%3Brun(&|$)"))
    page.go_back()
    expect(page).to_have_url(re.compile(r"focus=[^&]*main%3Brun%3Bburn_b"))
    assert zoom_path(page)[-1] == "burn_b"

    page.locator("body").press("Escape")  # resets the zoom
    expect(page).not_to_have_url(re.compile("focus="))
    assert {"burn_a", "burn_b"} <= {frame["name"] for frame in frames(page, "explore")}
    page.go_back()
    assert zoom_path(page)[-1] == "burn_b"


def test_search_highlights_matches_and_their_share(shop: Shop, page: Page) -> None:
    open_pod(page, shop)
    page.locator("body").press("/")
    search = page.locator("#view-explore .search-input")
    expect(search).to_be_focused()
    page.keyboard.type("burn_b")
    summary = page.locator("#view-explore .match-summary")
    expect(summary).to_contain_text("of the total")
    drawn = frames(page, "explore")
    assert {frame["name"] for frame in drawn if frame["searched"]} == {"burn_b"}
    assert all(not frame["searched"] for frame in drawn if frame["name"] != "burn_b")
    shown = float(re.search(r"([\d.]+) % of the total", summary.inner_text())[1])  # type: ignore[index]
    assert shown == pytest.approx(100 * share(page, "burn_b"), abs=0.6)
    expect(page).to_have_url(re.compile(r"search=burn_b"))

    search.fill("no_such_function")
    expect(summary).to_have_text("No matching frames")


def test_top_table_sorts_and_selects_a_function_for_the_sandwich(shop: Shop, page: Page) -> None:
    open_pod(page, shop)
    table = page.locator("#view-explore .top-column table")
    first = table.locator("tbody tr").first.locator("td").first
    expect(first).to_have_text("spin")  # by self, descending
    table.get_by_role("button", name="Total", exact=True).click()
    expect(table.locator("th[aria-sort=descending]")).to_have_text(re.compile("Total"))
    total_order = table.locator("tbody tr td:first-child").all_inner_texts()
    assert total_order.index("burn_a") < total_order.index("burn_b"), total_order

    table.get_by_role("button", name="burn_b", exact=True).click()
    expect(page).to_have_url(re.compile(r"fn=burn_b"))
    chosen = {frame["name"] for frame in frames(page, "explore") if frame["chosen"]}
    assert chosen == {"burn_b"}
    sandwich = page.locator(".sandwich")
    expect(sandwich).to_be_visible()
    expect(sandwich.locator("h2")).to_have_text("Sandwich: burn_b")
    callers = {frame["name"] for frame in frames(page, "sandwich-callers")}
    callees = {frame["name"] for frame in frames(page, "sandwich-callees")}
    assert {"burn_b", "run", "main"} <= callers and "spin" not in callers, callers
    assert {"burn_b", "spin"} <= callees and "run" not in callees, callees
    # Callers are drawn above the function: its own frame is the bottom row.
    caller_rows = frames(page, "sandwich-callers")
    bottom = max(frame["y"] for frame in caller_rows)
    assert [f["name"] for f in caller_rows if f["y"] == bottom] == ["burn_b"]
    screenshot(page, "sandwich")


def test_orientation_toggle_puts_the_root_at_the_bottom(shop: Shop, page: Page) -> None:
    open_pod(page, shop)
    root = next(frame for frame in frames(page, "explore") if frame["depth"] == 0)
    assert root["y"] == 0
    toggle = page.get_by_role("button", name="Root at bottom")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    drawn = frames(page, "explore")
    root = next(frame for frame in drawn if frame["depth"] == 0)
    assert root["y"] == max(frame["y"] for frame in drawn) > 0
    expect(page).to_have_url(re.compile(r"orient=flame"))


def test_keyboard_moves_between_frames_and_zooms(shop: Shop, page: Page) -> None:
    open_pod(page, shop)
    canvas = page.locator('canvas[data-graph="explore"]')
    canvas.focus()
    live = page.locator('[data-panel="explore"] .flame-view [aria-live]')
    # Down from the root follows the widest child: ... main, run, then burn_a (70 %).
    for _ in range(8):
        canvas.press("ArrowDown")
        if live.inner_text().startswith("burn_a"):
            break
    expect(live).to_contain_text("burn_a")
    canvas.press("ArrowRight")
    expect(live).to_contain_text("burn_b")
    canvas.press("Enter")
    expect(page).to_have_url(re.compile(r"focus=[^&]*main%3Brun%3Bburn_b"))


def test_timeline_drag_selects_a_time_range(shop: Shop, page: Page) -> None:
    open_pod(page, shop)
    chart = page.locator("svg.timeline")
    box = chart.bounding_box()
    assert box is not None
    area = page.locator("svg.timeline path.area")
    expect(area).to_have_count(1)
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, y, steps=5)
    page.mouse.move(box["x"] + box["width"] - 2, y, steps=5)  # the right edge: now
    page.mouse.up()
    expect(page).to_have_url(re.compile(r"from=\d+&until=\d+"))
    expect(page.locator("#view-explore .time-range select")).to_have_value("custom")
    wait_for_panel(page, "explore")
    assert {frame["name"] for frame in frames(page, "explore")} >= BURN_FUNCTIONS
    page.go_back()
    expect(page.locator("#view-explore .time-range select")).to_have_value("now-1h")


def test_exports_download_the_selection(shop: Shop, page: Page) -> None:
    open_pod(page, shop)
    with page.expect_download() as folded:
        page.get_by_role("button", name="Folded").click()
    lines = open(folded.value.path()).read().splitlines()  # noqa: SIM115
    assert any(";main;run;burn_a;spin " in line for line in lines), lines[:5]
    assert not any("read_zeros" in line for line in lines)
    with page.expect_download() as pprof:
        page.get_by_role("button", name="pprof").click()
    assert open(pprof.value.path(), "rb").read(2) == b"\x1f\x8b"  # noqa: SIM115
    with page.expect_download() as speedscope:
        page.get_by_role("button", name="speedscope").click()
    assert '"$schema"' in open(speedscope.value.path()).read()  # noqa: SIM115
    with page.expect_download() as png:
        page.locator("#view-explore").get_by_role("button", name="PNG").click()
    assert open(png.value.path(), "rb").read(8) == b"\x89PNG\r\n\x1a\n"  # noqa: SIM115


def test_bad_selector_shows_the_servers_error_where_it_is(shop: Shop, page: Page) -> None:
    open_page(page, shop.url)
    wait_for_panel(page, "explore")
    selector = page.locator("#view-explore .selector-input")
    selector.fill("{pod=}")
    selector.press("Enter")
    error = page.locator("#view-explore .query-bar > .field-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("expected a quoted string")
    expect(error.locator("pre.caret")).to_have_text("{pod=}\n     ^")
    expect(selector).to_have_attribute("aria-invalid", "true")
    wait_for_panel(page, "explore", "error")
    expect(page.locator("#view-explore .message-error")).to_contain_text("Fix the selection")
    screenshot(page, "selector-error")


def test_empty_selection_says_so(shop: Shop, page: Page) -> None:
    open_page(page, shop.url, query='{pod="no-such-pod"}')
    wait_for_panel(page, "explore", "empty")
    empty = page.locator("#view-explore .message-empty")
    expect(empty).to_contain_text("No samples for this selection")


def test_dark_theme(shop: Shop, page: Page) -> None:
    open_pod(page, shop)
    page.get_by_role("button", name="Dark theme").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(21, 22, 26)"
    screenshot(page, "explore-dark")
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")  # remembered


def test_slow_queries_show_the_loading_indicator(shop: Shop, page: Page) -> None:
    open_pod(page, shop)
    # The browser's network emulation delays the real server's answers.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    conditions = {
        "offline": False,
        "latency": 1500,
        "downloadThroughput": -1,
        "uploadThroughput": -1,
    }
    cdp.send("Network.emulateNetworkConditions", conditions)
    page.get_by_role("button", name="Show").click()
    loading = page.locator("#loading")
    expect(loading).to_be_visible()
    expect(page.locator("#view-explore")).to_have_attribute("aria-busy", "true")
    expect(loading).to_be_hidden(timeout=30_000)
    expect(page.locator("#view-explore")).not_to_have_attribute("aria-busy", "true")


LABELLED = """() => [...document.querySelectorAll("input, select, button, canvas[tabindex]")]
  .filter((e) => e.getClientRects().length > 0)
  .filter((e) => !(e.labels?.length || e.getAttribute("aria-label") || e.textContent.trim()))
  .map((e) => e.outerHTML.slice(0, 100))"""


@pytest.mark.parametrize("view", ["explore", "compare", "network"])
def test_every_control_is_labelled_and_reachable_by_keyboard(
    shop: Shop, page: Page, view: str
) -> None:
    open_page(page, shop.url, view=view, query=f'{{pod="{shop.v1.pod}"}}', left=V1_SELECTOR)
    page.wait_for_function("document.body.dataset.pending === '0'", timeout=30_000)
    assert page.evaluate(LABELLED) == []
    graph = page.locator(f'canvas[data-graph="{view}"]')
    if graph.is_visible():
        for _ in range(80):
            page.keyboard.press("Tab")
            if page.evaluate(f"document.activeElement.dataset.graph === '{view}'"):
                break
        expect(graph).to_be_focused()
