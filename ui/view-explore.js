// Explore: one selection's timeline, flame graph, top functions and sandwich view.
import { isAbort } from "./api.js";
import { describeFrame, rateDescriber, valueLabel } from "./describe.js";
import { el } from "./dom.js";
import { FlamePanel } from "./flame-panel.js";
import { FlameView } from "./flame-view.js";
import { formatPercent, formatTimestamp, formatValue } from "./format.js";
import { QueryBar } from "./query-bar.js";
import { errorMessage, fieldErrorTitle, message } from "./status.js";
import { SortableTable } from "./table.js";
import { resolveRange } from "./time.js";
import { TimelineChart } from "./timeline.js";
import { FlameTree } from "./tree.js";

const DATA_KEYS = ["type", "query", "from", "until", "nodes"];
const PANEL_KEYS = ["focus", "search", "fn", "orient"];
const QUERY_KEYS = { query: "query", from: "from", until: "until" };

export class ExploreView {
  constructor({ api, store, typePicker }) {
    this.api = api;
    this.store = store;
    this.typePicker = typePicker;
    this.tree = null;
    this.bar = new QueryBar({ api, store, keys: QUERY_KEYS, title: "Selection", name: "explore" });
    this.summary = el("p", { className: "summary", role: "status" });
    this.timeline = new TimelineChart({
      onSelect: (from, until) => store.update({ from: String(from), until: String(until), focus: "" }),
    });
    this.panel = new FlamePanel({
      store,
      api,
      id: "explore",
      label: "Flame graph",
      describe: (...args) => describeFrame(store.get("type"))(...args),
      exportParams: () => this.params(),
      onError: (error) => this.showError(error),
    });
    this.top = new SortableTable({
      caption: "Top functions",
      columns: this.topColumns(),
      sortKey: "self",
      rowKey: (row) => row.name,
      onChoose: (row) => store.update({ fn: store.get("fn") === row.name ? "" : row.name }),
      emptyText: "No functions.",
    });
    this.sandwich = new SandwichView({ store, onClose: () => store.update({ fn: "" }) });
    const form = el(
      "form",
      { className: "query-form", "aria-label": "Explore selection" },
      el("div", { className: "form-row" }, typePicker.element),
      this.bar.element,
      el("div", { className: "form-actions" }, el("button", { type: "submit", className: "primary" }, "Show")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!store.update({ ...this.bar.patch(), focus: "" })) this.load();
    });
    this.element = el(
      "section",
      { id: "view-explore", className: "view", "aria-labelledby": "tab-explore" },
      form,
      this.summary,
      this.timeline.element,
      el("div", { className: "explore-body" }, this.panel.element, el("aside", { className: "top-column" }, this.top.element)),
      this.sandwich.element,
    );
  }

  params() {
    const { type, query, from, until } = this.store.state;
    return { type, query, from, until };
  }

  topColumns() {
    const unit = () => this.tree?.unit ?? "nanoseconds";
    const share = (value) => (this.topTotal ? value / this.topTotal : 0);
    const both = (value) => `${formatValue(value, unit())} · ${formatPercent(share(value))}`;
    return [
      { key: "name", label: "Function", numeric: false, format: (r) => r.name },
      { key: "self", label: "Self", format: (r) => both(r.self) },
      { key: "total", label: "Total", format: (r) => both(r.total) },
    ];
  }

  // Called when the view is shown and on every state change while it is.
  update(state, changed) {
    this.typePicker.sync(state);
    if (changed === null || DATA_KEYS.some((key) => changed.has(key))) {
      this.bar.sync(state);
      this.load();
      return;
    }
    if (PANEL_KEYS.some((key) => changed.has(key))) this.applyPanel(state, changed);
  }

  applyPanel(state, changed) {
    this.panel.sync(state, changed);
    if (!changed.has("fn")) return;
    this.top.setActive(state.fn);
    this.sandwich.show(this.tree, state.fn, state.type);
  }

  async load() {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    const state = this.store.state;
    const params = this.params();
    const signal = controller.signal;
    this.bar.clearErrors();
    this.element.setAttribute("aria-busy", "true");
    this.element.dataset.state = "loading";
    const results = await Promise.allSettled([
      this.api.json("flamegraph", { ...params, max_nodes: state.nodes }, { signal }),
      this.api.json("top", { ...params, limit: 1000 }, { signal }),
      this.api.json("timeline", params, { signal }),
    ]);
    if (controller.signal.aborted) return;
    this.element.removeAttribute("aria-busy");
    const failure = results.find((r) => r.status === "rejected" && !isAbort(r.reason));
    if (failure) {
      this.showError(failure.reason);
      return;
    }
    const [graph, top, timeline] = results.map((r) => r.value);
    this.showTimeline(timeline, state);
    this.showGraph(graph, state);
    this.topTotal = top.total;
    this.top.setRows(top.functions);
    this.top.setActive(state.fn);
    this.sandwich.show(this.tree, state.fn, state.type);
  }

  showGraph(graph, state) {
    const start = performance.now();
    this.tree = FlameTree.fromFlamegraph(graph);
    performance.clearMeasures("podflame:tree-build");
    performance.measure("podflame:tree-build", { start });
    if (graph.total === 0) {
      this.summary.textContent = "";
      this.element.dataset.state = "empty";
      const { start: from, end: until } = resolveRange(state.from, state.until);
      const range = from && until ? ` between ${formatTimestamp(from)} and ${formatTimestamp(until)}` : "";
      this.panel.showMessage(
        message(
          "empty",
          "No samples for this selection",
          `Nothing matched ${state.query || "{}"} for ${state.type}${range}. Try a longer time range or a broader selector.`,
        ),
      );
      return;
    }
    const truncated = graph.truncated
      ? ` Small frames were merged into "other" to keep ${graph.nodes.length} nodes.`
      : "";
    this.summary.textContent = `${valueLabel(state.type)}: ${formatValue(graph.total, graph.unit)} in ${graph.nodes.length} frames.${truncated}`;
    this.panel.setTree(this.tree);
    this.element.dataset.state = "ready";
  }

  showTimeline(timeline, state) {
    const { start, end } = resolveRange(state.from, state.until);
    this.timeline.setData({
      points: timeline.points,
      step: timeline.step,
      start: start ?? timeline.points[0]?.[0] ?? 0,
      end: end ?? Date.now() / 1000,
      describe: rateDescriber(state.type, timeline.unit, timeline.step),
      label: `${valueLabel(state.type)} over time`,
    });
  }

  showError(error) {
    if (isAbort(error)) return;
    this.element.removeAttribute("aria-busy");
    this.element.dataset.state = "error";
    this.summary.textContent = "";
    this.tree = null;
    this.top.setRows([]);
    this.timeline.setData({ points: [], step: 1, start: 0, end: 0, describe: String, label: "" });
    this.sandwich.show(null, "", "");
    if (this.bar.showError(error, QUERY_KEYS)) {
      const title = fieldErrorTitle(error);
      this.panel.showMessage(message("error", title, "Fix the selection above to see a flame graph."), "error");
    } else {
      this.panel.showMessage(errorMessage(error), "error");
    }
  }

  focusSearch() {
    this.panel.focusSearch();
  }
}

