// Light and dark themes: the user's choice (kept in localStorage) or the system's.
const KEY = "podflame.theme";

function stored() {
  try {
    return localStorage.getItem(KEY);
  } catch {
    return null;
  }
}

export function initialTheme() {
  return stored() ?? (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
}

export function applyTheme(theme, button) {
  document.documentElement.dataset.theme = theme;
  button.setAttribute("aria-pressed", String(theme === "dark"));
  button.textContent = theme === "dark" ? "Light theme" : "Dark theme";
}

export function bindThemeToggle(button, onChange) {
  applyTheme(initialTheme(), button);
  button.addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    try {
      localStorage.setItem(KEY, next);
    } catch {
      // the choice lasts for this page only
    }
    applyTheme(next, button);
    onChange();
  });
}
