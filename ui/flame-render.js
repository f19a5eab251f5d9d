// Draws a FlameTree on a canvas, and answers "which frame is at this point".
//
// Speed comes from three things: frames narrower than MIN_WIDTH skip their whole
// subtree (pre-order ranges), frames of one colour are filled as one path (few state
// changes), and hovering only redraws a thin overlay canvas, never the graph.
import { HIGHLIGHT, SELECTED } from "./colors.js";

// Mask bits: a frame matching the search, a frame of the chosen function.
export const SEARCHED = 1;
export const CHOSEN = 2;

export const ROW = 18;
const MIN_WIDTH = 0.35; // px
const LABEL_MIN_WIDTH = 24; // px
const FONT = "12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";

export class FlameRenderer {
  constructor(host) {
    this.host = host;
    this.canvas = document.createElement("canvas");
    this.overlay = document.createElement("canvas");
    this.overlay.className = "flame-overlay";
    this.overlay.setAttribute("aria-hidden", "true");
    host.append(this.canvas, this.overlay);
    this.tree = null;
    this.focus = 0;
    this.orientation = "icicle";
    this.mask = null;
    this.drawn = { count: 0, index: new Int32Array(0), x: new Float32Array(0), w: new Float32Array(0) };
    this.width = 0;
    this.rows = 0;
  }

  // colors: palette index per node; palette: CSS colours; text: text colour per palette entry.
  setTree(tree, { colors, palette, text }) {
    this.tree = tree;
    this.colors = colors;
    this.palette = [...palette, HIGHLIGHT, SELECTED];
    this.text = [...text, "#ffffff", "#ffffff"];
    this.base = palette.length; // index of HIGHLIGHT; SELECTED follows
    this.focus = 0;
    this.mask = null;
    this.focusDepth = tree ? tree.subtreeDepth(0) : 0;
  }

  setFocus(node) {
    this.focus = node;
    this.focusDepth = this.tree.subtreeDepth(node);
  }

  setOrientation(orientation) {
    this.orientation = orientation === "flame" ? "flame" : "icicle";
  }

  setMask(mask) {
    this.mask = mask;
  }

  rowY(depth) {
    return (this.orientation === "flame" ? this.rows - 1 - depth : depth) * ROW;
  }

  depthAt(y) {
    const row = Math.floor(y / ROW);
    return this.orientation === "flame" ? this.rows - 1 - row : row;
  }

  render() {
    const start = performance.now();
    const tree = this.tree;
    const width = this.host.clientWidth;
    this.width = width;
    this.rows = tree && tree.total[0] > 0 ? this.focusDepth + 1 : 0;
    const ctx = this.resize(width, this.rows * ROW);
    this.outlineColor = getComputedStyle(this.host).getPropertyValue("--frame-outline").trim() || "#000";
    this.drawn.count = 0;
    if (this.rows === 0) return;
    const buckets = this.palette.map(() => []);
    this.collect(width, buckets);
    this.fill(ctx, buckets);
    this.label(ctx);
    performance.clearMeasures("podflame:flame-render");
    performance.measure("podflame:flame-render", { start, detail: { frames: this.drawn.count } });
  }

  resize(width, height) {
    const ratio = window.devicePixelRatio || 1;
    const pixelsW = Math.round(width * ratio);
    const pixelsH = Math.round(height * ratio);
    for (const canvas of [this.canvas, this.overlay]) {
      if (canvas.width !== pixelsW || canvas.height !== pixelsH) {
        canvas.width = pixelsW;
        canvas.height = pixelsH;
        canvas.style.height = `${height}px`;
      }
    }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    this.overlay.getContext("2d").setTransform(ratio, 0, 0, ratio, 0, 0);
    return ctx;
  }

  ensureDrawnCapacity(n) {
    if (this.drawn.index.length >= n) return;
    const size = Math.max(n, this.drawn.index.length * 2, 1024);
    this.drawn.index = new Int32Array(size);
    this.drawn.x = new Float32Array(size);
    this.drawn.w = new Float32Array(size);
  }

  record(node, x, w, buckets) {
    const d = this.drawn;
    d.index[d.count] = node;
    d.x[d.count] = x;
    d.w[d.count] = w;
    d.count++;
    buckets[this.colorOf(node)].push(node, x, w);
  }

  colorOf(node) {
    const bits = this.mask ? this.mask[node] : 0;
    if (bits & CHOSEN) return this.base + 1;
    if (bits & SEARCHED) return this.base;
    return this.colors[node];
  }

