// The flame graph's model: the server's compact tree (names table + pre-order nodes) in
// typed arrays, with the layout every view needs computed once in linear passes.
//
// Pre-order means a node's subtree is the contiguous range [i, end[i]); drawing, search
// and culling all walk that range and skip whole subtrees by jumping to end[i].

export class FlameTree {
  // parent: Int32Array; name: Int32Array (index into names); self, total: Float64Array.
  constructor({ names, parent, name, self, total, unit }) {
    this.names = names;
    this.parent = parent;
    this.name = name;
    this.self = self;
    this.total = total;
    this.unit = unit;
    this.size = parent.length;
    this.layout();
  }

  static fromFlamegraph(response) {
    const n = response.nodes.length;
    const arrays = allocate(n);
    response.nodes.forEach(([parent, name, self, total], i) => {
      arrays.parent[i] = parent;
      arrays.name[i] = name;
      arrays.self[i] = self;
      arrays.total[i] = total;
    });
    return new FlameTree({ names: response.names, unit: response.unit, ...arrays });
  }

  layout() {
    const n = this.size;
    this.depth = new Uint16Array(n);
    this.x = new Float64Array(n); // offset from the root's left edge, in value units
    this.end = new Int32Array(n); // one past the last node of the subtree
    this.firstChild = new Int32Array(n).fill(-1);
    this.nextSibling = new Int32Array(n).fill(-1);
    const cursor = new Float64Array(n); // where the next child of each node starts
    const lastChild = new Int32Array(n).fill(-1);
    this.maxDepth = 0;
    for (let i = 1; i < n; i++) {
      const p = this.parent[i];
      const depth = this.depth[p] + 1;
      this.depth[i] = depth;
      if (depth > this.maxDepth) this.maxDepth = depth;
      this.x[i] = cursor[p];
      cursor[i] = cursor[p];
      cursor[p] += this.total[i];
      if (lastChild[p] < 0) this.firstChild[p] = i;
      else this.nextSibling[lastChild[p]] = i;
      lastChild[p] = i;
    }
    for (let i = 0; i < n; i++) this.end[i] = i + 1;
    for (let i = n - 1; i > 0; i--) {
      const p = this.parent[i];
      if (this.end[i] > this.end[p]) this.end[p] = this.end[i];
    }
  }

  nameOf(i) {
    return this.names[this.name[i]];
  }

  // Root first, ending with i.
  ancestry(i) {
    const chain = [];
    for (let node = i; node >= 0; node = this.parent[node]) chain.push(node);
    return chain.reverse();
  }

  // Names from below the root down to i: what the URL stores as the zoom path.
  pathNames(i) {
    return this.ancestry(i)
      .slice(1)
      .map((node) => this.nameOf(node));
  }

  // The node at a path of names, or the deepest node found along it.
  find(pathNames) {
    let node = 0;
    for (const wanted of pathNames) {
      let child = this.firstChild[node];
      while (child >= 0 && this.nameOf(child) !== wanted) child = this.nextSibling[child];
      if (child < 0) break;
      node = child;
    }
    return node;
  }

  subtreeDepth(i) {
    let deepest = this.depth[i];
    for (let node = i; node < this.end[i]; node++) {
      if (this.depth[node] > deepest) deepest = this.depth[node];
    }
    return deepest;
  }

  // Nodes whose name satisfies `test` (called once per distinct name), and the value they
  // cover: a match inside another match's subtree is not counted twice.
  match(test) {
    const names = new Uint8Array(this.names.length);
    this.names.forEach((name, index) => {
      names[index] = test(name) ? 1 : 0;
    });
    const mask = new Uint8Array(this.size);
    let count = 0;
    let covered = 0;
    let coveredEnd = 0;
    for (let i = 0; i < this.size; i++) {
      if (!names[this.name[i]]) continue;
      mask[i] = 1;
      count++;
      if (i >= coveredEnd) {
        covered += this.total[i];
        coveredEnd = this.end[i];
      }
    }
    return { mask, count, covered, share: this.total[0] ? covered / this.total[0] : 0 };
  }

  // Per function: self summed over its nodes, and total summed over the nodes that have
  // no ancestor of the same name (recursion counts once). `values` picks the arrays.
  functionTotals(values = [["self", this.self, "total", this.total]]) {
    const sums = new Map();
    const onPath = new Int32Array(this.names.length);
    const stack = [];
    for (let i = 0; i < this.size; i++) {
      while (stack.length && stack[stack.length - 1] !== this.parent[i]) {
        onPath[this.name[stack.pop()]]--;
      }
      const nameIndex = this.name[i];
      let entry = sums.get(nameIndex);
      if (!entry) {
        entry = { name: this.names[nameIndex] };
        for (const [selfKey, , totalKey] of values) entry[selfKey] = entry[totalKey] = 0;
        sums.set(nameIndex, entry);
      }
      for (const [selfKey, self, totalKey, total] of values) {
        entry[selfKey] += self[i];
        if (onPath[nameIndex] === 0) entry[totalKey] += total[i];
      }
      onPath[nameIndex]++;
      stack.push(i);
    }
    sums.delete(this.name[0]); // the root is not a function
    return [...sums.values()];
  }

