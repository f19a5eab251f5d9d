// Flame graph model and canvas renderer (icicle: root on top).
// Input is folded text: "root;child;leaf value" per line.

export function parseFolded(text) {
  const root = { name: "all", value: 0, self: 0, children: new Map(), parent: null };
  for (const line of text.split("\n")) {
    const space = line.lastIndexOf(" ");
    if (space <= 0) continue;
    const value = Number(line.slice(space + 1));
    if (!Number.isFinite(value) || value <= 0) continue;
    let node = root;
    root.value += value;
    for (const name of line.slice(0, space).split(";")) {
      let child = node.children.get(name);
      if (!child) {
        child = { name, value: 0, self: 0, children: new Map(), parent: node };
        node.children.set(name, child);
      }
      child.value += value;
      node = child;
    }
    node.self += value;
  }
  return root;
}

const ROW = 18;

// Lays out the subtree of `focus` into rectangles: x and width as fractions.
function layout(focus) {
  const rects = [];
  const walk = (node, x, depth) => {
    rects.push({ node, x, width: node.value / focus.value, depth });
    let offset = x;
    const children = [...node.children.values()].sort((a, b) => a.name.localeCompare(b.name));
    for (const child of children) {
      walk(child, offset, depth + 1);
      offset += child.value / focus.value;
    }
  };
  walk(focus, 0, 0);
  return rects;
}

function color(name) {
  if (name.endsWith("_[k]")) return "hsl(200, 55%, 65%)";
  let hash = 0;
  for (let i = 0; i < name.length; i++) hash = (hash * 31 + name.charCodeAt(i)) | 0;
  return `hsl(${20 + (Math.abs(hash) % 35)}, 85%, ${55 + (Math.abs(hash >> 8) % 15)}%)`;
}

export class FlameGraph {
  constructor(canvas, { onZoom } = {}) {
    this.canvas = canvas;
    this.onZoom = onZoom ?? (() => {});
    this.root = null;
    this.focus = null;
    this.rects = [];
  }

  setData(root) {
    this.root = root;
    this.zoom(root);
  }

  zoom(node) {
    this.focus = node;
    this.rects = layout(node);
    this.draw();
    this.onZoom(node);
  }

  draw() {
    const ratio = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth;
    const depth = Math.max(...this.rects.map((r) => r.depth)) + 1;
    this.canvas.style.height = `${depth * ROW}px`;
    this.canvas.width = width * ratio;
    this.canvas.height = depth * ROW * ratio;
    const ctx = this.canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    ctx.font = "12px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    for (const r of this.rects) {
      const w = r.width * width;
      if (w < 0.5) continue;
      const x = r.x * width;
      const y = r.depth * ROW;
      ctx.fillStyle = color(r.node.name);
      ctx.fillRect(x, y, Math.max(w - 0.5, 0.5), ROW - 1);
      if (w > 30) {
        ctx.fillStyle = "#111";
        ctx.save();
        ctx.beginPath();
        ctx.rect(x, y, w - 2, ROW);
        ctx.clip();
        ctx.fillText(r.node.name, x + 3, y + ROW / 2);
        ctx.restore();
      }
    }
  }

  hit(clientX, clientY) {
    const box = this.canvas.getBoundingClientRect();
    const fx = (clientX - box.left) / box.width;
    const depth = Math.floor((clientY - box.top) / ROW);
    return this.rects.find((r) => r.depth === depth && fx >= r.x && fx < r.x + r.width) ?? null;
  }
}
