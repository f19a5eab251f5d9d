// Human-readable values: times in the unit a person reads best, shares as percentages.

const TIME_STEPS = [
  [86400e9, "d"],
  [3600e9, "h"],
  [60e9, "min"],
  [1e9, "s"],
  [1e6, "ms"],
  [1e3, "µs"],
];

function trim(number, digits) {
  return Number(number.toFixed(digits)).toLocaleString("en-US", { maximumFractionDigits: digits });
}

export function formatNanoseconds(ns) {
  const magnitude = Math.abs(ns);
  for (const [size, suffix] of TIME_STEPS) {
    if (magnitude >= size) return `${trim(ns / size, magnitude / size < 10 ? 2 : 1)} ${suffix}`;
  }
  return `${trim(ns, 0)} ns`;
}

export function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${trim(value, unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function formatCount(count) {
  if (Math.abs(count) >= 1e6) return `${trim(count / 1e6, 2)} M`;
  if (Math.abs(count) >= 1e4) return `${trim(count / 1e3, 1)} k`;
  return trim(count, 2);
}

// A value in a profile type's unit (nanoseconds, bytes, or a plain count).
export function formatValue(value, unit) {
  if (unit === "nanoseconds") return formatNanoseconds(value);
  if (unit === "bytes") return formatBytes(value);
  return formatCount(value);
}

export function formatMicroseconds(us) {
  return us === null || us === undefined ? "–" : formatNanoseconds(us * 1000);
}

export function formatPercent(fraction) {
  if (!Number.isFinite(fraction)) return "–";
  const percent = fraction * 100;
  const digits = Math.abs(percent) >= 10 ? 1 : Math.abs(percent) >= 0.1 ? 2 : 3;
  return `${trim(percent, digits)} %`;
}

// A change of share in percentage points, always signed.
export function formatPoints(delta) {
  const points = delta * 100;
  const sign = points > 0 ? "+" : points < 0 ? "−" : "±";
  return `${sign}${trim(Math.abs(points), Math.abs(points) >= 10 ? 1 : 2)} pp`;
}

export function formatTimestamp(seconds) {
  const date = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

export function formatClock(seconds, withDate) {
  const text = formatTimestamp(seconds);
  return withDate ? text.slice(5, 16) : text.slice(11, 19);
}
