// A sortable table: header buttons sort (aria-sort tells which way), and rows can be
// chosen with a click or the keyboard (the first cell holds a button).
import { el } from "./dom.js";

const MAX_ROWS = 500; // beyond this a table is scrolled past, not read

export class SortableTable {
  // columns: [{key, label, numeric, format(row), value(row)}]; onChoose(row) for rows.
  constructor({ caption, columns, sortKey, descending = true, rowKey, onChoose, emptyText }) {
    this.columns = columns;
    this.sortKey = sortKey;
    this.descending = descending;
    this.rowKey = rowKey;
    this.onChoose = onChoose;
    this.emptyText = emptyText;
    this.rows = [];
    this.active = "";
    this.head = el("thead");
    this.body = el("tbody");
    this.note = el("p", { className: "table-note" });
    this.element = el(
      "div",
      { className: "table-wrap" },
      el("table", { className: "data-table" }, el("caption", {}, caption), this.head, this.body),
      this.note,
    );
    this.renderHead();
  }

  setRows(rows) {
    this.rows = rows;
    this.renderBody();
  }

  setActive(key) {
    this.active = key;
    for (const row of this.body.rows) {
      const chosen = row.dataset.key === key;
      row.classList.toggle("active", chosen);
      row.setAttribute("aria-selected", String(chosen));
    }
  }

  sortBy(key) {
    if (this.sortKey === key) this.descending = !this.descending;
    else {
      this.sortKey = key;
      this.descending = this.columns.find((c) => c.key === key).numeric !== false;
    }
    this.renderHead();
    this.renderBody();
  }

  renderHead() {
    const cells = this.columns.map((column) => {
      const sorted = column.key === this.sortKey;
      const direction = this.descending ? "descending" : "ascending";
      const button = el(
        "button",
        { type: "button", className: "sort", title: `Sort by ${column.label}` },
        column.label,
        el("span", { "aria-hidden": "true" }, sorted ? (this.descending ? " ▾" : " ▴") : ""),
      );
      button.addEventListener("click", () => this.sortBy(column.key));
      return el(
        "th",
        { scope: "col", className: column.numeric === false ? "" : "num", "aria-sort": sorted ? direction : "none" },
        button,
      );
    });
    this.head.replaceChildren(el("tr", {}, cells));
  }

  sorted() {
    const column = this.columns.find((c) => c.key === this.sortKey);
    const value = column.value ?? ((row) => row[column.key]);
    const sign = this.descending ? -1 : 1;
    return [...this.rows].sort((a, b) => {
      const x = value(a);
      const y = value(b);
      if (x < y) return -sign;
      if (x > y) return sign;
      return 0;
    });
  }

  renderBody() {
    const rows = this.sorted();
    if (rows.length === 0) {
      this.body.replaceChildren(
        el("tr", {}, el("td", { colSpan: this.columns.length, className: "empty" }, this.emptyText)),
      );
      this.note.textContent = "";
      return;
    }
    this.body.replaceChildren(...rows.slice(0, MAX_ROWS).map((row) => this.renderRow(row)));
    this.note.textContent = rows.length > MAX_ROWS ? `Showing ${MAX_ROWS} of ${rows.length} rows.` : "";
  }

  renderRow(row) {
    const key = this.rowKey(row);
    const cells = this.columns.map((column, index) => {
      const text = column.format ? column.format(row) : String(row[column.key]);
      const content =
        index === 0 && this.onChoose
          ? el("button", { type: "button", className: "row-choose", title: text, onclick: () => this.onChoose(row) }, text)
          : text;
      return el("td", { className: column.numeric === false ? "" : "num" }, content);
    });
    const tr = el("tr", { dataset: { key } }, cells);
    if (key === this.active) {
      tr.classList.add("active");
      tr.setAttribute("aria-selected", "true");
    }
    return tr;
  }
}
