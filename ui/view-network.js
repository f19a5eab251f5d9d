// Network: latency percentiles per system call over time (per pod, or per another label),
// the peers each workload talks to, and the net_wait flame graph (time spent waiting in
// network calls, by the code that made them). Endpoints: docs/api.md, network section.
import { isAbort } from "./api.js";
import { describeFrame } from "./describe.js";
import { el, field, select } from "./dom.js";
import { FlamePanel } from "./flame-panel.js";
import { formatCount, formatMicroseconds } from "./format.js";
import { LineChart } from "./line-chart.js";
import { QueryBar } from "./query-bar.js";
import { errorMessage, fieldErrorTitle, message } from "./status.js";
import { SortableTable } from "./table.js";
import { resolveRange, stepFor } from "./time.js";
import { FlameTree } from "./tree.js";

const DATA_KEYS = ["query", "from", "until", "group", "nodes"];
const PANEL_KEYS = ["focus", "search", "fn", "orient"];
const QUERY_KEYS = { query: "query", from: "from", until: "until" };
const GROUPS = [
  ["pod", "Pod"],
  ["workload", "Workload"],
  ["container", "Container"],
  ["namespace", "Namespace"],
  ["comm", "Process name"],
];
const PERCENTILES = [
  ["p50", "p50 (median)"],
  ["p90", "p90"],
  ["p99", "p99"],
];
const NONE = "(none)";

