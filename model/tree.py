"""Flame graph trees from aggregated stacks: build, truncate, flatten.

Pure and storage-free. The input is one (frames, value) pair per distinct stack,
frames root first, already summed by the store, so the loops here run over
stacks and frames, never over sample rows. A tree has one or more *sides*: one
for a flame graph, two (left, right) for a diff; every node carries a self and
a total value per side.

The output is compact and in depth-first pre-order, so a client lays it out in
one pass: `names` holds each distinct name once, and each node is
`[parent_index, name_index, self, total]` per side, i.e. `[parent, name, self,
total]` for one side and `[parent, name, left_self, left_total, right_self,
right_total]` for two. Node 0 is the root, named `total`, with parent -1.
Children follow their parent ordered by name, with a truncation's `other` last.
"""

import heapq
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ROOT_NAME = "total"
OTHER_NAME = "other"

Stack = tuple[Sequence[str], int]


class Node:
    __slots__ = ("children", "name", "self_values", "totals")

    def __init__(self, name: str, sides: int) -> None:
        self.name = name
        self.self_values = [0] * sides
        self.totals = [0] * sides
        self.children: dict[str, Node] = {}

    def sorted_children(self) -> list["Node"]:
        return [self.children[name] for name in sorted(self.children)]


@dataclass(frozen=True)
class FlatTree:
    names: list[str]
    # One row per node, pre-order: parent, name index, then (self, total) per side.
    nodes: list[list[int]]
    # Whether max_nodes dropped anything (merged into `other` nodes).
    truncated: bool

    @property
    def totals(self) -> list[int]:
        """The root's total per side: the value of every stack given."""
        return self.nodes[0][3::2]


def build_tree(sides: Sequence[Iterable[Stack]]) -> Node:
    """Merge each side's stacks into one tree; side i fills index i of every node's values."""
    root = Node(ROOT_NAME, len(sides))
    for side, stacks in enumerate(sides):
        for frames, value in stacks:
            _add_stack(root, frames, value, side)
    return root


def _add_stack(root: Node, frames: Sequence[str], value: int, side: int) -> None:
    node = root
    node.totals[side] += value
    sides = len(root.totals)
    for name in frames:
        child = node.children.get(name)
        if child is None:
            child = node.children[name] = Node(name, sides)
        child.totals[side] += value
        node = child
    node.self_values[side] += value


def flatten(root: Node, max_nodes: int) -> FlatTree:
    """The tree in pre-order, at most `max_nodes` rows (at least 1).

    Kept are the nodes with the largest weight (see `weight`), a node only with
    its parent; a node that does not fit is skipped for lighter ones that do.
    The children a kept node loses are merged into one `other` leaf under it,
    so every node's total is still its self plus its children's totals. With
    max_nodes 1 there is no room for `other`: the root's children fold into
    its self.
    """
    if max_nodes < 1:
        raise ValueError("max_nodes must be at least 1")
    if max_nodes == 1:
        return _root_only(root)
    if _fits(root, max_nodes):
        return _emit_all(root)  # nothing to choose: the heap below would keep every node
    kept = _select(root, max_nodes, [max(total, 1) for total in root.totals])
    return _emit(root, kept)


def _fits(root: Node, max_nodes: int) -> bool:
    """Whether the tree has at most `max_nodes` nodes (counting stops past it)."""
    count = 0
    pending = [root]
    while pending:
        count += 1
        if count > max_nodes:
            return False
        pending.extend(pending.pop().children.values())
    return True


def weight(node: Node, side_totals: Sequence[int]) -> float:
    """The largest share of its side's total the node has: comparable across sides.

    For one side this orders nodes by total; for a diff a node matters when it
    is large on either side. Never larger for a child than for its parent.
    """
    return max(total / side for total, side in zip(node.totals, side_totals, strict=True))


