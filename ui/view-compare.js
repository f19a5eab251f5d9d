// Compare: a baseline and a comparison (two selectors and/or two time ranges) merged in
// one diff flame graph, coloured by the change of each frame's share of its side's total.
import { isAbort } from "./api.js";
import { DIFF_LEVELS, DIFF_SCHEMES, diffColors, diffPalette, levelThreshold, textColors } from "./colors.js";
import { describeDiffFrame } from "./describe.js";
import { el, field, select } from "./dom.js";
import { FlamePanel } from "./flame-panel.js";
import { formatPercent, formatPoints, formatValue } from "./format.js";
import { QueryBar } from "./query-bar.js";
import { errorMessage, fieldErrorTitle, message } from "./status.js";
import { SortableTable } from "./table.js";
import { DiffTree } from "./tree.js";

const DATA_KEYS = ["type", "left", "lfrom", "luntil", "right", "rfrom", "runtil", "nodes"];
const PANEL_KEYS = ["focus", "search", "fn", "orient"];
const LEFT_KEYS = { query: "left", from: "lfrom", until: "luntil" };
const RIGHT_KEYS = { query: "right", from: "rfrom", until: "runtil" };

export class CompareView {
  constructor({ api, store, typePicker }) {
    this.api = api;
    this.store = store;
    this.typePicker = typePicker;
    this.tree = null;
    this.left = new QueryBar({ api, store, keys: LEFT_KEYS, title: "Baseline", name: "left" });
    this.right = new QueryBar({
      api,
      store,
      keys: RIGHT_KEYS,
      title: "Comparison",
      name: "right",
      sameAs: "Same as the baseline",
      inherit: (state) => ({ query: state.left, from: state.lfrom, until: state.luntil }),
    });
    this.summary = el("p", { className: "summary", role: "status" });
    this.palette = select(
      Object.entries(DIFF_SCHEMES).map(([key, scheme]) => [key, scheme.label]),
      { id: "diff-palette" },
    );
    this.palette.addEventListener("change", () => store.update({ palette: this.palette.value }));
    this.legend = el("div", { className: "legend", role: "img" });
    this.panel = new FlamePanel({
      store,
      api,
      id: "compare",
      label: "Diff flame graph",
      describe: (...args) => describeDiffFrame()(...args),
      onError: (error) => this.showError(error),
    });
    this.table = new SortableTable({
      caption: "Functions by change of share",
      columns: this.columns(),
      sortKey: "change",
      rowKey: (row) => row.name,
      onChoose: (row) => store.update({ fn: store.get("fn") === row.name ? "" : row.name }),
      emptyText: "No functions.",
    });
    const form = el(
      "form",
      { className: "query-form", "aria-label": "Compare selections" },
      el("div", { className: "form-row" }, typePicker.element),
      el("div", { className: "sides" }, this.left.element, this.right.element),
      el("div", { className: "form-actions" }, el("button", { type: "submit", className: "primary" }, "Compare")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!store.update({ ...this.left.patch(), ...this.right.patch(), focus: "" })) this.load();
    });
    this.element = el(
      "section",
      { id: "view-compare", className: "view", "aria-labelledby": "tab-compare" },
      form,
      this.summary,
      el("div", { className: "legend-row" }, this.legend, field("Colours", this.palette)),
      this.panel.element,
      this.table.element,
    );
  }

  columns() {
    const unit = () => this.tree?.unit ?? "nanoseconds";
    return [
      { key: "name", label: "Function", numeric: false, format: (r) => r.name },
      { key: "leftShare", label: "Baseline", format: (r) => `${formatPercent(r.leftShare)} (${formatValue(r.leftTotal, unit())})` },
      { key: "rightShare", label: "Comparison", format: (r) => `${formatPercent(r.rightShare)} (${formatValue(r.rightTotal, unit())})` },
      { key: "change", label: "Change", format: (r) => formatPoints(r.change) },
      { key: "magnitude", label: "|Change|", value: (r) => Math.abs(r.change), format: (r) => formatPoints(Math.abs(r.change)).slice(1) },
    ];
  }

  update(state, changed) {
    this.typePicker.sync(state);
    this.palette.value = state.palette;
    if (changed === null || DATA_KEYS.some((key) => changed.has(key))) {
      this.left.sync(state);
      this.right.sync(state);
      this.load();
      return;
    }
    if (changed.has("palette")) this.recolor(state);
    if (PANEL_KEYS.some((key) => changed.has(key))) {
      this.panel.sync(state, changed);
      this.table.setActive(state.fn);
    }
  }

  params(state) {
    const right = this.right.effective(state);
    return {
      type: state.type,
      left: state.left,
      left_from: state.lfrom,
      left_until: state.luntil,
      right: right.query,
      right_from: right.from,
      right_until: right.until,
      max_nodes: state.nodes,
    };
  }

  async load() {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    const state = this.store.state;
    this.left.clearErrors();
    this.right.clearErrors();
    this.element.setAttribute("aria-busy", "true");
    this.element.dataset.state = "loading";
    let diff;
    try {
      diff = await this.api.json("diff", this.params(state), { signal: controller.signal });
    } catch (error) {
      if (!controller.signal.aborted) this.showError(error);
      return;
    }
    if (controller.signal.aborted) return;
    this.element.removeAttribute("aria-busy");
    this.show(diff, state);
  }

  show(diff, state) {
    this.tree = DiffTree.fromDiff(diff);
    const sides = `baseline ${formatValue(diff.left_total, diff.unit)}, comparison ${formatValue(diff.right_total, diff.unit)}`;
    if (diff.left_total === 0 || diff.right_total === 0) {
      const empty = diff.left_total === 0 && diff.right_total === 0 ? "Neither side has" : diff.left_total === 0 ? "The baseline has" : "The comparison has";
      this.summary.textContent = sides;
      this.table.setRows([]);
      this.element.dataset.state = "empty";
      if (diff.left_total === 0 && diff.right_total === 0) {
        this.panel.showMessage(message("empty", `${empty} no samples`, "Pick selectors and time ranges that hold data."));
        return;
      }
      this.panel.showMessage(message("empty", `${empty} no samples`, "A comparison needs data on both sides; check its selector and time range."));
      return;
    }
    this.summary.textContent = `Totals: ${sides}. Widths are the mean of both shares; colours the change of share.`;
    this.recolor(state);
    this.table.setRows(this.tree.functionChanges());
    this.table.setActive(state.fn);
    this.element.dataset.state = "ready";
  }

  recolor(state) {
    const palette = diffPalette(state.palette);
    this.renderLegend(palette, state.palette);
    if (!this.tree || this.element.dataset.state === "empty") return;
    this.panel.setTree(this.tree, { colors: diffColors(this.tree), palette, text: textColors(palette) });
  }

  renderLegend(palette, scheme) {
    const swatches = [];
    for (let index = 0; index < palette.length; index++) {
      const level = index - DIFF_LEVELS;
      const bound = level === 0 ? "unchanged" : `${level < 0 ? "shrank" : "grew"} ≥ ${formatPoints(levelThreshold(Math.abs(level))).slice(1)}`;
      swatches.push(el("span", { className: "swatch", title: bound, style: `background:${palette[index]}` }));
    }
    this.legend.setAttribute("aria-label", `Colour legend: ${DIFF_SCHEMES[scheme].label}; stronger colour, larger change of share, up to 10 pp and beyond`);
    this.legend.replaceChildren(
      el("span", { className: "legend-end" }, "shrank"),
      el("span", { className: "legend-scale" }, swatches),
      el("span", { className: "legend-end" }, "grew"),
      el("span", { className: "legend-note" }, "change of share: 0.1 pp … ≥ 10 pp"),
    );
  }

  showError(error) {
    if (isAbort(error)) return;
    this.element.removeAttribute("aria-busy");
    this.element.dataset.state = "error";
    this.summary.textContent = "";
    this.tree = null;
    this.table.setRows([]);
    const handled = this.left.showError(error, { query: "left", from: "left_from", until: "left_until" }) ||
      this.right.showError(error, { query: "right", from: "right_from", until: "right_until" });
    const title = fieldErrorTitle(error);
    this.panel.showMessage(handled ? message("error", title, "Fix the selection above to compare.") : errorMessage(error), "error");
  }

  focusSearch() {
    this.panel.focusSearch();
  }
}