export class NetworkView {
  constructor({ api, store }) {
    this.api = api;
    this.store = store;
    this.latency = null;
    this.bar = new QueryBar({ api, store, keys: QUERY_KEYS, title: "Selection", name: "network" });
    this.group = select(GROUPS, { id: "network-group" });
    this.group.addEventListener("change", () => store.update({ group: this.group.value, series: "" }));
    this.percentile = select(PERCENTILES, { id: "network-percentile" });
    this.percentile.addEventListener("change", () => store.update({ pct: this.percentile.value }));
    this.chartTitle = el("h3", {}, "");
    this.chart = new LineChart({ label: "Latency" });
    this.latencyMessage = el("div", { className: "message-host" });
    this.latencyTable = new SortableTable({
      caption: "Latency per system call",
      columns: latencyColumns(() => this.store.get("group")),
      sortKey: "count",
      rowKey: (row) => row.key,
      onChoose: (row) => store.update({ series: row.group }),
      emptyText: "No network calls.",
    });
    this.peersMessage = el("div", { className: "message-host" });
    this.peersTable = new SortableTable({
      caption: "Peers: where connections go",
      columns: peerColumns(),
      sortKey: "count",
      rowKey: (row) => row.key,
      emptyText: "No connections.",
    });
    this.panel = new FlamePanel({
      store,
      api,
      id: "network",
      label: "Network wait flame graph",
      describe: (...args) => describeFrame("net_wait")(...args),
      exportParams: () => ({ ...this.params(), type: "net_wait" }),
      onError: (error) => this.panel.showMessage(errorMessage(error), "error"),
    });
    const form = el(
      "form",
      { className: "query-form", "aria-label": "Network selection" },
      this.bar.element,
      el("div", { className: "form-actions" }, el("button", { type: "submit", className: "primary" }, "Show")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!store.update({ ...this.bar.patch(), focus: "" })) this.load();
    });
    this.latencySection = el(
      "section",
      { className: "card", "aria-labelledby": "latency-heading", dataset: { section: "latency" } },
      el("div", { className: "section-head" }, el("h2", { id: "latency-heading" }, "Latency of network system calls"),
        el("div", { className: "form-row" }, field("Group by", this.group), field("Percentile", this.percentile))),
      this.latencyMessage,
      this.chartTitle,
      this.chart.element,
      this.latencyTable.element,
    );
    this.peersSection = el(
      "section",
      { className: "card", "aria-labelledby": "peers-heading", dataset: { section: "peers" } },
      el("h2", { id: "peers-heading" }, "Peers"),
      this.peersMessage,
      this.peersTable.element,
    );
    this.element = el(
      "section",
      { id: "view-network", className: "view", "aria-labelledby": "tab-network" },
      form,
      this.latencySection,
      this.peersSection,
      el(
        "section",
        { className: "card", "aria-labelledby": "netwait-heading" },
        el("h2", { id: "netwait-heading" }, "Time waiting on the network, by code path (net_wait)"),
        this.panel.element,
      ),
    );
  }

  params() {
    const { query, from, until } = this.store.state;
    return { query, from, until };
  }

  update(state, changed) {
    this.group.value = state.group;
    this.percentile.value = state.pct;
    if (changed === null || DATA_KEYS.some((key) => changed.has(key))) {
      this.bar.sync({ ...state, type: "net_wait" });
      this.load();
      return;
    }
    if (changed.has("series") || changed.has("pct")) this.showChart(state);
    if (PANEL_KEYS.some((key) => changed.has(key))) this.panel.sync(state, changed);
  }

  async load() {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    const signal = controller.signal;
    const state = this.store.state;
    const params = this.params();
    this.bar.clearErrors();
    this.element.setAttribute("aria-busy", "true");
    this.element.dataset.state = "loading";
    const step = stepFor(state.from, state.until, 60);
    const [latency, peers, graph] = await Promise.allSettled([
      this.api.json("network/latency", { ...params, group_by: `${state.group},syscall`, step }, { signal }),
      this.api.json("network/peers", params, { signal }),
      this.api.json("flamegraph", { ...params, type: "net_wait", max_nodes: state.nodes }, { signal }),
    ]);
    if (signal.aborted) return;
    this.element.removeAttribute("aria-busy");
    this.element.dataset.state = "ready";
    this.settle(latency, (value) => this.showLatency(value, state), this.latencyMessage);
    this.settle(peers, (value) => this.showPeers(value), this.peersMessage);
    this.settle(graph, (value) => this.showGraph(value, state), null);
  }

  // Shows a result, or its error in place (a selector error next to the selector).
  settle(result, show, host) {
    if (result.status === "fulfilled") {
      show(result.value);
      return;
    }
    const error = result.reason;
    if (isAbort(error)) return;
    this.element.dataset.state = "error";
    const inSelector = this.bar.showError(error, QUERY_KEYS);
    const node = inSelector
      ? message("error", fieldErrorTitle(error), "Fix the selection above.")
      : error.status === 404
        ? message("error", "This server does not serve network data", `${error.path} answered 404 (${error.message}). The server needs podflame's network endpoints.`)
        : errorMessage(error);
    if (host === null) this.panel.showMessage(node, "error");
    else {
      host.replaceChildren(node);
      if (host === this.latencyMessage) {
        this.latency = null;
        this.latencyTable.element.hidden = true;
        this.showChart(this.store.state);
      } else this.peersTable.element.hidden = true;
    }
  }

  showLatency(latency, state) {
    this.latency = latency;
    const label = state.group;
    const rows = latency.groups.map((group) => {
      const value = group.labels[label] || NONE;
      return { key: `${value}\u0000${group.labels.syscall}`, group: value, syscall: group.labels.syscall, ...group };
    });
    this.latencyTable.setRows(rows);
    this.latencyTable.element.hidden = rows.length === 0;
    this.latencyMessage.replaceChildren(
      rows.length
        ? ""
        : message("empty", "No network calls in this selection", "Nothing matched this selector and time range. Try a longer range."),
    );
    this.showChart(state);
  }

  showChart(state) {
    const groups = this.latency?.groups ?? [];
    const label = state.group;
    const chosen = state.series || (groups[0] ? groups[0].labels[label] || NONE : "");
    const mine = groups.filter((g) => (g.labels[label] || NONE) === chosen);
    const key = `${state.pct}_us`;
    const { start, end } = resolveRange(state.from, state.until);
    this.latencyTable.setActive("");
    for (const row of this.latencyTable.body.rows) {
      row.classList.toggle("active", Boolean(chosen) && Boolean(row.dataset.key?.startsWith(`${chosen}\u0000`)));
    }
    this.chart.element.hidden = mine.length === 0;
    this.chartTitle.textContent = mine.length ? `${state.pct} latency of ${label} ${chosen}, per system call` : "";
    this.chart.setData({
      title: `${state.pct} latency of ${chosen}`,
      start,
      end,
      describe: formatMicroseconds,
      series: mine.map((g) => ({
        name: g.labels.syscall,
        points: (g.points ?? []).map((p) => [p.timestamp / 1000, p[key] ?? null]),
      })),
    });
  }

  showPeers(result) {
    const rows = result.peers.map((peer, index) => ({ key: String(index), ...peer }));
    this.peersTable.setRows(rows);
    this.peersTable.element.hidden = rows.length === 0;
    this.peersMessage.replaceChildren(
      rows.length ? "" : message("empty", "No connections in this selection", "No connect calls were recorded for this selector and time range."),
    );
  }

  showGraph(graph, state) {
    if (graph.total === 0) {
      this.panel.showMessage(message("empty", "No network wait samples", `Nothing matched ${state.query || "{}"} for net_wait in this time range.`));
      return;
    }
    this.panel.setTree(FlameTree.fromFlamegraph(graph));
  }

  focusSearch() {
    this.panel.focusSearch();
  }
}

