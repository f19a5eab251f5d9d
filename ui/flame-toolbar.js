// The controls above a flame graph: search (with the matches' share of the total),
// orientation, reset zoom, and exports. Bound to the state keys search, orient and focus.
import { el, field, uid } from "./dom.js";
import { formatPercent } from "./format.js";

export class FlameToolbar {
  constructor({ store, name, exports }) {
    this.store = store;
    this.search = el("input", {
      type: "search",
      id: uid(`${name}-search`),
      className: "search-input",
      placeholder: "function name",
      autocomplete: "off",
      spellcheck: false,
    });
    this.search.dataset.search = "";
    this.summary = el("span", { className: "match-summary", "aria-live": "polite" });
    this.search.addEventListener("input", () => store.update({ search: this.search.value }, { push: false }));
    this.orient = el("button", { type: "button", className: "toggle", "aria-pressed": "false" }, "Root at bottom");
    this.orient.title = "Switch between icicle (root on top) and flame graph (root at the bottom)";
    this.orient.addEventListener("click", () =>
      store.update({ orient: store.get("orient") === "flame" ? "icicle" : "flame" }),
    );
    this.reset = el("button", { type: "button", title: "Show the whole graph (Esc)" }, "Reset zoom");
    this.reset.addEventListener("click", () => store.update({ focus: "" }));
    this.element = el(
      "div",
      { className: "toolbar" },
      el("div", { className: "search-field" }, field("Search (press /)", this.search), this.summary),
      this.orient,
      this.reset,
      exports ? exports.element : null,
    );
  }

  sync(state) {
    if (this.search.value !== state.search) this.search.value = state.search;
    const flame = state.orient === "flame";
    this.orient.setAttribute("aria-pressed", String(flame));
    this.reset.disabled = state.focus === "";
  }

  setMatches(search, { count, share }, describeCovered) {
    if (!search) {
      this.summary.textContent = "";
      return;
    }
    this.summary.textContent =
      count === 0
        ? "No matching frames"
        : `${count} ${count === 1 ? "frame" : "frames"}, ${formatPercent(share)} of the total${describeCovered ? ` (${describeCovered})` : ""}`;
  }
}
