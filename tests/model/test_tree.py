from collections import defaultdict
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podflame.model.tree import (
    OTHER_NAME,
    FlatTree,
    Stack,
    build_tree,
    diff_graph,
    flame_graph,
    flatten,
)

STACKS: list[Stack] = [(("main", "a", "b"), 3), (("main", "a"), 2), (("main", "c"), 5)]


def test_golden_flame_graph() -> None:
    tree = flame_graph(STACKS, max_nodes=100)
    assert tree.names == ["total", "main", "a", "b", "c"]
    assert tree.nodes == [
        [-1, 0, 0, 10],
        [0, 1, 0, 10],
        [1, 2, 2, 5],
        [2, 3, 3, 3],
        [1, 4, 5, 5],
    ]
    assert tree.totals == [10]
    assert not tree.truncated


def test_truncation_merges_dropped_children_into_other() -> None:
    # a (5, with a child) needs two rows, so the lighter leaf c takes the last one.
    tree = flame_graph(STACKS, max_nodes=4)
    assert tree.names == ["total", "main", "c", OTHER_NAME]
    assert tree.nodes == [[-1, 0, 0, 10], [0, 1, 0, 10], [1, 2, 5, 5], [1, 3, 5, 5]]
    assert tree.truncated


def test_the_last_child_left_out_needs_no_other() -> None:
    tree = flame_graph([(("only",), 7)], max_nodes=2)
    assert tree.names == ["total", "only"]
    assert tree.nodes == [[-1, 0, 0, 7], [0, 1, 7, 7]]
    assert not tree.truncated


def test_max_nodes_two_is_root_and_other() -> None:
    tree = flame_graph(STACKS, max_nodes=2)
    assert tree.names == ["total", OTHER_NAME]
    assert tree.nodes == [[-1, 0, 0, 10], [0, 1, 10, 10]]


def test_max_nodes_one_folds_everything_into_the_root() -> None:
    tree = flame_graph(STACKS, max_nodes=1)
    assert tree.nodes == [[-1, 0, 10, 10]]
    assert tree.truncated
    with pytest.raises(ValueError, match="max_nodes"):
        flame_graph(STACKS, max_nodes=0)


def test_empty_profile_and_empty_stack() -> None:
    assert flame_graph([], max_nodes=10).nodes == [[-1, 0, 0, 0]]
    # A stack without frames is the root's own value.
    assert flame_graph([((), 4), (("a",), 1)], 10).nodes == [[-1, 0, 4, 5], [0, 1, 1, 1]]


def test_recursion_and_shared_names_use_one_names_entry() -> None:
    tree = flame_graph([(("a", "b", "a"), 2), (("b",), 1)], 10)
    assert tree.names == ["total", "a", "b"]
    assert tree.nodes == [[-1, 0, 0, 3], [0, 1, 0, 2], [1, 2, 0, 2], [2, 1, 2, 2], [0, 2, 1, 1]]


def test_golden_diff() -> None:
    left: list[Stack] = [(("main", "a"), 6), (("main", "b"), 4)]
    right: list[Stack] = [(("main", "a"), 1), (("main", "c"), 1)]
    tree = diff_graph(left, right, max_nodes=100)
    assert tree.names == ["total", "main", "a", "b", "c"]
    assert tree.nodes == [
        [-1, 0, 0, 10, 0, 2],
        [0, 1, 0, 10, 0, 2],
        [1, 2, 6, 6, 1, 1],
        [1, 3, 4, 4, 0, 0],
        [1, 4, 0, 0, 1, 1],
    ]
    assert tree.totals == [10, 2]


def test_diff_truncation_keeps_the_largest_share_on_either_side() -> None:
    # Shares: a 60% left, c 50% right, b 40% left: a is kept, then no room.
    left: list[Stack] = [(("main", "a"), 6), (("main", "b"), 4)]
    right: list[Stack] = [(("main", "a"), 1), (("main", "c"), 1)]
    tree = diff_graph(left, right, max_nodes=4)
    assert tree.names == ["total", "main", "a", OTHER_NAME]
    assert tree.nodes[2:] == [[1, 2, 6, 6, 1, 1], [1, 3, 4, 4, 1, 1]]


def test_diff_truncation_prefers_a_right_only_node_over_a_small_left_one() -> None:
    left: list[Stack] = [(("a",), 1000), (("b",), 10), (("d",), 1)]
    right: list[Stack] = [(("c",), 5), (("a",), 5)]
    tree = diff_graph(left, right, max_nodes=4)
    # Shares left/right: a 99%/50%, c 0%/50%, b 1%/0%, d 0.1%/0%.
    assert [tree.names[row[1]] for row in tree.nodes] == ["total", "a", "c", OTHER_NAME]


