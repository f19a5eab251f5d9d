// Tooltip and summary texts for flame graph frames, in the profile type's unit.
import { formatPercent, formatPoints, formatValue } from "./format.js";

export function valueLabel(type) {
  if (type === "cpu") return "CPU time";
  if (type === "net_wait") return "Network wait";
  return type;
}

function frameName(tree, node, rootLabel) {
  return node === 0 && rootLabel ? rootLabel : tree.nameOf(node);
}

// Lines for a frame of a FlameTree: name; total with its share of everything and of
// the zoomed frame; self.
export function describeFrame(type, rootLabel = "") {
  return (tree, node, focus) => {
    const all = tree.total[0];
    const total = tree.total[node];
    const self = tree.self[node];
    const unit = tree.unit;
    const lines = [
      frameName(tree, node, rootLabel),
      `${valueLabel(type)}: ${formatValue(total, unit)} total, ${formatPercent(total / all)} of all`,
    ];
    if (focus > 0) {
      lines.push(`${formatPercent(total / tree.total[focus])} of ${frameName(tree, focus, rootLabel)} (zoomed)`);
    }
    lines.push(`Self: ${formatValue(self, unit)}, ${formatPercent(self / all)} of all`);
    return lines;
  };
}

// Lines for a frame of a DiffTree: each side's value and share, and the change.
export function describeDiffFrame() {
  return (tree, node) => {
    const unit = tree.unit;
    return [
      tree.nameOf(node),
      `Baseline: ${formatValue(tree.leftTotal[node], unit)}, ${formatPercent(tree.leftShare(node))} of its total`,
      `Comparison: ${formatValue(tree.rightTotal[node], unit)}, ${formatPercent(tree.rightShare(node))} of its total`,
      `Change: ${formatPoints(tree.delta(node))} of the total`,
      `Self: ${formatValue(tree.leftSelf[node], unit)} → ${formatValue(tree.rightSelf[node], unit)}`,
    ];
  };
}

// The timeline's y axis: CPU time per step as cores in use, other times per step.
export function rateDescriber(type, unit, step) {
  if (type === "cpu" && unit === "nanoseconds") {
    return (value) => `${(value / (step * 1e9)).toFixed(value / (step * 1e9) >= 10 ? 0 : 2)} cores`;
  }
  return (value) => formatValue(value, unit);
}
