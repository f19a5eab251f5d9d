// Entry point: builds the views, routes the URL state to the visible one, and wires the
// page-wide pieces (tabs, token prompt, loading indicator, theme, keyboard shortcuts).
import { Api } from "./api.js";
import { getToken, setToken } from "./auth.js";
import { TypePicker } from "./query-bar.js";
import { UrlState } from "./state.js";
import { bindThemeToggle } from "./theme.js";
import { CompareView } from "./view-compare.js";
import { ExploreView } from "./view-explore.js";
import { NetworkView } from "./view-network.js";

const $ = (id) => document.getElementById(id);
const api = new Api();
const store = new UrlState();
const main = $("main");

const factories = {
  explore: () => new ExploreView({ api, store, typePicker: new TypePicker({ api, store }) }),
  compare: () => new CompareView({ api, store, typePicker: new TypePicker({ api, store }) }),
  network: () => new NetworkView({ api, store }),
};
const views = {};
let active = null;

function viewFor(name) {
  if (!views[name]) {
    views[name] = factories[name]();
    main.append(views[name].element);
  }
  return views[name];
}

function showView(state) {
  const name = state.view in factories ? state.view : "explore";
  const view = viewFor(name);
  for (const other of Object.values(views)) other.element.hidden = other !== view;
  for (const tab of document.querySelectorAll(".tabs a")) {
    if (tab.dataset.view === name) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  active = view;
  document.title = `podflame · ${name[0].toUpperCase()}${name.slice(1)}`;
  view.update(state, null);
}

store.subscribe((state, changed) => {
  if (changed.has("view")) showView(state);
  else active.update(state, changed);
});

// ---- Tabs: links that switch the view without reloading ----------------------------

for (const tab of document.querySelectorAll(".tabs a")) {
  tab.addEventListener("click", (event) => {
    event.preventDefault();
    const view = tab.dataset.view;
    const state = store.state;
    const patch = { view, focus: "", fn: "" };
    if (view === "compare" && !state.left) {
      // Start the comparison from what was being explored.
      Object.assign(patch, { left: state.query, lfrom: state.from, luntil: state.until });
    }
    store.update(patch);
  });
}

// ---- Token prompt ---------------------------------------------------------------------

const auth = $("auth");
const tokenInput = $("auth-token");

function openAuth(reason) {
  auth.hidden = false;
  $("token-button").setAttribute("aria-expanded", "true");
  $("auth-reason").textContent = reason;
  tokenInput.value = getToken();
  tokenInput.focus();
}

function closeAuth() {
  auth.hidden = true;
  $("token-button").setAttribute("aria-expanded", "false");
}

api.onAuthError((error) => {
  const reason =
    error.status === 401
      ? `The server needs a token (401): ${error.message}.`
      : `The token was refused (403): ${error.message}.`;
  openAuth(reason);
});
$("token-button").addEventListener("click", () => (auth.hidden ? openAuth("") : closeAuth()));
$("auth-close").addEventListener("click", closeAuth);
$("auth-forget").addEventListener("click", () => {
  setToken("");
  tokenInput.value = "";
  reloadAll();
});
$("auth-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken(tokenInput.value.trim());
  closeAuth();
  reloadAll();
});

function reloadAll() {
  // Views keep their type pickers: build them again so the types load with the token.
  for (const [name, view] of Object.entries(views)) {
    view.element.remove();
    delete views[name];
  }
  showView(store.state);
}

// ---- Loading indicator: shown only for requests slower than a glance ------------------

const loading = $("loading");
let loadingTimer = null;
api.onActivity((pending) => {
  document.body.dataset.pending = String(pending);
  if (pending > 0 && loadingTimer === null && loading.hidden) {
    loadingTimer = setTimeout(() => {
      loadingTimer = null;
      if (api.pending > 0) loading.hidden = false;
    }, 150);
  } else if (pending === 0) {
    clearTimeout(loadingTimer);
    loadingTimer = null;
    loading.hidden = true;
  }
});

// ---- Keyboard: "/" focuses the search, Escape resets the zoom ---------------------------

function isTyping(target) {
  return target.closest("input, textarea, select, [contenteditable='true']") !== null;
}

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "/" && !isTyping(event.target)) {
    event.preventDefault();
    active?.focusSearch();
  } else if (event.key === "Escape") {
    if (!auth.hidden && auth.contains(event.target)) {
      closeAuth();
      return;
    }
    if (event.target.matches?.("input[type=search]")) event.target.blur();
    store.update({ focus: "" });
  }
});

bindThemeToggle($("theme-toggle"), () => {});
showView(store.state);
