// One selection: label pickers, a free-text selector and a time range, bound to three
// state keys. The selector and the custom range apply on submit, a picker at once.
import { el, field, uid } from "./dom.js";
import { LabelCascade } from "./labels.js";
import { TimeRangeControl } from "./timerange.js";

export class QueryBar {
  // keys: state keys for {query, from, until}; inherit(): the selection this one falls back
  // to when its own keys are empty (compare's right side), or null.
  constructor({ api, store, keys, title, name, inherit = null, sameAs = "" }) {
    this.api = api;
    this.store = store;
    this.keys = keys;
    this.inherit = inherit;
    this.cascade = new LabelCascade({
      api,
      name,
      onChange: (query) => store.update({ [keys.query]: query }),
    });
    this.input = el("input", {
      type: "text",
      id: uid(`${name}-selector`),
      className: "selector-input",
      spellcheck: false,
      autocomplete: "off",
      placeholder: inherit ? "same as the baseline" : '{namespace="shop", pod=~"api-.*"}',
    });
    this.inputError = el("div", { className: "field-error", id: uid("selector-error"), hidden: true, role: "alert" });
    this.input.setAttribute("aria-describedby", this.inputError.id);
    this.range = new TimeRangeControl({
      sameAs,
      onChange: ({ from, until }) => store.update({ [keys.from]: from, [keys.until]: until }),
    });
    this.element = el(
      "fieldset",
      { className: "query-bar" },
      el("legend", {}, title),
      this.cascade.element,
      el("div", { className: "selector-row" }, field("Selector", this.input, { className: "field grow" }), this.range.element),
      this.inputError,
    );
  }

  // The selection to query: own values, or the inherited ones where empty.
  effective(state) {
    const own = { query: state[this.keys.query], from: state[this.keys.from], until: state[this.keys.until] };
    if (!this.inherit) return own;
    const base = this.inherit(state);
    return {
      query: own.query || base.query,
      from: own.from || base.from,
      until: own.from ? own.until || "now" : base.until,
    };
  }

  sync(state) {
    if (document.activeElement !== this.input) this.input.value = state[this.keys.query];
    this.range.set(state[this.keys.from], state[this.keys.until]);
    const selection = this.effective(state);
    this.cascade.update({ ...selection, type: state.type });
  }

  // The typed selector, to store on submit.
  patch() {
    return { [this.keys.query]: this.input.value.trim() };
  }

  clearErrors() {
    this.inputError.hidden = true;
    this.input.removeAttribute("aria-invalid");
    this.range.clearError();
  }

  // Shows an API error next to the control it names; false when it names none of ours.
  showError(error, { query: queryParameter, from, until } = {}) {
    if (error.parameter && error.parameter === queryParameter) {
      const position = error.position ?? positionIn(error.message);
      this.input.setAttribute("aria-invalid", "true");
      const children = [el("p", {}, error.message)];
      if (position !== null) {
        const text = this.input.value;
        children.push(
          el("pre", { className: "caret", "aria-hidden": "true" }, `${text}\n${" ".repeat(Math.min(position, text.length))}^`),
        );
      }
      this.inputError.replaceChildren(...children);
      this.inputError.hidden = false;
      return true;
    }
    if (error.parameter && (error.parameter === from || error.parameter === until)) {
      this.range.showError(error.message);
      return true;
    }
    return false;
  }
}

function positionIn(text) {
  const found = /at position (\d+)/.exec(text);
  return found ? Number(found[1]) : null;
}

// The profile type picker, filled from /profile-types.
export class TypePicker {
  constructor({ api, store }) {
    this.store = store;
    this.control = el("select", { id: uid("type") });
    this.control.addEventListener("change", () => store.update({ type: this.control.value }));
    this.element = field("Profile type", this.control);
    this.types = [];
    this.loaded = api
      .json("profile-types")
      .then((types) => {
        this.types = types;
      })
      .catch(() => {
        this.types = [];
      })
      .finally(() => this.sync(store.state));
  }

  sync(state) {
    const types = [...this.types];
    if (!types.some((t) => t.name === state.type)) types.push({ name: state.type, description: "" });
    this.control.replaceChildren(...types.map((t) => el("option", { value: t.name, title: t.description }, t.name)));
    this.control.value = state.type;
  }

  unitOf(name) {
    return this.types.find((t) => t.name === name)?.unit ?? "nanoseconds";
  }
}