  // The sandwich of one function: its callers (paths from the root, reversed, so the
  // function is the root) and its callees (its subtrees merged), over the outermost calls.
  sandwich(functionName) {
    const callers = new TreeBuilder(functionName, this.unit);
    const callees = new TreeBuilder(functionName, this.unit);
    for (let i = 1; i < this.size; i++) {
      if (this.nameOf(i) !== functionName) continue;
      const callerPath = this.ancestry(i).slice(1, -1).reverse();
      callers.addPath(callerPath.map((node) => this.nameOf(node)), this.total[i]);
      const mapped = new Map([[i, 0]]);
      for (let node = i + 1; node < this.end[i]; node++) {
        const built = callees.child(mapped.get(this.parent[node]), this.nameOf(node));
        mapped.set(node, built);
        callees.addSelf(built, this.self[node]);
      }
      callees.addSelf(0, this.self[i]);
      i = this.end[i] - 1; // deeper calls of the same function are inside this one
    }
    return { callers: callers.build(), callees: callees.build() };
  }
}

// A diff tree: drawn like a flame graph whose widths are the mean of the two sides'
// shares (so a frame present on one side only still shows), coloured by the change.
export class DiffTree extends FlameTree {
  static fromDiff(response) {
    const n = response.nodes.length;
    const arrays = allocate(n);
    const sides = {
      leftSelf: new Float64Array(n),
      leftTotal: new Float64Array(n),
      rightSelf: new Float64Array(n),
      rightTotal: new Float64Array(n),
    };
    const leftSum = response.left_total;
    const rightSum = response.right_total;
    const weigh = share(leftSum, rightSum);
    response.nodes.forEach(([parent, name, ls, lt, rs, rt], i) => {
      arrays.parent[i] = parent;
      arrays.name[i] = name;
      arrays.self[i] = weigh(ls, rs);
      arrays.total[i] = weigh(lt, rt);
      sides.leftSelf[i] = ls;
      sides.leftTotal[i] = lt;
      sides.rightSelf[i] = rs;
      sides.rightTotal[i] = rt;
    });
    const tree = new DiffTree({ names: response.names, unit: response.unit, ...arrays });
    Object.assign(tree, sides, { leftSum, rightSum });
    return tree;
  }

  leftShare(i) {
    return this.leftSum ? this.leftTotal[i] / this.leftSum : 0;
  }

  rightShare(i) {
    return this.rightSum ? this.rightTotal[i] / this.rightSum : 0;
  }

  // The change of this frame's share of its side's total: > 0 grew, < 0 shrank.
  delta(i) {
    return this.rightShare(i) - this.leftShare(i);
  }

  functionChanges() {
    const rows = this.functionTotals([
      ["leftSelf", this.leftSelf, "leftTotal", this.leftTotal],
      ["rightSelf", this.rightSelf, "rightTotal", this.rightTotal],
    ]);
    for (const row of rows) {
      row.leftShare = this.leftSum ? row.leftTotal / this.leftSum : 0;
      row.rightShare = this.rightSum ? row.rightTotal / this.rightSum : 0;
      row.change = row.rightShare - row.leftShare;
    }
    return rows;
  }
}

// Mean of the two shares; a side without samples does not pull the other down.
function share(leftSum, rightSum) {
  if (!leftSum) return (l, r) => (rightSum ? r / rightSum : 0);
  if (!rightSum) return (l) => l / leftSum;
  return (l, r) => (l / leftSum + r / rightSum) / 2;
}

function allocate(n) {
  return {
    parent: new Int32Array(n),
    name: new Int32Array(n),
    self: new Float64Array(n),
    total: new Float64Array(n),
  };
}

// Builds a FlameTree from paths (used for the sandwich view's two halves).
export class TreeBuilder {
  constructor(rootName, unit) {
    this.unit = unit;
    this.nodes = [{ name: rootName, self: 0, children: new Map() }];
  }

  child(parent, name) {
    const children = this.nodes[parent].children;
    let index = children.get(name);
    if (index === undefined) {
      index = this.nodes.length;
      this.nodes.push({ name, self: 0, children: new Map() });
      children.set(name, index);
    }
    return index;
  }

  addSelf(node, value) {
    this.nodes[node].self += value;
  }

  addPath(names, value) {
    let node = 0;
    for (const name of names) node = this.child(node, name);
    this.addSelf(node, value);
  }

  build() {
    const order = [];
    const parents = [];
    const visit = (node, parent) => {
      const position = order.length;
      order.push(node);
      parents.push(parent);
      const children = [...this.nodes[node].children.entries()].sort((a, b) =>
        a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0,
      );
      for (const [, child] of children) visit(child, position);
    };
    visit(0, -1);
    const names = [];
    const nameIndex = new Map();
    const arrays = allocate(order.length);
    order.forEach((node, i) => {
      const { name, self } = this.nodes[node];
      if (!nameIndex.has(name)) {
        nameIndex.set(name, names.length);
        names.push(name);
      }
      arrays.parent[i] = parents[i];
      arrays.name[i] = nameIndex.get(name);
      arrays.self[i] = self;
      arrays.total[i] = self;
    });
    for (let i = order.length - 1; i > 0; i--) arrays.total[arrays.parent[i]] += arrays.total[i];
    return new FlameTree({ names, unit: this.unit, ...arrays });
  }
}
