"""The parsing and counting both profilers' numbers go through (no BPF needed)."""

import pytest

from tests.accuracy.profiles import (
    Stack,
    busy_shares,
    js_function,
    parse_folded,
    parse_perf_script,
)

PERF_SCRIPT = """\
hot 101
\t            13f5 burn_a
\t            14dd run
\t            153e main

V8 DefaultWorke 101
\t    7fac0c0259d1 JS:*hotBeta /tmp/hot.js:2:17
\t               0 [unknown]

hot 101
\t            1478 ns::Worker<int>::crunch(unsigned long)
\t            14dd run
"""


def test_perf_script_samples_keep_names_with_spaces() -> None:
    assert parse_perf_script(PERF_SCRIPT) == [
        Stack(("burn_a", "run", "main"), 1),
        Stack(("JS:*hotBeta /tmp/hot.js:2:17", "[unknown]"), 1),
        Stack(("ns::Worker<int>::crunch(unsigned long)", "run"), 1),
    ]


def test_folded_values_become_samples() -> None:
    text = "main;run;ns::Worker<int>::crunch(unsigned long) 20\nmain;calibration 10\n"
    assert parse_folded(text, period_ns=10) == [
        Stack(("main", "run", "ns::Worker<int>::crunch(unsigned long)"), 2),
        Stack(("main", "calibration"), 1),
    ]


def test_shares_count_the_busy_phase_once_per_sample() -> None:
    stacks = [
        Stack(("main", "run", "a", "a"), 3),  # recursion: a once
        Stack(("main", "run", "b"), 1),
        Stack(("main", "calibration", "a"), 5),  # before the busy phase
    ]
    shares = busy_shares(stacks, ["a", "b", "c"], marker="run")
    assert shares.samples == 4
    assert shares.by_function == {"a": 0.75, "b": 0.25, "c": 0.0}


def test_shares_compare_normalized_names() -> None:
    stacks = [
        Stack(("JS:~runCycles /x.js:9:1", "JS:*hotAlpha /x.js:1:1"), 1),
        Stack(("JS:^runCycles /x.js:9:1", "JS:~hotAlpha /x.js:1:1"), 1),
    ]
    shares = busy_shares(stacks, ["hotAlpha"], marker="runCycles", normalize=js_function)
    assert shares.by_function == {"hotAlpha": 1.0}


@pytest.mark.parametrize(
    ("frame", "function"),
    [
        ("JS:*hotAlpha /tmp/hot.js:24:18", "hotAlpha"),
        ("JS:~ /tmp/hot.js:1:1", ""),
        ("LazyCompile:*hotAlpha /tmp/hot.js:24:18", "hotAlpha"),
        ("Builtins_JSEntry", "Builtins_JSEntry"),
    ],
)
def test_js_function(frame: str, function: str) -> None:
    assert js_function(frame) == function
