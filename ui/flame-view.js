// An interactive flame graph: canvas renderer plus breadcrumbs, tooltip, zoom, search
// and selection highlights, keyboard navigation and a live region for screen readers.
import { nodeColors, NORMAL_PALETTE, textColors } from "./colors.js";
import { el } from "./dom.js";
import { CHOSEN, FlameRenderer, SEARCHED } from "./flame-render.js";
import { registerGraph } from "./testhook.js";

const NORMAL_TEXT = textColors(NORMAL_PALETTE);

export class FlameView {
  // describe(tree, node, focus) -> lines of the tooltip; onZoom(pathNames) asks the page to
  // zoom (the page answers with setFocusPath, so zoom lives in the URL).
  constructor({ id, label, describe, onZoom, rootLabel = "" }) {
    this.id = id;
    this.describe = describe;
    this.onZoom = onZoom;
    this.rootLabel = rootLabel;
    this.tree = null;
    this.searchText = "";
    this.selected = "";
    this.hovered = -1;
    this.cursor = -1;
    this.breadcrumbs = el("nav", { className: "breadcrumbs", "aria-label": `${label}: zoom path` });
    this.host = el("div", { className: "flame-host" });
    this.renderer = new FlameRenderer(this.host);
    const canvas = this.renderer.canvas;
    canvas.tabIndex = 0;
    canvas.setAttribute("role", "application");
    canvas.setAttribute("aria-roledescription", "flame graph");
    canvas.setAttribute(
      "aria-label",
      `${label}. Arrow keys move between frames, Enter zooms into a frame, Escape resets the zoom.`,
    );
    canvas.dataset.graph = id;
    this.tooltip = el("div", { className: "tooltip", role: "tooltip", hidden: true });
    this.live = el("p", { className: "sr-only", "aria-live": "polite" });
    this.element = el("div", { className: "flame-view" }, this.breadcrumbs, this.host, this.tooltip, this.live);
    this.bindPointer(canvas);
    this.bindKeys(canvas);
    new ResizeObserver(() => {
      if (this.tree && this.host.clientWidth !== this.renderer.width) this.draw();
    }).observe(this.host);
    registerGraph(id, this);
  }

  // tree: a FlameTree (or DiffTree) or null; colors/palette default to the name colours.
  setData(tree, { colors, palette, text } = {}) {
    const start = performance.now();
    this.tree = tree;
    this.cursor = -1;
    this.hovered = -1;
    this.hideTooltip();
    if (tree) {
      this.renderer.setTree(tree, {
        colors: colors ?? nodeColors(tree),
        palette: palette ?? NORMAL_PALETTE,
        text: text ?? NORMAL_TEXT,
      });
      this.applyMask();
    } else {
      this.renderer.setTree(null, { colors: null, palette: [], text: [] });
    }
    this.draw();
    this.renderBreadcrumbs();
    performance.clearMeasures("podflame:flame-set-data");
    performance.measure("podflame:flame-set-data", { start });
  }

  get focus() {
    return this.renderer.focus;
  }

  setFocusPath(pathNames) {
    if (!this.tree) return;
    const node = this.tree.find(pathNames);
    if (node === this.renderer.focus) return;
    this.renderer.setFocus(node);
    this.cursor = -1;
    this.draw();
    this.renderBreadcrumbs();
  }

  setOrientation(orientation) {
    if (this.renderer.orientation === orientation) return;
    this.renderer.setOrientation(orientation);
    this.draw();
  }

  // Returns {count, share} of the frames matching `text` (case-insensitive substring).
  setSearch(text) {
    this.searchText = text;
    const result = this.applyMask();
    this.draw();
    return result;
  }

  // Highlights every frame of one function (a row clicked in a table).
  setSelected(name) {
    this.selected = name;
    this.applyMask();
    this.draw();
  }

  applyMask() {
    if (!this.tree) return { count: 0, share: 0 };
    const needle = this.searchText.toLowerCase();
    const selected = this.selected;
    if (!needle && !selected) {
      this.renderer.setMask(null);
      this.matches = { count: 0, share: 0, covered: 0 };
      return this.matches;
    }
    const search = needle ? this.tree.match((name) => name.toLowerCase().includes(needle)) : null;
    const chosen = selected ? this.tree.match((name) => name === selected) : null;
    const mask = new Uint8Array(this.tree.size);
    for (let i = 0; i < mask.length; i++) {
      mask[i] = (search?.mask[i] ? SEARCHED : 0) | (chosen?.mask[i] ? CHOSEN : 0);
    }
    this.renderer.setMask(mask);
    this.matches = search ?? { count: 0, share: 0, covered: 0 };
    return this.matches;
  }

  // Runs `change` with drawing deferred, then draws once (setting data, zoom, search and
  // selection together would otherwise render four times).
  batch(change) {
    this.batching = (this.batching ?? 0) + 1;
    try {
      change();
    } finally {
      this.batching -= 1;
      if (this.batching === 0 && this.dirty) this.draw();
    }
  }

  draw() {
    this.dirty = false;
    if (this.batching) {
      this.dirty = true;
      return;
    }
    this.renderer.render();
    this.renderer.canvas.dataset.frames = String(this.renderer.drawn.count);
    this.renderer.outline(this.cursor >= 0 ? this.cursor : this.hovered);
  }