# Property-based: any stacks, any max_nodes.

names = st.sampled_from(["a", "b", "c", "main", OTHER_NAME, "total", "é\n;"])
stacks = st.lists(
    st.tuples(st.lists(names, max_size=6).map(tuple), st.integers(1, 10**12)), max_size=40
)


def prefix_totals(stack_list: Sequence[Stack]) -> dict[tuple[str, ...], int]:
    totals: dict[tuple[str, ...], int] = defaultdict(int, {(): 0})
    for frames, value in stack_list:
        for depth in range(len(frames) + 1):
            totals[tuple(frames[:depth])] += value
    return totals


def check_shape(tree: FlatTree, sides: int, max_nodes: int) -> None:
    """Pre-order, totals add up, within max_nodes."""
    assert 1 <= len(tree.nodes) <= max_nodes
    assert tree.nodes[0][:2] == [-1, 0] and tree.names[0] == "total"
    children_totals = [[0] * sides for _ in tree.nodes]
    path = [0]  # the ancestors of the last node, root first
    for index, row in enumerate(tree.nodes[1:], start=1):
        assert len(row) == 2 + 2 * sides
        while path[-1] != row[0]:
            path.pop()  # the parent must be an ancestor of the previous node
        path.append(index)
        for side in range(sides):
            children_totals[row[0]][side] += row[3 + 2 * side]
    for row, below in zip(tree.nodes, children_totals, strict=True):
        for side in range(sides):
            own, total = row[2 + 2 * side], row[3 + 2 * side]
            assert own >= 0 and total == own + below[side]


def paths(tree: FlatTree) -> dict[int, tuple[str, ...]]:
    """Each node's frames below the root."""
    result: dict[int, tuple[str, ...]] = {0: ()}
    for index, row in enumerate(tree.nodes[1:], start=1):
        result[index] = (*result[row[0]], tree.names[row[1]])
    return result


@given(stacks, st.integers(1, 60))
@settings(max_examples=300)
def test_flame_graph_properties(stack_list: list[Stack], max_nodes: int) -> None:
    tree = flame_graph(stack_list, max_nodes)
    check_shape(tree, 1, max_nodes)
    total = sum(value for _, value in stack_list)
    assert tree.totals == [total]
    assert sum(row[2] for row in tree.nodes) == total
    expected = prefix_totals(stack_list)
    for index, path in paths(tree).items():
        # Kept nodes keep their exact value; only `other` leaves aggregate.
        if path[-1:] != (OTHER_NAME,):
            assert tree.nodes[index][3] == expected[path]


@given(stacks)
def test_untruncated_tree_has_every_prefix_once(stack_list: list[Stack]) -> None:
    tree = flame_graph(stack_list, 10**6)
    assert not tree.truncated
    found = {path: tree.nodes[index][3] for index, path in paths(tree).items()}
    assert found == dict(prefix_totals(stack_list))
    assert len(found) == len(tree.nodes)


@given(stacks, stacks, st.integers(1, 60))
@settings(max_examples=300)
def test_diff_properties(left: list[Stack], right: list[Stack], max_nodes: int) -> None:
    tree = diff_graph(left, right, max_nodes)
    check_shape(tree, 2, max_nodes)
    assert tree.totals == [sum(v for _, v in left), sum(v for _, v in right)]
    # Untruncated, each side is that side's flame graph.
    whole = diff_graph(left, right, 10**6)
    for side, stack_list in enumerate((left, right)):
        column = 3 + 2 * side
        found = {p: whole.nodes[i][column] for i, p in paths(whole).items()}
        expected = {p: v for p, v in prefix_totals(stack_list).items() if v}
        assert {p: v for p, v in found.items() if v} == expected


@given(stacks, st.integers(1, 60))
def test_a_tree_that_fits_is_not_truncated(stack_list: list[Stack], max_nodes: int) -> None:
    whole = flame_graph(stack_list, 10**6)
    tree = flame_graph(stack_list, max_nodes)
    if len(whole.nodes) <= max_nodes:
        assert tree == whole
    else:
        assert tree.truncated


@given(stacks, st.integers(1, 60))
@settings(max_examples=300)
def test_flame_graph_lays_out_as_the_node_tree_does(
    stack_list: list[Stack], max_nodes: int
) -> None:
    # flame_graph builds a tree that fits from the sorted stacks, without Node objects:
    # the same rows, names and order as the general path (frames as lists too).
    expected = flatten(build_tree([stack_list]), max_nodes)
    assert flame_graph(stack_list, max_nodes) == expected
    assert flame_graph([(list(f), v) for f, v in stack_list], max_nodes) == expected