def _select(root: Node, max_nodes: int, side_totals: list[int]) -> set[int]:
    """ids of the kept nodes: heaviest first, each if its row (and `other` rows) still fit."""
    kept = {id(root)}
    # Kept nodes' children not kept (yet): each such node needs an `other` row.
    dropped = {id(root): len(root.children)}
    rows = 1 + (1 if root.children else 0)
    # Ties pop in the order pushed: parents first, then siblings by name.
    order = itertools.count()
    frontier: list[tuple[float, int, Node, Node]] = []

    def push(child: Node, parent: Node) -> None:
        heapq.heappush(frontier, (-weight(child, side_totals), next(order), child, parent))

    for child in root.sorted_children():
        push(child, root)
    while frontier:
        _, _, node, parent = heapq.heappop(frontier)
        # The node's row, its own `other` if it has children, minus its parent's
        # `other` when it was the last child left out.
        added = 1 + (1 if node.children else 0) - (1 if dropped[id(parent)] == 1 else 0)
        if rows + added > max_nodes:
            # A lighter node may still fit (a leaf replacing its parent's `other`).
            continue
        rows += added
        kept.add(id(node))
        dropped[id(parent)] -= 1
        dropped[id(node)] = len(node.children)
        for child in node.sorted_children():
            push(child, node)
    return kept


def _emit(root: Node, kept: set[int]) -> FlatTree:
    names: dict[str, int] = {}
    rows: list[list[int]] = []
    truncated = False
    pending: list[tuple[Node, int]] = [(root, -1)]
    while pending:
        node, parent = pending.pop()
        index = len(rows)
        rows.append(_row(parent, names.setdefault(node.name, len(names)), node))
        children = node.sorted_children()
        lost = [child for child in children if id(child) not in kept]
        truncated = truncated or bool(lost)
        # Pushed in reverse so they pop in name order, `other` after them all.
        if lost:
            pending.append((_other(lost), index))
        pending.extend((child, index) for child in reversed(children) if id(child) in kept)
    return FlatTree(list(names), rows, truncated)


def _emit_all(root: Node) -> FlatTree:
    """Every node, as `_emit` lays them out when it keeps them all."""
    names: dict[str, int] = {}
    rows: list[list[int]] = []
    pending: list[tuple[Node, int]] = [(root, -1)]
    while pending:
        node, parent = pending.pop()
        index = len(rows)
        rows.append(_row(parent, names.setdefault(node.name, len(names)), node))
        children = node.children
        # Pushed in reverse name order, so they pop in name order.
        pending.extend((children[name], index) for name in sorted(children, reverse=True))
    return FlatTree(list(names), rows, truncated=False)


def _other(lost: list[Node]) -> Node:
    other = Node(OTHER_NAME, len(lost[0].totals))
    for node in lost:
        for side, total in enumerate(node.totals):
            other.totals[side] += total
    other.self_values = list(other.totals)
    return other


def _root_only(root: Node) -> FlatTree:
    folded = Node(root.name, len(root.totals))
    folded.totals = list(root.totals)
    folded.self_values = list(root.totals)
    return FlatTree([root.name], [_row(-1, 0, folded)], truncated=bool(root.children))


def _row(parent: int, name: int, node: Node) -> list[int]:
    row = [parent, name]
    for own, total in zip(node.self_values, node.totals, strict=True):
        row += (own, total)
    return row


def flame_graph(stacks: Iterable[Stack], max_nodes: int) -> FlatTree:
    if max_nodes < 1:
        raise ValueError("max_nodes must be at least 1")
    stacks = sorted(stacks, key=lambda stack: tuple(stack[0]))
    whole = _sorted_rows(stacks)
    if len(whole.nodes) <= max_nodes:
        return whole
    return flatten(build_tree([stacks]), max_nodes)


def _sorted_rows(stacks: Sequence[Stack]) -> FlatTree:
    """The whole one-sided tree, laid out as `flatten` does, from stacks sorted by frames.

    Sorted stacks visit the nodes in pre-order with children in name order, so each
    stack adds rows only below the frames it shares with the one before: no tree of
    Node objects, no sorting of children (the flame graph's hot path).
    """
    names = {ROOT_NAME: 0}
    rows = [[-1, 0, 0, 0]]
    path = [0]  # the rows of the previous stack's frames, root first
    previous: Sequence[str] = ()
    for frames, value in stacks:
        shared = 0
        for new, old in zip(frames, previous, strict=False):  # up to the shorter one
            if new != old:
                break
            shared += 1
        del path[shared + 1 :]
        for name in frames[shared:]:
            rows.append([path[-1], names.setdefault(name, len(names)), 0, 0])
            path.append(len(rows) - 1)
        for index in path:
            rows[index][3] += value
        rows[path[-1]][2] += value
        previous = frames
    return FlatTree(list(names), rows, truncated=False)


def diff_graph(left: Iterable[Stack], right: Iterable[Stack], max_nodes: int) -> FlatTree:
    """Both sides in one tree; compare a node's left_total / left root total with its right."""
    return flatten(build_tree([left, right]), max_nodes)
