"""The Compare view in Chromium: two versions of a deployment with a known difference.

checkout v1 spends 70 % of its CPU time in burn_a and 30 % in burn_b, v2 the opposite:
burn_a's share shrinks by about 40 points (green, or blue in the colour-blind-safe
palette) and burn_b's grows as much (red, or orange); main and run stay at (about) 100 %.
"""

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.browser import (
    Frame,
    frame_named,
    frame_point,
    open_page,
    rgb,
    screenshot,
    wait_for_panel,
)
from tests.e2e.conftest import Shop

pytestmark = [pytest.mark.browser, pytest.mark.bpf]

V1 = '{workload="checkout", version="v1"}'
V2 = '{workload="checkout", version="v2"}'
MINUS = "\N{MINUS SIGN}"  # the page writes negative changes with a real minus


def colour(page: Page, name: str) -> tuple[int, int, int]:
    return rgb(frame_named(page, "compare", name)["color"])


def open_diff(page: Page, shop: Shop, **extra: str) -> None:
    open_page(page, shop.url, view="compare", left=V1, right=V2, **extra)
    wait_for_panel(page, "compare")


def diff_colour(page: Page, delta: float) -> tuple[int, int, int]:
    """The red/green palette's colour for a change of share, from the page's own module."""
    color: str = page.evaluate(
        """async (delta) => {
            const m = await import("./colors.js");
            return m.diffPalette("rg")[m.diffColorIndex(delta)];
        }""",
        delta,
    )
    return rgb(color)


def assert_about_unchanged(page: Page, frame: Frame) -> None:
    """Every sample passes through `frame` on both sides, except the odd one the kernel
    takes in execve before main ([unknown];...;__x64_sys_execve_[k]): real CPU time of
    the pod, outside main. One such sample of about 300 moves the share by 0.33 pp,
    which the log scale shows as a pale tint (level 3 of 10), so the colour is checked
    against the frame's real change, and the change against a few samples' worth."""
    assert frame["delta"] is not None and abs(frame["delta"]) < 0.01, frame
    assert rgb(frame["color"]) == diff_colour(page, frame["delta"]), frame


def test_diff_of_two_versions_shows_the_expected_colours(shop: Shop, page: Page) -> None:
    open_diff(page, shop, lfrom="now-15m")
    red, green, blue = colour(page, "burn_b")
    assert red > green + 80 and red > blue + 80, (red, green, blue)  # grew: strong red
    red, green, blue = colour(page, "burn_a")
    assert green > red + 50 and green > blue + 50, (red, green, blue)  # shrank: green
    assert_about_unchanged(page, frame_named(page, "compare", "run"))
    legend = page.locator("#view-compare .legend")
    expect(legend).to_have_attribute("aria-label", re.compile("red grew, green shrank"))
    expect(legend.locator(".swatch")).to_have_count(21)

    page.mouse.move(*frame_point(page, "compare", frame_named(page, "compare", "burn_b")))
    tooltip = page.locator('[data-panel="compare"] .tooltip')
    expect(tooltip).to_be_visible()
    change = re.search(r"Change: \+([\d.]+) pp", tooltip.inner_text())
    assert change, tooltip.inner_text()
    assert float(change[1]) == pytest.approx(40, abs=20)
    screenshot(page, "compare")


def test_colour_blind_safe_palette(shop: Shop, page: Page) -> None:
    open_diff(page, shop)
    page.get_by_label("Colours").select_option("cb")
    expect(page).to_have_url(re.compile("palette=cb"))
    red, green, blue = colour(page, "burn_b")
    assert red > blue + 120 and red > green + 40, (red, green, blue)  # orange
    red, green, blue = colour(page, "burn_a")
    assert blue > red + 80, (red, green, blue)  # blue
    expect(page.locator("#view-compare .legend")).to_have_attribute(
        "aria-label", re.compile("orange grew, blue shrank")
    )
    screenshot(page, "compare-colour-blind")


def test_change_table_sorts_by_change(shop: Shop, page: Page) -> None:
    open_diff(page, shop)
    table = page.locator("#view-compare table")
    names = table.locator("tbody tr td:first-child").all_inner_texts()
    changes = table.locator("tbody tr td:nth-child(4)").all_inner_texts()
    rows = list(zip(names, changes, strict=True))
    assert names[0] == "burn_b" and changes[0].startswith("+"), rows
    assert names[-1] == "burn_a" and changes[-1].startswith(MINUS), rows
    table.get_by_role("button", name="Change", exact=True).click()
    expect(table.locator("tbody tr").first.locator("td").first).to_have_text("burn_a")
    expect(table.locator("th[aria-sort=ascending]")).to_have_text(re.compile("Change"))

    table.get_by_role("button", name="burn_a", exact=True).click()
    expect(page).to_have_url(re.compile("fn=burn_a"))
    assert frame_named(page, "compare", "burn_a")["chosen"]


def test_two_time_ranges_of_one_selector(shop: Shop, page: Page) -> None:
    """Before/after: the comparison side takes its own range; an empty side says so."""
    open_page(page, shop.url, view="compare", left=V1, right="", rfrom="now-7d", runtil="now-1d")
    wait_for_panel(page, "compare", "empty")
    expect(page.locator('[data-panel="compare"] .message-empty')).to_contain_text(
        "The comparison has no samples"
    )
    right_range = page.locator("#view-compare fieldset").nth(1).locator(".time-range select")
    expect(right_range).to_have_value("custom")
    right_range.select_option("")  # back to the baseline's range: the same data
    wait_for_panel(page, "compare")
    red, green, blue = colour(page, "burn_a")
    assert max(red, green, blue) - min(red, green, blue) < 15, (red, green, blue)


def test_bad_selector_names_its_side(shop: Shop, page: Page) -> None:
    open_page(page, shop.url, view="compare", left=V1, right="{pod=~}")
    wait_for_panel(page, "compare", "error")
    right = page.locator("#view-compare fieldset").nth(1)
    expect(right.locator("> .field-error")).to_contain_text("invalid 'right'")
    expect(right.locator(".selector-input")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#view-compare fieldset").nth(0).locator("> .field-error")).to_be_hidden()
