"""The web UI in headless Chromium: drawing a 50,000-node flame graph, hovering over it,
and the weight of the page's own assets.

A real `podflame server` on embedded chDB stores two generated profiles whose flame graphs
have 50,000 nodes below the root (agent-style batches through HTTP: a random recursive
tree of function calls). In one, self values are heavy-tailed like real profiles, so most
subtrees are narrower than a pixel and skipped; in the other every node has the same self
value, so many more frames are wide enough to draw. The Explore page asks for them with
max_nodes above that, in Debian's Chromium driven by Playwright. Timings are taken inside
the page with the Performance API, median of REPEATS runs:

- render: from the server's response text (fetched beforehand, not timed) to pixels:
  JSON.parse, the typed-array tree and its layout, colours, culling of sub-pixel subtrees,
  the fills and labels, and a one-pixel read-back that makes the canvas rasterize
  everything it queued;
- redraw: the same tree drawn again (what a resize, search or zoom costs);
- hover: a mousemove dispatched on the canvas over a drawn frame at least 2 px wide (mouse
  coordinates are whole pixels), until its handler returns: hit test, outline on the
  overlay canvas, tooltip text and position (a layout). The test checks it hit that frame.

Both at device pixel ratio 1 and 2 (a HiDPI screen fills four times the pixels).
Assets: the files the page loads from ui/, uncompressed, as served.

Run alone: `python -m benchmarks.ui`.
"""

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
from playwright.sync_api import Page, sync_playwright

from tests.conftest import running_server
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
NODES = 50_000
REPEATS = 15
HOVERS = 300
VIEWPORT = {"width": 1600, "height": 1000}
PERIOD_NS = 10_101_010  # 99 Hz
GOALS = {"render_ms": 100.0, "hover_ms": 16.0, "assets_kb": 300.0}


def generate_stacks(nodes: int, equal: bool, seed: int = 11) -> list[tuple[list[str], int]]:
    """A random recursive call tree of `nodes` nodes; one stack per node, root first."""
    rng = random.Random(seed)
    names = [f"pkg{i % 40}.mod{i % 700}.fn_{i}" for i in range(6000)]
    paths: list[list[str]] = [[]]
    children: list[set[str]] = [set()]
    while len(paths) <= nodes:
        parent = rng.randrange(len(paths))
        name = rng.choice(names)
        if name in children[parent]:
            continue
        children[parent].add(name)
        paths.append([*paths[parent], name])
        children.append(set())
    if equal:
        return [(path, PERIOD_NS) for path in paths[1:]]
    # Pareto self values: a few hot paths, a long tail of tiny frames, as real profiles.
    return [(path, int(rng.paretovariate(1.1) * PERIOD_NS)) for path in paths[1:]]


def ingest(url: str, pod: str, stacks: list[tuple[list[str], int]]) -> None:
    now = time.time_ns()
    batch = {
        "batch_id": uuid.uuid4().hex,
        "profile_type": "cpu",
        "period": PERIOD_NS,
        "start_time_ns": now - 10 * 10**9,
        "end_time_ns": now,
        "stacks": [path for path, _ in stacks],
        "series": [
            {
                "labels": {"namespace": "bench", "pod": pod, "comm": "big"},
                "samples": [{"stack": i, "value": value} for i, (_, value) in enumerate(stacks)],
            }
        ],
    }
    response = httpx.post(f"{url}/api/v1/ingest", content=json.dumps(batch), timeout=300)
    response.raise_for_status()


# Runs in the page: times render, redraw and hover with performance.now().
MEASURE = """
async ({ repeats, hovers }) => {
  const { FlameTree } = await import("./tree.js");
  const view = window.podflame.view("explore");
  const params = new URLSearchParams(location.search);
  const response = await fetch(`api/v1/flamegraph?${new URLSearchParams({
    query: params.get("query"), from: "now-1h", max_nodes: params.get("nodes") })}`);
  const text = await response.text();
  let json;
  const ctx = view.renderer.canvas.getContext("2d");
  const flush = () => ctx.getImageData(0, 0, 1, 1);
  const render = [], redraw = [], hover = [];
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    json = JSON.parse(text);
    view.setData(FlameTree.fromFlamegraph(json));
    flush();
    render.push(performance.now() - start);
    await new Promise(requestAnimationFrame);
    const again = performance.now();
    view.draw();
    flush();
    redraw.push(performance.now() - again);
    await new Promise(requestAnimationFrame);
  }
  const canvas = view.renderer.canvas;
  const box = canvas.getBoundingClientRect();
  const drawn = view.renderer.frames();
  // Mouse coordinates are whole pixels: hover frames a pointer can land on.
  const targets = drawn.filter((frame) => frame.width >= 2);
  for (let i = 0; i < hovers; i++) {
    const frame = targets[Math.floor((i * targets.length) / hovers)];
    const event = new MouseEvent("mousemove", {
      bubbles: true,
      clientX: box.left + frame.x + frame.width / 2,
      clientY: box.top + frame.y + frame.height / 2,
    });
    const start = performance.now();
    canvas.dispatchEvent(event);
    hover.push(performance.now() - start);
    if (view.hovered !== frame.node) throw new Error(`hovered ${view.hovered}, not ${frame.node}`);
    if (i % 20 === 0) await new Promise(requestAnimationFrame);
  }
  return {
    nodes: json.nodes.length - 1, truncated: json.truncated, drawn: drawn.length,
    canvas: [canvas.width, canvas.height], render, redraw, hover,
  };
}
"""


