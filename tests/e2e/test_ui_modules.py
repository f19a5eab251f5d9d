"""The UI's model modules run in Chromium on hand-made inputs with known answers: tree
layout, search coverage, recursion, sandwich, diff shares and colours, selectors, units.

Served by a real (empty) podflame server, imported by the page as ES modules.
"""

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.conftest import running_server

pytestmark = [pytest.mark.browser]

# The example of docs/api.md: total -> main -> a -> b, and main -> c_[k].
EXAMPLE = {
    "unit": "nanoseconds",
    "total": 10,
    "truncated": False,
    "names": ["total", "main", "a", "b", "c_[k]"],
    "nodes": [[-1, 0, 0, 10], [0, 1, 0, 10], [1, 2, 2, 5], [2, 3, 3, 3], [1, 4, 5, 5]],
}
# main -> a -> a -> b (a recursive) and main -> b -> a: "a" is on two paths.
RECURSIVE = {
    "unit": "nanoseconds",
    "total": 10,
    "truncated": False,
    "names": ["total", "main", "a", "b"],
    "nodes": [
        [-1, 0, 0, 10],
        [0, 1, 0, 10],
        [1, 2, 1, 6],
        [2, 2, 2, 5],
        [3, 3, 3, 3],
        [1, 3, 0, 4],
        [5, 2, 4, 4],
    ],
}


@pytest.fixture(scope="module")
def blank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(tmp_path_factory.mktemp("modules")) as url:
        yield url


def run(page: Page, url: str, body: str, argument: Any = None) -> Any:
    """Evaluate `body` (an async function body with `m` = the modules, `arg`) in the page."""
    page.goto(f"{url}/?query=%7Bpod%3D%22none%22%7D")
    script = f"""async (arg) => {{
        const m = {{}};
        for (const name of ["tree", "colors", "selector", "format", "time", "svg"]) {{
          Object.assign(m, await import(`./${{name}}.js`));
        }}
        {body}
    }}"""
    return page.evaluate(script, argument)


def test_tree_layout_follows_pre_order(blank: str, page: Page) -> None:
    layout = run(
        page,
        blank,
        """const t = m.FlameTree.fromFlamegraph(arg);
        return { x: [...t.x], depth: [...t.depth], end: [...t.end], max: t.maxDepth,
                 found: t.find(["main", "c_[k]"]), path: t.pathNames(3),
                 deepest: t.find(["main", "nope"]), sub: t.subtreeDepth(4) };""",
        EXAMPLE,
    )
    assert layout["x"] == [0, 0, 0, 0, 5]  # children start at the left; c_[k] after a
    assert layout["depth"] == [0, 1, 2, 3, 2]
    assert layout["end"] == [5, 5, 4, 4, 5]
    assert layout["max"] == 3
    assert layout["found"] == 4 and layout["deepest"] == 1
    assert layout["path"] == ["main", "a", "b"]
    assert layout["sub"] == 2


def test_search_counts_nested_matches_once(blank: str, page: Page) -> None:
    matched = run(
        page,
        blank,
        """const t = m.FlameTree.fromFlamegraph(arg);
        const r = t.match((name) => name === "a");
        return { count: r.count, covered: r.covered, share: r.share, mask: [...r.mask] };""",
        RECURSIVE,
    )
    assert matched["mask"] == [0, 0, 1, 1, 0, 0, 1]
    assert matched["count"] == 3
    assert matched["covered"] == 6 + 4  # the outer a (6) and the a under b (4); not the inner
    assert matched["share"] == 1.0


def test_function_totals_count_recursion_once(blank: str, page: Page) -> None:
    rows = run(
        page,
        blank,
        """const t = m.FlameTree.fromFlamegraph(arg);
        return Object.fromEntries(t.functionTotals().map((r) => [r.name, [r.self, r.total]]));""",
        RECURSIVE,
    )
    assert rows == {"main": [0, 10], "a": [1 + 2 + 4, 6 + 4], "b": [3, 3 + 4]}


def test_sandwich_merges_callers_and_callees(blank: str, page: Page) -> None:
    halves = run(
        page,
        blank,
        """const t = m.FlameTree.fromFlamegraph(arg);
        const { callers, callees } = t.sandwich("a");
        const rows = (tree) => [...Array(tree.size).keys()].map(
          (i) => [tree.pathNames(i).join(";"), tree.self[i], tree.total[i]]);
        return { callers: rows(callers), callees: rows(callees), root: callers.nameOf(0) };""",
        RECURSIVE,
    )
    assert halves["root"] == "a"
    # Callers, reversed paths: a <- main (6), a <- b <- main (4).
    assert halves["callers"] == [["", 0, 10], ["b", 0, 4], ["b;main", 4, 4], ["main", 6, 6]]
    # Callees: a's own subtrees merged (the inner a stays below the outer one).
    assert halves["callees"] == [["", 1 + 4, 10], ["a", 2, 5], ["a;b", 3, 3]]


