// A small multi-line chart (SVG): one line per series over time, with a legend.
import { el } from "./dom.js";
import { formatClock } from "./format.js";
import { niceTicks, svg, timeTicks } from "./svg.js";

const HEIGHT = 220;
const PAD = { left: 64, right: 16, top: 10, bottom: 24 };
// Okabe-Ito: distinguishable with the common colour vision deficiencies.
const COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"];

export class LineChart {
  constructor({ label }) {
    this.label = label;
    this.chart = svg("svg", { class: "line-chart", height: HEIGHT, role: "img" });
    this.legend = el("ul", { className: "chart-legend" });
    this.element = el("figure", { className: "line-figure" }, this.chart, this.legend);
    this.series = [];
    new ResizeObserver(() => this.draw()).observe(this.element);
  }

  // series: [{name, points: [[seconds, value | null]]}]; describe(value) -> axis text.
  setData({ series, start, end, describe, title }) {
    Object.assign(this, { series, start, end, describe, title });
    this.draw();
  }

  draw() {
    const width = this.element.clientWidth || 600;
    this.chart.setAttribute("width", width);
    this.chart.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
    const values = this.series.flatMap((s) => s.points.map(([, v]) => v)).filter((v) => v !== null);
    if (!values.length || !(this.end > this.start)) {
      this.chart.replaceChildren();
      this.legend.replaceChildren();
      return;
    }
    const ticks = niceTicks(Math.max(...values), 4);
    const top = ticks.at(-1) || 1;
    const x = (t) => PAD.left + ((t - this.start) / (this.end - this.start)) * (width - PAD.left - PAD.right);
    const y = (v) => HEIGHT - PAD.bottom - (v / top) * (HEIGHT - PAD.top - PAD.bottom);
    const children = [];
    for (const tick of ticks) {
      children.push(svg("line", { class: "grid", x1: PAD.left, x2: width - PAD.right, y1: y(tick), y2: y(tick) }));
      children.push(svg("text", { class: "axis", x: PAD.left - 6, y: y(tick) + 4, "text-anchor": "end" }, this.describe(tick)));
    }
    const withDate = this.end - this.start > 86400;
    for (const t of timeTicks(this.start, this.end, Math.max(2, Math.floor(width / 110))).ticks) {
      children.push(svg("text", { class: "axis", x: x(t), y: HEIGHT - 6, "text-anchor": "middle" }, formatClock(t, withDate)));
    }
    this.series.forEach((series, index) => {
      const color = COLORS[index % COLORS.length];
      let d = "";
      let pen = "M";
      for (const [t, v] of series.points) {
        if (v === null) {
          pen = "M";
          continue;
        }
        d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        pen = "L";
      }
      const dots = series.points
        .filter(([, v]) => v !== null)
        .map(([t, v]) => svg("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5, fill: color }, svg("title", {}, `${series.name}: ${this.describe(v)} at ${formatClock(t, withDate)}`)));
      children.push(svg("g", { class: "series", "data-series": series.name }, svg("path", { d, stroke: color, fill: "none", "stroke-width": 2 }), ...dots));
    });
    this.chart.replaceChildren(...children);
    this.chart.setAttribute("aria-label", `${this.title}: ${this.series.map((s) => s.name).join(", ")}`);
    this.legend.replaceChildren(
      ...this.series.map((series, index) =>
        el("li", {}, el("span", { className: "swatch", style: `background:${COLORS[index % COLORS.length]}` }), series.name),
      ),
    );
  }
}