@dataclass(frozen=True)
class Figures:
    profile: str  # "tailed" or "equal"
    ratio: int
    nodes: int
    drawn: int
    canvas: tuple[int, int]
    render: list[float]
    redraw: list[float]
    hover: list[float]


def measure(page: Page, url: str, profile: str, ratio: int) -> Figures:
    state = {"query": f'{{pod="{profile}"}}', "nodes": str(NODES + 1000)}
    page.goto(f"{url}/?{urlencode(state)}")
    page.wait_for_function(
        "document.body.dataset.pending === '0' &&"
        " document.querySelector('[data-panel=explore]')?.dataset.state === 'ready'",
        timeout=120_000,
    )
    result = page.evaluate(MEASURE, {"repeats": REPEATS, "hovers": HOVERS})
    assert not result["truncated"] and result["nodes"] >= NODES, result["nodes"]
    return Figures(
        profile, ratio, result["nodes"], result["drawn"], tuple(result["canvas"]),
        result["render"], result["redraw"], result["hover"],
    )  # fmt: skip


def asset_bytes(page: Page, url: str) -> dict[str, int]:
    """Bytes of each file the page loaded from ui/ (not the API), as served."""
    page.goto(f"{url}/?query=%7Bpod%3D%22none%22%7D")
    page.wait_for_function("document.body.dataset.pending === '0'", timeout=60_000)
    entries = page.evaluate(
        "performance.getEntriesByType('resource').map(e => [e.name, e.decodedBodySize])"
    )
    loaded = {name.removeprefix(url): size for name, size in entries if "/api/" not in name}
    loaded["/ (index.html)"] = len(httpx.get(f"{url}/", timeout=30).content)
    return loaded


PROFILES = ("tailed", "equal")


def run(directory: Path) -> list[str]:
    with running_server(directory) as url:
        for profile in PROFILES:
            ingest(url, profile, generate_stacks(NODES, equal=profile == "equal"))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            figures = []
            for profile in PROFILES:
                for ratio in (1, 2):
                    page = browser.new_page(viewport=VIEWPORT, device_scale_factor=ratio)
                    figures.append(measure(page, url, profile, ratio))
                    page.close()
            page = browser.new_page(viewport=VIEWPORT)
            assets = asset_bytes(page, url)
            browser.close()
    return report(figures, assets)


def _p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def report(figures: list[Figures], assets: dict[str, int]) -> list[str]:
    first = figures[0]
    lines = [
        f"Headless Chromium ({CHROMIUM}, software rendering), viewport {VIEWPORT['width']}x"
        f"{VIEWPORT['height']}; two generated profiles of {first.nodes:,} nodes below the root",
        "(random call trees) served by a real `podflame server` and drawn by the Explore page:",
        "*tailed* has Pareto self values like real profiles, *equal* the same self value",
        f"everywhere (more frames wide enough to draw). Medians of {REPEATS} renders and {HOVERS}",
        "hovers, measured in the page with performance.now(); a render starts from the",
        "response text (JSON.parse, tree, layout, drawing) and ends with a pixel read-back",
        "that forces rasterization. DPR: device pixel ratio (2 = HiDPI, four times the pixels).",
        "",
        "| measure | goal | DPR 1 | DPR 2 | |",
        "|---|---|---|---|---|",
    ]
    for profile in PROFILES:
        pair = [f for f in figures if f.profile == profile]
        render = [statistics.median(f.render) for f in pair]
        redraw = [statistics.median(f.redraw) for f in pair]
        hover = [statistics.median(f.hover) for f in pair]
        hover95 = [_p(f.hover, 0.95) for f in pair]
        lines += [
            f"| Render {pair[0].nodes:,} nodes, {profile} (median) | ≤ 100 ms |"
            f" {render[0]:.1f} ms | {render[1]:.1f} ms | {_verdict(max(render), 'render_ms')} |",
            f"| Redraw, {profile} (median) | | {redraw[0]:.1f} ms | {redraw[1]:.1f} ms | |",
            f"| Hover update, {profile} (median) | ≤ 16 ms | {hover[0]:.2f} ms |"
            f" {hover[1]:.2f} ms | {_verdict(max(hover), 'hover_ms')} |",
            f"| Hover update, {profile} (p95) | ≤ 16 ms | {hover95[0]:.2f} ms |"
            f" {hover95[1]:.2f} ms | {_verdict(max(hover95), 'hover_ms')} |",
        ]
    total_kb = sum(assets.values()) / 1000
    lines += [
        f"| Page assets (uncompressed) | ≤ 300 KB | {total_kb:.1f} KB | |"
        f" {_verdict(total_kb, 'assets_kb')} |",
        "",
    ]
    for profile in PROFILES:
        one = next(f for f in figures if f.profile == profile and f.ratio == 1)
        lines.append(
            f"- {profile}: {one.drawn:,} of {one.nodes + 1:,} frames drawn (the rest are "
            f"sub-pixel subtrees, skipped whole); canvas {one.canvas[0]}x{one.canvas[1]} px at"
            f" DPR 1; slowest render {max(one.render):.1f} ms, slowest hover "
            f"{max(one.hover):.2f} ms."
        )
    largest = sorted(assets.items(), key=lambda item: -item[1])[:3]
    lines.append(
        f"- Assets: {len(assets)} files, no dependencies; largest "
        + ", ".join(f"{name.lstrip('/')} {size / 1000:.1f} KB" for name, size in largest)
        + "."
    )
    return lines


def _verdict(value: float, goal: str) -> str:
    return "met" if value <= GOALS[goal] else "NOT met"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="podflame-bench-ui-") as tmp:
        print("\n".join(run(Path(tmp))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
