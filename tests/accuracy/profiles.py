"""Both profilers' stacks in one form, and the per-function shares computed from them.

perf's samples and podflame's folded stacks both become `Stack`s, and one
function, `busy_shares`, turns either into shares: whatever differs between
the two numbers comes from the profilers, not from two ways of counting.
"""

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

UNKNOWN = "[unknown]"

# V8's names in /tmp/perf-PID.map: "JS:*hotAlpha /path/hot.js:24:18". The
# character after the colon is the tier (~ interpreted, ^ Sparkplug, + Maglev,
# * TurboFan); Node before 20 wrote "LazyCompile:" instead of "JS:".
_JS_FRAME = re.compile(r"(?:JS|LazyCompile):[~^+*]?(?P<name>\S*)(?: .*)?")


@dataclass(frozen=True)
class Stack:
    """One stack (frames in any order: only membership matters) and its weight in samples."""

    frames: tuple[str, ...]
    samples: float


@dataclass(frozen=True)
class Shares:
    """Per-function shares of a workload's busy phase."""

    samples: float  # samples in the busy phase: the denominator
    by_function: dict[str, float]  # function -> share of those samples, 0..1


def same_name(frame: str) -> str:
    """Frame names that need no normalizing (native code)."""
    return frame


def js_function(frame: str) -> str:
    """The JavaScript function of a V8 perf-map name; other frames unchanged.

    The same function shows up under several names (one per tier, each with
    its source position); shares are per function, so they are folded here.
    """
    match = _JS_FRAME.fullmatch(frame)
    return match["name"] if match else frame


def parse_perf_script(text: str) -> list[Stack]:
    """Samples from `perf script -F comm,pid,ip,sym` with call chains (`record -g`).

    Each sample is a header line (comm, which may contain spaces, and pid),
    then one indented "ADDRESS SYMBOL" line per frame, then a blank line.
    SYMBOL may contain spaces (C++ signatures, V8 names) and is `[unknown]`
    where perf could not name the frame.
    """
    stacks: list[Stack] = []
    frames: list[str] | None = None
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if frames is not None:
                stacks.append(Stack(tuple(frames), 1))
            frames = None
        elif not line[0].isspace():
            frames = []  # a sample header
        elif frames is not None:
            _address, _, symbol = line.strip().partition(" ")
            frames.append(symbol.strip() or UNKNOWN)
    return stacks


def parse_folded(text: str, period_ns: int) -> list[Stack]:
    """Stacks from podflame's folded export: "root;...;leaf VALUE", VALUE in nanoseconds."""
    stacks = []
    for line in text.splitlines():
        if line.strip():
            folded, _, value = line.rpartition(" ")
            stacks.append(Stack(tuple(folded.split(";")), int(value) / period_ns))
    return stacks


def busy_shares(
    stacks: Iterable[Stack],
    functions: Iterable[str],
    marker: str,
    normalize: Callable[[str], str] = same_name,
) -> Shares:
    """For each function, the share of busy-phase samples whose stack contains it.

    The busy phase is the samples whose stack contains `marker`, the function
    that runs it: perf is attached for that phase only, while podflame sees
    the whole process (start-up, JIT compiler threads), so both are measured
    against the same phase. A function counts once per sample however often
    it appears on the stack. Frames and functions are compared as
    `normalize` makes them.
    """
    wanted = {function: normalize(function) for function in functions}
    busy = 0.0
    found = dict.fromkeys(wanted, 0.0)
    for stack in stacks:
        names = {normalize(frame) for frame in stack.frames}
        if normalize(marker) not in names:
            continue
        busy += stack.samples
        for function, name in wanted.items():
            if name in names:
                found[function] += stack.samples
    return Shares(busy, {f: found[f] / busy if busy else 0.0 for f in found})
