// The page's state lives in the URL: shareable, and back/forward walk through it.
// Only values that differ from the defaults are written, so links stay short.

export const DEFAULTS = Object.freeze({
  view: "explore", // explore | compare | network
  type: "cpu",
  query: "",
  from: "now-1h",
  until: "now",
  nodes: "8192", // max_nodes asked of the server
  // The visible flame graph: zoom path (frame names joined by ";"), search, selected
  // function (highlighted, and shown in the sandwich view), orientation.
  focus: "",
  search: "",
  fn: "",
  orient: "icicle", // icicle | flame
  // Compare: baseline (left) and comparison (right); an empty right field means "as left".
  left: "",
  lfrom: "now-1h",
  luntil: "now",
  right: "",
  rfrom: "",
  runtil: "",
  palette: "rg", // rg: red grew / green shrank; cb: orange / blue, safe for colour blindness
  // Network
  group: "pod",
  pct: "p99",
  series: "", // the group whose latencies the chart shows
});

function read(search) {
  const params = new URLSearchParams(search);
  const state = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS)) {
    if (params.has(key)) state[key] = params.get(key);
  }
  return state;
}

function toSearch(state) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) {
    if (value !== DEFAULTS[key]) params.set(key, value);
  }
  const text = params.toString();
  return text ? `?${text}` : location.pathname;
}

function changedKeys(before, after) {
  return new Set(Object.keys(DEFAULTS).filter((key) => before[key] !== after[key]));
}

export class UrlState {
  constructor() {
    this.state = read(location.search);
    this.listeners = [];
    window.addEventListener("popstate", () => this.replaceAll(read(location.search)));
  }

  get(key) {
    return this.state[key];
  }

  subscribe(listener) {
    this.listeners.push(listener);
  }

  // push: a new history entry (a navigation); otherwise the current entry is rewritten
  // (typing in the search box should not flood the history). Returns whether anything changed.
  update(patch, { push = true } = {}) {
    const next = { ...this.state };
    for (const [key, value] of Object.entries(patch)) {
      if (!(key in DEFAULTS)) throw new Error(`unknown state key ${key}`);
      next[key] = value === undefined || value === null ? DEFAULTS[key] : String(value);
    }
    const changed = changedKeys(this.state, next);
    if (changed.size === 0) return false;
    this.state = next;
    const url = toSearch(next);
    if (push) history.pushState(null, "", url);
    else history.replaceState(null, "", url);
    this.notify(changed);
    return true;
  }

  replaceAll(next) {
    const changed = changedKeys(this.state, next);
    this.state = next;
    if (changed.size) this.notify(changed);
  }

  notify(changed) {
    for (const listener of this.listeners) listener(this.state, changed);
  }
}