// A function's callers (above, drawn root-at-bottom so they stack upward) and callees.
class SandwichView {
  constructor({ store, onClose }) {
    this.heading = el("h2", { id: "sandwich-heading" }, "Sandwich");
    const zoomLocally = (view) => (path) => view.setFocusPath(path);
    this.callers = new FlameView({
      id: "sandwich-callers",
      label: "Callers",
      describe: (...args) => describeFrame(store.get("type"))(...args),
      onZoom: (path) => zoomLocally(this.callers)(path),
    });
    this.callees = new FlameView({
      id: "sandwich-callees",
      label: "Callees",
      describe: (...args) => describeFrame(store.get("type"))(...args),
      onZoom: (path) => zoomLocally(this.callees)(path),
    });
    this.callers.setOrientation("flame");
    this.note = el("p", { className: "summary" });
    const close = el("button", { type: "button", title: "Close the sandwich view" }, "Close");
    close.addEventListener("click", onClose);
    this.element = el(
      "section",
      { className: "sandwich", "aria-labelledby": "sandwich-heading", hidden: true },
      el("div", { className: "section-head" }, this.heading, close),
      this.note,
      el("h3", {}, "Callers"),
      this.callers.element,
      el("h3", {}, "Callees"),
      this.callees.element,
    );
  }

  show(tree, fn, type) {
    if (!tree || !fn || tree.total[0] === 0) {
      this.element.hidden = true;
      return;
    }
    const { callers, callees } = tree.sandwich(fn);
    this.element.hidden = false;
    this.heading.textContent = `Sandwich: ${fn}`;
    if (callers.total[0] === 0 && callees.total[0] === 0) {
      this.note.textContent = `${fn} is not in the drawn graph (it may have been merged into "other").`;
    } else {
      const share = formatPercent(callees.total[0] / tree.total[0]);
      this.note.textContent = `${fn}: ${formatValue(callees.total[0], tree.unit)} of ${valueLabel(type)} (${share}). Callers above, callees below.`;
    }
    this.callers.setData(callers);
    this.callees.setData(callees);
  }
}