function latencyColumns(groupLabel) {
  return [
    { key: "group", label: "Group", numeric: false, format: (r) => `${groupLabel()}: ${r.group}` },
    { key: "syscall", label: "System call", numeric: false, format: (r) => r.syscall },
    { key: "count", label: "Calls", format: (r) => formatCount(r.count) },
    { key: "errors", label: "Errors", format: (r) => formatCount(r.errors) },
    { key: "eagain", label: "EAGAIN", format: (r) => formatCount(r.eagain) },
    { key: "p50_us", label: "p50", value: (r) => r.p50_us ?? -1, format: (r) => formatMicroseconds(r.p50_us) },
    { key: "p90_us", label: "p90", value: (r) => r.p90_us ?? -1, format: (r) => formatMicroseconds(r.p90_us) },
    { key: "p99_us", label: "p99", value: (r) => r.p99_us ?? -1, format: (r) => formatMicroseconds(r.p99_us) },
    { key: "max_us", label: "Max", value: (r) => r.max_us ?? -1, format: (r) => formatMicroseconds(r.max_us) },
  ];
}

function labelsText(labels) {
  if (!labels || Object.keys(labels).length === 0) return "unknown";
  if (labels.pod) return `${labels.namespace ? `${labels.namespace}/` : ""}${labels.pod}`;
  return Object.values(labels).filter(Boolean).join(" ");
}

function errorsText(errors) {
  const entries = Object.entries(errors ?? {});
  return entries.length ? entries.map(([name, count]) => `${name} ${count}`).join(", ") : "0";
}

function peerColumns() {
  const errorCount = (r) => Object.values(r.errors ?? {}).reduce((a, b) => a + b, 0);
  return [
    { key: "source", label: "Source", numeric: false, value: (r) => labelsText(r.source), format: (r) => labelsText(r.source) },
    { key: "destination", label: "Destination", numeric: false, value: (r) => labelsText(r.destination), format: (r) => labelsText(r.destination) },
    { key: "address", label: "Address", numeric: false, value: (r) => `${r.address}:${r.port}`, format: (r) => `${r.address}:${r.port}` },
    { key: "count", label: "Connects", format: (r) => formatCount(r.count) },
    { key: "errors", label: "Errors", value: errorCount, format: (r) => errorsText(r.errors) },
    { key: "in_progress", label: "In progress", format: (r) => formatCount(r.in_progress ?? 0) },
    { key: "p50_us", label: "p50", value: (r) => r.p50_us ?? -1, format: (r) => formatMicroseconds(r.p50_us) },
    { key: "p99_us", label: "p99", value: (r) => r.p99_us ?? -1, format: (r) => formatMicroseconds(r.p99_us) },
  ];
}

