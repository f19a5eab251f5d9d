// A flame graph with its toolbar and an in-place message (empty, error), bound to the
// state keys focus, search, fn and orient.
import { el } from "./dom.js";
import { ExportButtons } from "./export.js";
import { FlameToolbar } from "./flame-toolbar.js";
import { FlameView } from "./flame-view.js";
import { formatValue } from "./format.js";

export class FlamePanel {
  // exportParams(): {type, query, from, until} for the server's exports, or null (PNG only).
  constructor({ store, api, id, label, describe, exportParams = null, onError }) {
    this.store = store;
    this.id = id;
    this.view = new FlameView({
      id,
      label,
      describe,
      onZoom: (path) => store.update({ focus: path.join(";") }),
    });
    const exports = new ExportButtons({
      api,
      params: exportParams,
      png: () => (this.view.tree ? this.view.toBlob() : null),
      name: () => id,
      onError,
    });
    this.toolbar = new FlameToolbar({ store, name: id, exports });
    this.messageHost = el("div", { className: "message-host" });
    this.element = el(
      "section",
      { className: "flame-panel", "aria-label": label },
      this.toolbar.element,
      this.messageHost,
      this.view.element,
    );
    this.element.dataset.panel = id;
  }

  setTree(tree, coloring) {
    this.messageHost.replaceChildren();
    this.view.element.hidden = false;
    this.element.dataset.state = "ready";
    this.view.batch(() => {
      this.view.setData(tree, coloring);
      this.sync(this.store.state, null);
    });
  }

  showMessage(node, state = "empty") {
    this.view.setData(null);
    this.view.element.hidden = true;
    this.messageHost.replaceChildren(node);
    this.element.dataset.state = state;
    this.toolbar.sync(this.store.state);
    this.toolbar.setMatches("", {});
  }

  // changed: the state keys that changed, or null to apply everything.
  sync(state, changed) {
    this.toolbar.sync(state);
    const touched = (key) => changed === null || changed.has(key);
    this.view.batch(() => {
      if (touched("orient")) this.view.setOrientation(state.orient);
      if (!this.view.tree) return;
      if (touched("focus")) this.view.setFocusPath(state.focus ? state.focus.split(";") : []);
      if (touched("fn")) this.view.setSelected(state.fn);
      if (touched("search")) {
        const matches = this.view.setSearch(state.search);
        const tree = this.view.tree;
        const covered = tree.leftTotal ? "" : formatValue(matches.covered, tree.unit);
        this.toolbar.setMatches(state.search, matches, covered);
      }
    });
  }

  focusSearch() {
    this.toolbar.search.focus();
    this.toolbar.search.select();
  }
}
