// SVG element factory and axis ticks shared by the charts.
const NS = "http://www.w3.org/2000/svg";

export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) node.setAttribute(key, String(value));
  }
  node.append(...children.filter(Boolean));
  return node;
}

// About `count` round values from 0 to the first one at or above max.
export function niceTicks(max, count = 4) {
  if (!(max > 0)) return [0];
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * power).find((s) => s >= raw);
  const ticks = [0];
  while (ticks[ticks.length - 1] < max) ticks.push(ticks.length * step);
  return ticks;
}

// Tick times for a time axis: round multiples of a step that gives about `count` ticks.
export function timeTicks(start, end, count = 6) {
  const steps = [1, 5, 15, 30, 60, 300, 900, 1800, 3600, 10800, 21600, 43200, 86400, 604800];
  const step = steps.find((s) => (end - start) / s <= count) ?? steps[steps.length - 1];
  const offset = new Date().getTimezoneOffset() * 60; // round in local time
  const ticks = [];
  for (let t = Math.ceil((start - offset) / step) * step + offset; t <= end; t += step) ticks.push(t);
  return { ticks, step };
}