  renderBreadcrumbs() {
    const crumbs = [];
    if (this.tree && this.tree.total[0] > 0) {
      const chain = this.tree.ancestry(this.renderer.focus);
      chain.forEach((node, position) => {
        const name = position === 0 ? this.rootLabel || this.tree.nameOf(0) : this.tree.nameOf(node);
        if (position === chain.length - 1) {
          crumbs.push(el("span", { "aria-current": "location" }, name));
        } else {
          const button = el("button", { type: "button", title: `Zoom out to ${name}` }, name);
          button.addEventListener("click", () => this.zoom(node));
          crumbs.push(button, el("span", { "aria-hidden": "true" }, " › "));
        }
      });
    }
    this.breadcrumbs.replaceChildren(...crumbs);
    this.breadcrumbs.hidden = crumbs.length <= 1;
  }

  zoom(node) {
    this.onZoom(node > 0 ? this.tree.pathNames(node) : []);
  }

  bindPointer(canvas) {
    canvas.addEventListener("mousemove", (event) => {
      const start = performance.now();
      const node = this.renderer.hit(event.offsetX, event.offsetY);
      if (node !== this.hovered) {
        this.hovered = node;
        this.renderer.outline(node);
      }
      if (node < 0) this.hideTooltip();
      else this.showTooltip(node, event.clientX, event.clientY);
      performance.clearMeasures("podflame:flame-hover");
      performance.measure("podflame:flame-hover", { start });
    });
    canvas.addEventListener("mouseleave", () => {
      this.hovered = -1;
      this.renderer.outline(this.cursor);
      this.hideTooltip();
    });
    canvas.addEventListener("click", (event) => {
      const node = this.renderer.hit(event.offsetX, event.offsetY);
      if (node >= 0) this.zoom(node);
    });
  }

  bindKeys(canvas) {
    canvas.addEventListener("keydown", (event) => {
      if (!this.tree || this.renderer.rows === 0) return;
      const next = this.step(event.key);
      if (next === undefined) return;
      event.preventDefault();
      if (next === "zoom") {
        if (this.cursor >= 0) this.zoom(this.cursor);
        return;
      }
      this.cursor = next;
      this.renderer.outline(next);
      const rect = this.renderer.frameRect(next);
      const box = canvas.getBoundingClientRect();
      if (rect) this.showTooltip(next, box.left + rect.x + rect.width / 2, box.top + rect.y + rect.height);
      this.live.textContent = this.describe(this.tree, next, this.renderer.focus).join(". ");
    });
    canvas.addEventListener("blur", () => {
      this.cursor = -1;
      this.renderer.outline(this.hovered);
      this.hideTooltip();
    });
  }

  // The frame an arrow key moves to (siblings left/right, parent and widest child
  // up/down as drawn), "zoom" for Enter, undefined for other keys.
  step(key) {
    const tree = this.tree;
    const current = this.cursor >= 0 ? this.cursor : this.renderer.focus;
    const flame = this.renderer.orientation === "flame";
    const drawn = (node) => node >= 0 && this.renderer.frameRect(node) !== null;
    const toParent = () => (current > 0 ? tree.parent[current] : current);
    const toChild = () => {
      let widest = -1;
      for (let c = tree.firstChild[current]; c >= 0; c = tree.nextSibling[c]) {
        if (widest < 0 || tree.total[c] > tree.total[widest]) widest = c;
      }
      return drawn(widest) ? widest : current;
    };
    const sibling = (forward) => {
      if (current <= this.renderer.focus) return current;
      const siblings = [];
      for (let c = tree.firstChild[tree.parent[current]]; c >= 0; c = tree.nextSibling[c]) {
        if (drawn(c)) siblings.push(c);
      }
      const at = siblings.indexOf(current) + (forward ? 1 : -1);
      return siblings[Math.max(0, Math.min(siblings.length - 1, at))];
    };
    switch (key) {
      case "ArrowUp":
        return flame ? toChild() : toParent();
      case "ArrowDown":
        return flame ? toParent() : toChild();
      case "ArrowLeft":
        return sibling(false);
      case "ArrowRight":
        return sibling(true);
      case "Enter":
      case " ":
        return "zoom";
      default:
        return undefined;
    }
  }

  showTooltip(node, clientX, clientY) {
    const lines = this.describe(this.tree, node, this.renderer.focus);
    this.tooltip.replaceChildren(
      el("strong", {}, lines[0]),
      ...lines.slice(1).map((line) => el("span", {}, line)),
    );
    this.tooltip.hidden = false;
    const { innerWidth, innerHeight } = window;
    const width = this.tooltip.offsetWidth;
    const height = this.tooltip.offsetHeight;
    const left = clientX + 14 + width > innerWidth ? clientX - width - 14 : clientX + 14;
    const top = clientY + 14 + height > innerHeight ? clientY - height - 14 : clientY + 14;
    this.tooltip.style.transform = `translate(${Math.max(0, left)}px, ${Math.max(0, top)}px)`;
  }

  hideTooltip() {
    this.tooltip.hidden = true;
  }

  toBlob() {
    return new Promise((resolve) => this.renderer.canvas.toBlob(resolve, "image/png"));
  }
}
