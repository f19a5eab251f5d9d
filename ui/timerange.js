// Time range picker: presets, or a custom range from two datetime inputs.
import { el, field, select, uid } from "./dom.js";
import { PRESETS, fromLocalInput, isPreset, resolveRange, toLocalInput } from "./time.js";

export class TimeRangeControl {
  // sameAs: label of an extra "same as …" choice (the empty value), for compare's right side.
  constructor({ label = "Time range", sameAs = "", onChange }) {
    this.onChange = onChange;
    const choices = [...PRESETS, ["custom", "Custom…"]];
    if (sameAs) choices.unshift(["", sameAs]);
    this.preset = select(choices, { id: uid("range") });
    this.start = el("input", { type: "datetime-local", step: "1", id: uid("from") });
    this.end = el("input", { type: "datetime-local", step: "1", id: uid("until") });
    this.apply = el("button", { type: "button" }, "Apply range");
    this.error = el("p", { className: "field-error", hidden: true, role: "alert" });
    this.custom = el(
      "div",
      { className: "custom-range", hidden: true },
      field("From", this.start),
      field("Until", this.end),
      this.apply,
    );
    this.element = el(
      "div",
      { className: "time-range" },
      field(label, this.preset),
      this.custom,
      this.error,
    );
    this.preset.addEventListener("change", () => this.presetChosen());
    this.apply.addEventListener("click", () => this.customChosen());
  }

  set(from, until) {
    this.clearError();
    if (from === "" && this.preset.querySelector('option[value=""]')) {
      this.preset.value = "";
      this.custom.hidden = true;
      return;
    }
    if (isPreset(from, until)) {
      this.preset.value = from;
      this.custom.hidden = true;
      return;
    }
    this.preset.value = "custom";
    this.custom.hidden = false;
    const { start, end } = resolveRange(from, until);
    if (start !== null) this.start.value = toLocalInput(start);
    if (end !== null) this.end.value = toLocalInput(end);
  }

  presetChosen() {
    const value = this.preset.value;
    if (value === "custom") {
      this.custom.hidden = false;
      if (!this.start.value) {
        const now = Date.now() / 1000;
        this.start.value = toLocalInput(now - 3600);
        this.end.value = toLocalInput(now);
      }
      this.start.focus();
      return;
    }
    this.custom.hidden = true;
    this.onChange(value === "" ? { from: "", until: "" } : { from: value, until: "now" });
  }

  customChosen() {
    const start = fromLocalInput(this.start.value);
    const end = fromLocalInput(this.end.value);
    if (start === null || end === null) return this.showError("Enter both the start and the end.");
    if (start >= end) return this.showError("The start must be before the end.");
    this.clearError();
    this.onChange({ from: String(start), until: String(end) });
  }

  showError(text) {
    this.error.textContent = text;
    this.error.hidden = false;
  }

  clearError() {
    this.error.hidden = true;
  }
}
