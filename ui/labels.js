// Cascading label pickers: namespace -> workload -> pod -> container. Each picker lists
// the values that exist under the choices before it (labels/{name}/values, scoped by the
// selector so far); choosing one rewrites the selector and clears the pickers after it.
import { isAbort } from "./api.js";
import { el, field, uid } from "./dom.js";
import { equalityValue, formatSelector, parseSelector } from "./selector.js";

export const LEVELS = ["namespace", "workload", "pod", "container"];
const ANY = "";
const PATTERN = "\u0000pattern"; // the selector matches this label with a regex or !=

export class LabelCascade {
  constructor({ api, onChange, name = "labels" }) {
    this.api = api;
    this.onChange = onChange;
    this.matchers = [];
    this.controller = null;
    this.selects = LEVELS.map((level) => {
      const control = el("select", { id: uid(`${name}-${level}`), disabled: true });
      control.dataset.label = level;
      control.addEventListener("change", () => this.choose(level, control.value));
      return control;
    });
    this.note = el("p", { className: "field-note", hidden: true });
    this.element = el(
      "div",
      { className: "cascade", role: "group", "aria-label": "Pick by Kubernetes labels" },
      LEVELS.map((level, i) => field(level[0].toUpperCase() + level.slice(1), this.selects[i])),
      this.note,
    );
  }

  // Shows the pickers for a selector, fetching each level's values in its scope.
  async update({ query, type, from, until }) {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    const matchers = parseSelector(query);
    if (matchers === null) {
      this.selects.forEach((control) => this.fill(control, [], ""));
      this.selects.forEach((control) => (control.disabled = true));
      this.note.textContent = "The pickers follow the selector once it is a list of label matchers.";
      this.note.hidden = false;
      return;
    }
    this.note.hidden = true;
    this.matchers = matchers;
    await Promise.all(
      LEVELS.map(async (level, i) => {
        const scope = formatSelector(matchers.filter((m) => !LEVELS.slice(i).includes(m.name)));
        const params = { query: scope, type, from, until, limit: 1000 };
        try {
          const result = await this.api.json(`labels/${level}/values`, params, { signal: controller.signal });
          if (controller.signal.aborted) return;
          this.fill(this.selects[i], result.values, this.chosen(level));
        } catch (error) {
          if (isAbort(error) || controller.signal.aborted) return;
          this.fill(this.selects[i], [], this.chosen(level));
          this.selects[i].title = `Could not list ${level} values: ${error.message}`;
        }
      }),
    );
  }

  chosen(level) {
    const exact = equalityValue(this.matchers, level);
    if (exact) return exact;
    return this.matchers.some((m) => m.name === level) ? PATTERN : ANY;
  }

  fill(control, values, chosen) {
    const level = control.dataset.label;
    const options = [el("option", { value: ANY }, values.length ? `any ${level}` : `no ${level} labels`)];
    if (chosen === PATTERN) options.push(el("option", { value: PATTERN }, "as in the selector"));
    const listed = chosen && chosen !== PATTERN && !values.includes(chosen) ? [chosen, ...values] : values;
    for (const value of listed) options.push(el("option", { value }, value));
    control.replaceChildren(...options);
    control.value = chosen;
    control.disabled = listed.length === 0 && chosen === ANY;
    control.title = "";
  }

  choose(level, value) {
    if (value === PATTERN) return;
    const index = LEVELS.indexOf(level);
    const later = LEVELS.slice(index);
    const kept = this.matchers.filter((m) => !later.includes(m.name));
    const levels = kept.filter((m) => LEVELS.includes(m.name));
    const others = kept.filter((m) => !LEVELS.includes(m.name));
    if (value !== ANY) levels.push({ name: level, op: "=", value });
    this.onChange(formatSelector([...levels, ...others]));
  }
}