def test_diff_shares_and_colours(blank: str, page: Page) -> None:
    diff = {
        "unit": "nanoseconds",
        "left_total": 10,
        "right_total": 2,
        "truncated": False,
        "names": ["total", "main", "a", "b", "c_[k]"],
        "nodes": [
            [-1, 0, 0, 10, 0, 2],
            [0, 1, 0, 10, 0, 2],
            [1, 2, 2, 5, 0, 1],
            [2, 3, 3, 3, 1, 1],
            [1, 4, 5, 5, 1, 1],
        ],
    }
    result = run(
        page,
        blank,
        """const t = m.DiffTree.fromDiff(arg);
        const rg = m.diffPalette("rg"), cb = m.diffPalette("cb");
        const colors = m.diffColors(t);
        return { delta: [...Array(t.size).keys()].map((i) => t.delta(i)),
                 width: [...t.total], colors: [...colors], levels: rg.length,
                 grew: rg[colors[3]], grewCb: cb[colors[3]], shrank: rg[colors[4]],
                 neutral: rg[m.DIFF_LEVELS], small: m.diffColorIndex(0.0004),
                 tenth: m.diffColorIndex(0.001), big: m.diffColorIndex(-0.5),
                 changes: Object.fromEntries(
                   t.functionChanges().map((r) => [r.name, r.change])) };""",
        diff,
    )
    assert result["delta"] == pytest.approx([0, 0, 0, 0.2, 0])  # b: 30 % -> 50 %
    assert result["width"] == pytest.approx([1, 1, 0.5, 0.4, 0.5])  # mean of the shares
    assert result["levels"] == 21
    assert result["colors"][:3] == [10, 10, 10] and result["colors"][4] == 10
    assert result["grew"] == "rgb(214, 39, 40)"  # +20 pp: the strongest red
    assert result["grewCb"] == "rgb(213, 94, 0)"  # orange in the colour-blind-safe palette
    assert result["neutral"] == "rgb(200, 200, 206)"
    assert result["small"] == 10  # below 0.05 pp: unchanged
    assert 10 < result["tenth"] < 15 and result["big"] == 0
    assert result["changes"]["b"] == pytest.approx(0.2)


def test_selectors_read_and_write(blank: str, page: Page) -> None:
    result = run(
        page,
        blank,
        """return {
          parsed: m.parseSelector(
            '{namespace="shop", pod=~"api-.*" , comm!=`sh`, x!~\\'a\\\\"b\\'}'),
          empty: [m.parseSelector(""), m.parseSelector("{}")],
          bad: ["{pod=}", "pod=\\"x\\"", "{pod=\\"x\\"", "{pod=\\"x\\"} extra"]
            .map(m.parseSelector),
          written: m.formatSelector([{ name: "pod", op: "=", value: 'a"b\\\\c' }]),
          value: m.equalityValue(m.parseSelector('{pod=~"x", pod="y"}'), "pod"),
        };""",
    )
    assert result["parsed"] == [
        {"name": "namespace", "op": "=", "value": "shop"},
        {"name": "pod", "op": "=~", "value": "api-.*"},
        {"name": "comm", "op": "!=", "value": "sh"},
        {"name": "x", "op": "!~", "value": 'a"b'},
    ]
    assert result["empty"] == [[], []]
    assert result["bad"] == [None, None, None, None]
    assert result["written"] == '{pod="a\\"b\\\\c"}'
    assert result["value"] == "y"


def test_units_ticks_and_times(blank: str, page: Page) -> None:
    result = run(
        page,
        blank,
        """return {
          ns: [5, 1500, 2.5e6, 1.5e9, 90e9, 7200e9].map(m.formatNanoseconds),
          bytes: m.formatBytes(3 * 1024 * 1024), pct: [0.5, 0.0123, 0.0004].map(m.formatPercent),
          pp: [0.403, -0.0123, 0].map(m.formatPoints),
          ticks: [m.niceTicks(96.5, 4), m.niceTicks(100, 4), m.niceTicks(0)],
          times: ["now", "now-1h", "now-2d", "1700000000", "2024-05-01T12:00:00Z", "junk"]
            .map((t) => m.resolveTime(t, 1e6)),
          step: m.stepFor("0", "3600", 60),
        };""",
    )
    assert result["ns"] == ["5 ns", "1.5 µs", "2.5 ms", "1.5 s", "1.5 min", "2 h"]
    assert result["bytes"] == "3 MiB"
    assert result["pct"] == ["50 %", "1.23 %", "0.04 %"]
    assert result["pp"] == ["+40.3 pp", "\N{MINUS SIGN}1.23 pp", "±0 pp"]
    assert result["ticks"] == [[0, 25, 50, 75, 100], [0, 25, 50, 75, 100], [0]]
    assert result["times"] == [1e6, 1e6 - 3600, 1e6 - 172800, 1.7e9, 1714564800, None]
    assert result["step"] == 60
