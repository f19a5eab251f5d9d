"""The selected profile in formats other tools read: folded text, pprof and speedscope."""

import math
from collections.abc import Sequence
from typing import Any

from podflame.model.pprof import ValueType, encode_gzip, profile_from_stacks
from podflame.model.profile import ProfileType
from podflame.server.store import StackTotal
from podflame.server.timerange import TimeRange

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
# speedscope's ValueUnit; anything else is shown as a plain number.
_SPEEDSCOPE_UNITS = frozenset(
    {"nanoseconds", "microseconds", "milliseconds", "seconds", "bytes", "none"}
)
# A line break inside a frame name would split its folded line in two.
_LINE_BREAKS = str.maketrans({"\n": "\\n", "\r": "\\r"})


def folded(stacks: Sequence[StackTotal]) -> str:
    """Brendan Gregg's collapsed format, one `root;...;leaf value` line per stack."""
    return "".join(f"{_stack_text(stack)} {stack.value}\n" for stack in stacks)


def _stack_text(stack: StackTotal) -> str:
    return ";".join(stack.frames).translate(_LINE_BREAKS)


def sample_type(profile_type: ProfileType) -> ValueType:
    # pprof tools know "cpu" in nanoseconds; other types keep their own name.
    return ValueType(type=profile_type.name, unit=profile_type.unit)


def pprof(stacks: Sequence[StackTotal], profile_type: ProfileType, time_range: TimeRange) -> bytes:
    """gzip-compressed profile.proto: one sample per stack, one location per frame name.

    The store keeps no sample count or period, so the period is the largest value
    every stack is a multiple of (for eBPF CPU, the perf event's period).
    """
    values = [stack.value for stack in stacks]
    start_ns = _unix_ns(time_range.start.timestamp())
    profile = profile_from_stacks(
        ((stack.stack, stack.value) for stack in stacks),
        sample_type(profile_type),
        period=math.gcd(*values) if values else 0,
        time_nanos=start_ns,
        duration_nanos=_unix_ns(time_range.end.timestamp()) - start_ns,
    )
    return encode_gzip(profile)


def speedscope(
    stacks: Sequence[StackTotal], profile_type: ProfileType, name: str
) -> dict[str, Any]:
    """speedscope's file format: one "sampled" profile, a sample and a weight per stack;
    a frame's file and line where known."""
    index: dict[tuple[str, str, int], int] = {}
    samples = [
        [index.setdefault((f.label, f.file, f.line), len(index)) for f in stack.stack]
        for stack in stacks
    ]
    weights = [stack.value for stack in stacks]
    unit = profile_type.unit if profile_type.unit in _SPEEDSCOPE_UNITS else "none"
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "name": name,
        "exporter": "podflame",
        "activeProfileIndex": 0,
        "shared": {"frames": [_speedscope_frame(*frame) for frame in index]},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": unit,
                "startValue": 0,
                "endValue": sum(weights),
                # Frame indices root first, as speedscope reads them.
                "samples": samples,
                "weights": weights,
            }
        ],
    }


def _unix_ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


def _speedscope_frame(name: str, file: str, line: int) -> dict[str, str | int]:
    frame: dict[str, str | int] = {"name": name}
    if file:
        frame["file"] = file
    if line:
        frame["line"] = line
    return frame
