// The selection's value over time as an area chart; dragging across it selects a range.
import { el } from "./dom.js";
import { formatClock, formatTimestamp } from "./format.js";
import { niceTicks, svg, timeTicks } from "./svg.js";

const HEIGHT = 90;
const PAD = { left: 72, right: 12, top: 8, bottom: 20 };

export class TimelineChart {
  // rate(value, step) -> [number, text]: what the y axis shows per point.
  constructor({ onSelect }) {
    this.onSelect = onSelect;
    this.points = [];
    this.chart = svg("svg", { class: "timeline", height: HEIGHT, role: "img" });
    this.element = el(
      "figure",
      { className: "timeline-figure" },
      this.chart,
      el("figcaption", { className: "sr-only" }, "Drag across the chart to select a time range."),
    );
    this.bindDrag();
    new ResizeObserver(() => this.draw()).observe(this.element);
  }

  // points: [[startSeconds, value]]; describe(value) -> text for the y axis.
  setData({ points, step, start, end, describe, label }) {
    Object.assign(this, { points, step, start, end, describe, label });
    this.draw();
  }

  get width() {
    return this.element.clientWidth || 600;
  }

  x(t) {
    return PAD.left + ((t - this.start) / (this.end - this.start)) * (this.width - PAD.left - PAD.right);
  }

  timeAt(px) {
    const fraction = (px - PAD.left) / (this.width - PAD.left - PAD.right);
    return this.start + Math.max(0, Math.min(1, fraction)) * (this.end - this.start);
  }

  draw() {
    const width = this.width;
    this.chart.setAttribute("width", width);
    this.chart.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
    this.element.hidden = !this.points.length;
    if (!this.points.length || !(this.end > this.start)) {
      this.chart.replaceChildren();
      return;
    }
    const max = Math.max(...this.points.map(([, v]) => v));
    const ticks = niceTicks(max, 3);
    const top = ticks[ticks.length - 1] || 1;
    const y = (v) => HEIGHT - PAD.bottom - (v / top) * (HEIGHT - PAD.top - PAD.bottom);
    const children = [];
    for (const tick of ticks) {
      children.push(svg("line", { class: "grid", x1: PAD.left, x2: width - PAD.right, y1: y(tick), y2: y(tick) }));
      children.push(svg("text", { class: "axis", x: PAD.left - 6, y: y(tick) + 4, "text-anchor": "end" }, this.describe(tick)));
    }
    const { ticks: times } = timeTicks(this.start, this.end, Math.max(2, Math.floor(width / 110)));
    const withDate = this.end - this.start > 86400;
    for (const t of times) {
      children.push(svg("text", { class: "axis", x: this.x(t), y: HEIGHT - 5, "text-anchor": "middle" }, formatClock(t, withDate)));
    }
    children.push(svg("path", { class: "area", d: this.areaPath(y) }));
    this.selection = svg("rect", { class: "drag", y: PAD.top, height: HEIGHT - PAD.top - PAD.bottom, width: 0, visibility: "hidden" });
    children.push(this.selection);
    this.chart.replaceChildren(...children);
    this.chart.setAttribute(
      "aria-label",
      `${this.label}: ${this.points.length} points of ${this.step} s from ${formatTimestamp(this.start)} to ` +
        `${formatTimestamp(this.end)}, peak ${this.describe(max)}. Drag to select a range.`,
    );
  }

  areaPath(y) {
    const base = y(0);
    let d = `M${this.x(this.points[0][0]).toFixed(1)},${base}`;
    for (const [t, v] of this.points) {
      const x0 = this.x(Math.max(t, this.start)).toFixed(1);
      const x1 = this.x(Math.min(t + this.step, this.end)).toFixed(1);
      const top = y(v).toFixed(1);
      d += `L${x0},${top}L${x1},${top}`;
    }
    return `${d}L${this.x(Math.min(this.points.at(-1)[0] + this.step, this.end)).toFixed(1)},${base}Z`;
  }

  bindDrag() {
    let anchor = null;
    const local = (event) => event.clientX - this.chart.getBoundingClientRect().left;
    this.chart.addEventListener("pointerdown", (event) => {
      if (!this.points.length) return;
      anchor = local(event);
      this.chart.setPointerCapture(event.pointerId);
    });
    this.chart.addEventListener("pointermove", (event) => {
      if (anchor === null) return;
      const x = local(event);
      this.selection.setAttribute("x", Math.min(anchor, x));
      this.selection.setAttribute("width", Math.abs(x - anchor));
      this.selection.setAttribute("visibility", "visible");
    });
    this.chart.addEventListener("pointerup", (event) => {
      if (anchor === null) return;
      const x = local(event);
      const [a, b] = [this.timeAt(Math.min(anchor, x)), this.timeAt(Math.max(anchor, x))];
      anchor = null;
      this.selection.setAttribute("visibility", "hidden");
      if (b - a >= 1 && Math.abs(this.x(b) - this.x(a)) >= 4) {
        this.onSelect(Math.floor(a), Math.ceil(b));
      }
    });
  }
}
