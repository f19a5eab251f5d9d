// Frame colours. Normal graphs hash function names into a warm palette (kernel frames
// blue, "other" grey); diff graphs map the change of share to a diverging scale.
// Colours are palette indices so the renderer can fill all frames of one colour at once.

const WARM = 24;
export const NORMAL_PALETTE = [
  ...Array.from({ length: WARM }, (_, i) => {
    const hue = 8 + ((i * 7) % 42);
    const light = 58 + ((i * 5) % 14);
    return `hsl(${hue}, 82%, ${light}%)`;
  }),
  ...Array.from({ length: 6 }, (_, i) => `hsl(${196 + i * 4}, 55%, ${62 + i * 2}%)`), // kernel
  "hsl(0, 0%, 72%)", // other
];
const KERNEL_BASE = WARM;
const OTHER = NORMAL_PALETTE.length - 1;

function hash(text) {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return h >>> 0;
}

export function nameColorIndex(name) {
  if (name === "other") return OTHER;
  if (name.endsWith("_[k]")) return KERNEL_BASE + (hash(name) % 6);
  return hash(name) % WARM;
}

// Colour index of every node, from its name (computed once per distinct name).
export function nodeColors(tree) {
  const byName = Int32Array.from(tree.names, nameColorIndex);
  const colors = new Uint16Array(tree.size);
  for (let i = 0; i < tree.size; i++) colors[i] = byName[tree.name[i]];
  return colors;
}

// ---- Diff colours ----------------------------------------------------------------------

export const DIFF_LEVELS = 10; // steps on each side of "unchanged"
// A change of this many share points or more gets the strongest colour.
export const DIFF_SATURATION = 0.1;
const DIFF_FLOOR = 0.001; // 0.1 pp: below this a change looks unchanged

export const DIFF_SCHEMES = {
  rg: { grew: [214, 39, 40], shrank: [35, 150, 60], label: "red grew, green shrank" },
  cb: { grew: [213, 94, 0], shrank: [0, 114, 178], label: "orange grew, blue shrank" },
};
const NEUTRAL = [200, 200, 206];

// 0..DIFF_LEVELS on a log scale, so 0.1 pp and 10 pp both read.
export function diffLevel(delta) {
  const magnitude = Math.abs(delta);
  if (magnitude < DIFF_FLOOR / 2) return 0;
  const t = Math.log10(1 + magnitude / DIFF_FLOOR) / Math.log10(1 + DIFF_SATURATION / DIFF_FLOOR);
  return Math.max(1, Math.min(DIFF_LEVELS, Math.round(t * DIFF_LEVELS)));
}

function mix(from, to, t) {
  const [r, g, b] = from.map((c, i) => Math.round(c + (to[i] - c) * t));
  return `rgb(${r}, ${g}, ${b})`;
}

// Index DIFF_LEVELS is unchanged; below it shrank, above it grew.
export function diffPalette(scheme) {
  const { grew, shrank } = DIFF_SCHEMES[scheme] ?? DIFF_SCHEMES.rg;
  const palette = [];
  for (let level = DIFF_LEVELS; level >= 1; level--) palette.push(mix(NEUTRAL, shrank, level / DIFF_LEVELS));
  palette.push(mix(NEUTRAL, NEUTRAL, 0));
  for (let level = 1; level <= DIFF_LEVELS; level++) palette.push(mix(NEUTRAL, grew, level / DIFF_LEVELS));
  return palette;
}

export function diffColorIndex(delta) {
  const level = diffLevel(delta);
  return DIFF_LEVELS + (delta < 0 ? -level : level);
}

export function diffColors(tree) {
  const colors = new Uint16Array(tree.size);
  for (let i = 0; i < tree.size; i++) colors[i] = diffColorIndex(tree.delta(i));
  return colors;
}

// The smallest change shown at each level, for the legend.
export function levelThreshold(level) {
  const t = (level - 0.5) / DIFF_LEVELS;
  return DIFF_FLOOR * (10 ** (t * Math.log10(1 + DIFF_SATURATION / DIFF_FLOOR)) - 1);
}

// ---- Text on frames ---------------------------------------------------------------------

function luminance(color) {
  const probe = document.createElement("canvas").getContext("2d");
  probe.fillStyle = color;
  const hex = probe.fillStyle; // normalised to #rrggbb
  const [r, g, b] = [1, 3, 5].map((at) => parseInt(hex.slice(at, at + 2), 16) / 255);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

// Dark text on light frames, white on dark ones.
export function textColors(palette) {
  return palette.map((color) => (luminance(color) > 0.45 ? "#1b1b1f" : "#ffffff"));
}

// Frames matching the search, and frames of the function chosen in a table.
export const HIGHLIGHT = "#d62fd6";
export const SELECTED = "#3b5bdb";
