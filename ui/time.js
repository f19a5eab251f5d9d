// Time ranges as the server reads them: "now", "now-15m", Unix seconds or RFC 3339.
// The page keeps them as those strings (so "last hour" stays relative in a shared link)
// and resolves them to Unix seconds only to draw and to pick steps.

const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

export const PRESETS = [
  ["now-15m", "Last 15 minutes"],
  ["now-1h", "Last hour"],
  ["now-6h", "Last 6 hours"],
  ["now-24h", "Last 24 hours"],
  ["now-7d", "Last 7 days"],
];

export function resolveTime(text, now = Date.now() / 1000) {
  const value = text.trim();
  if (value === "now") return now;
  const relative = /^now-(\d+(?:\.\d+)?)([smhdw])$/.exec(value);
  if (relative) return now - Number(relative[1]) * UNIT_SECONDS[relative[2]];
  if (/^\d+(\.\d+)?$/.test(value)) return Number(value);
  const parsed = Date.parse(value);
  return Number.isNaN(parsed) ? null : parsed / 1000;
}

export function resolveRange(from, until) {
  const now = Date.now() / 1000;
  return { start: resolveTime(from, now), end: resolveTime(until, now) };
}

export function isPreset(from, until) {
  return until === "now" && PRESETS.some(([value]) => value === from);
}

// <input type="datetime-local"> works in local time without seconds' fractions.
export function toLocalInput(seconds) {
  const date = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

export function fromLocalInput(text) {
  const parsed = new Date(text).getTime();
  return Number.isNaN(parsed) ? null : Math.floor(parsed / 1000);
}

const NICE_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

// A step giving at most `points` points over the range.
export function stepFor(from, until, points) {
  const { start, end } = resolveRange(from, until);
  const seconds = start === null || end === null ? 3600 : Math.max(1, end - start);
  const wanted = Math.ceil(seconds / points);
  return NICE_STEPS.find((step) => step >= wanted) ?? wanted;
}