  collect(width, buckets) {
    const { tree, focus } = this;
    const chain = tree.ancestry(focus);
    this.ensureDrawnCapacity(chain.length + (tree.end[focus] - focus));
    for (const node of chain) this.record(node, 0, width, buckets);
    const scale = width / tree.total[focus];
    const origin = tree.x[focus];
    const { total, x, end } = tree;
    for (let i = focus + 1; i < end[focus]; ) {
      const w = total[i] * scale;
      if (w < MIN_WIDTH) {
        i = end[i]; // its children are narrower still
        continue;
      }
      this.record(i, (x[i] - origin) * scale, w, buckets);
      i++;
    }
  }

  fill(ctx, buckets) {
    const depth = this.tree.depth;
    buckets.forEach((frames, color) => {
      if (frames.length === 0) return;
      ctx.fillStyle = this.palette[color];
      ctx.beginPath();
      for (let k = 0; k < frames.length; k += 3) {
        const w = frames[k + 2];
        ctx.rect(frames[k + 1], this.rowY(depth[frames[k]]), w > 3 ? w - 1 : w, ROW - 1);
      }
      ctx.fill();
    });
  }

  label(ctx) {
    const { tree, drawn } = this;
    ctx.font = FONT;
    ctx.textBaseline = "middle";
    const charWidth = ctx.measureText("abcdefghijklmnopqrstuvwxyz_").width / 27;
    let current = "";
    for (let k = 0; k < drawn.count; k++) {
      const w = drawn.w[k];
      if (w < LABEL_MIN_WIDTH) continue;
      const node = drawn.index[k];
      const text = fit(tree.nameOf(node), Math.floor((w - 6) / charWidth));
      if (!text) continue;
      const color = this.text[this.colorOf(node)];
      if (color !== current) ctx.fillStyle = current = color;
      ctx.fillText(text, drawn.x[k] + 3, this.rowY(tree.depth[node]) + ROW / 2);
    }
  }

  // The node drawn at (x, y) in CSS pixels of the canvas, or -1.
  hit(px, py) {
    const { tree, focus } = this;
    if (!tree || this.rows === 0 || px < 0 || px >= this.width) return -1;
    const depth = this.depthAt(py);
    if (depth < 0 || depth >= this.rows) return -1;
    if (depth <= tree.depth[focus]) return tree.ancestry(focus)[depth];
    const scale = this.width / tree.total[focus];
    const value = tree.x[focus] + px / scale;
    let node = focus;
    while (tree.depth[node] < depth) {
      let child = tree.firstChild[node];
      while (child >= 0 && !(tree.x[child] <= value && value < tree.x[child] + tree.total[child])) {
        child = tree.nextSibling[child];
      }
      if (child < 0 || tree.total[child] * scale < MIN_WIDTH) return -1;
      node = child;
    }
    return node;
  }

  // Where a node is drawn, or null when it is not (outside the zoom, or too narrow).
  frameRect(node) {
    const { tree, focus } = this;
    if (!tree || this.rows === 0) return null;
    const y = this.rowY(tree.depth[node]);
    if (node <= focus && tree.ancestry(focus).includes(node)) {
      return { x: 0, y, width: this.width, height: ROW - 1 };
    }
    if (node <= focus || node >= tree.end[focus]) return null;
    const scale = this.width / tree.total[focus];
    const width = tree.total[node] * scale;
    if (width < MIN_WIDTH) return null;
    return { x: (tree.x[node] - tree.x[focus]) * scale, y, width, height: ROW - 1 };
  }

  // An outline around the hovered or keyboard-selected frame, on the overlay only.
  outline(node) {
    const ctx = this.overlay.getContext("2d");
    ctx.clearRect(0, 0, this.width, this.rows * ROW);
    const rect = node >= 0 ? this.frameRect(node) : null;
    if (!rect) return;
    ctx.strokeStyle = this.outlineColor;
    ctx.lineWidth = 2;
    ctx.strokeRect(rect.x + 1, rect.y + 1, Math.max(rect.width - 2, 1), rect.height - 2);
  }

  // Every frame of the last render, for tests and assistive summaries (not pixels).
  frames() {
    const { tree, drawn } = this;
    const frames = [];
    for (let k = 0; k < drawn.count; k++) {
      const node = drawn.index[k];
      const bits = this.mask ? this.mask[node] : 0;
      frames.push({
        node,
        name: tree.nameOf(node),
        depth: tree.depth[node],
        x: drawn.x[k],
        y: this.rowY(tree.depth[node]),
        width: drawn.w[k],
        height: ROW - 1,
        self: tree.self[node],
        total: tree.total[node],
        delta: tree.delta ? tree.delta(node) : null, // a diff's change of share
        color: this.palette[this.colorOf(node)],
        searched: Boolean(bits & SEARCHED),
        chosen: Boolean(bits & CHOSEN),
      });
    }
    return frames;
  }
}

function fit(name, chars) {
  if (name.length <= chars) return name;
  if (chars < 4) return "";
  return `${name.slice(0, chars - 1)}…`;
}
