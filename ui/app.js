// The first page: one flame graph for a selector and time range.
import { FlameGraph, parseFolded } from "./flamegraph.js";

const $ = (id) => document.getElementById(id);
const status = $("status");
const tooltip = $("tooltip");

function formatNs(ns) {
  if (ns >= 1e9) return `${(ns / 1e9).toFixed(2)} s`;
  return `${(ns / 1e6).toFixed(1)} ms`;
}

function setStatus(text, isError = false) {
  status.textContent = text;
  status.classList.toggle("error", isError);
}

const graph = new FlameGraph($("flamegraph"), {
  onZoom(node) {
    const crumbs = $("breadcrumbs");
    crumbs.replaceChildren();
    const path = [];
    for (let n = node; n; n = n.parent) path.unshift(n);
    for (const n of path) {
      const button = document.createElement("button");
      button.textContent = n.name;
      button.addEventListener("click", () => graph.zoom(n));
      crumbs.append(button, " › ");
    }
  },
});

async function load() {
  const form = new FormData($("query-form"));
  const params = new URLSearchParams({
    query: form.get("query") || "{}",
    from: form.get("from"),
    until: "now",
    type: form.get("type"),
    format: "folded",
  });
  history.replaceState(null, "", `?${params}`);
  setStatus("Loading…");
  let response;
  try {
    response = await fetch(`api/v1/export?${params}`);
  } catch (error) {
    setStatus(`Cannot reach the server: ${error}`, true);
    return;
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const where = body.position === undefined ? "" : ` (at position ${body.position})`;
    setStatus(`Error ${response.status}: ${body.error ?? response.statusText}${where}`, true);
    return;
  }
  const root = parseFolded(await response.text());
  if (root.value === 0) {
    setStatus("No samples for this selector and time range.");
    graph.setData(root);
    return;
  }
  setStatus(`Total ${formatNs(root.value)} of CPU time`);
  graph.setData(root);
}

function restoreFromUrl() {
  const params = new URLSearchParams(location.search);
  if (params.has("query")) $("query").value = params.get("query");
  if (params.has("from")) $("range").value = params.get("from");
}

$("query-form").addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});

const canvas = $("flamegraph");
canvas.addEventListener("click", (event) => {
  const rect = graph.hit(event.clientX, event.clientY);
  if (rect) graph.zoom(rect.node);
});
canvas.addEventListener("mousemove", (event) => {
  const rect = graph.hit(event.clientX, event.clientY);
  if (!rect) {
    tooltip.hidden = true;
    return;
  }
  const { node } = rect;
  const share = ((100 * node.value) / graph.root.value).toFixed(1);
  tooltip.textContent = `${node.name}\ntotal ${formatNs(node.value)} (${share} %), self ${formatNs(node.self)}`;
  tooltip.style.left = `${event.clientX + 12}px`;
  tooltip.style.top = `${event.clientY + 12}px`;
  tooltip.hidden = false;
});
canvas.addEventListener("mouseleave", () => { tooltip.hidden = true; });
window.addEventListener("resize", () => graph.focus && graph.draw());

restoreFromUrl();
load();
