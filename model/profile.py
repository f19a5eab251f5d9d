"""Profile types and frame naming shared by every stage."""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

# Brendan Gregg's FlameGraph convention: kernel frames carry a "_[k]" suffix,
# so they stay recognisable in folded text and any tool that reads it.
KERNEL_FRAME_SUFFIX = "_[k]"


def kernel_frame(name: str) -> str:
    return name + KERNEL_FRAME_SUFFIX


def is_kernel_frame(name: str) -> bool:
    return name.endswith(KERNEL_FRAME_SUFFIX)


# The root frame of a stack cut to its leaf end (the server's --max-stack-frames): the
# leaf frames, where the time is spent, are kept; one fixed name, so cut stacks that
# share their leaf end merge.
TRUNCATED_FRAME = "[truncated]"


def truncate_stack(frames: Sequence[str], max_frames: int) -> list[str]:
    """`frames` (root first), or their last `max_frames - 1` under TRUNCATED_FRAME."""
    if len(frames) <= max_frames:
        return list(frames)
    return [TRUNCATED_FRAME, *frames[len(frames) - max_frames + 1 :]]


@dataclass(frozen=True)
class ProfileType:
    name: str
    unit: str
    description: str


CPU = ProfileType(
    name="cpu",
    unit="nanoseconds",
    description="On-CPU time sampled with the cpu-clock perf event.",
)

NET_WAIT = ProfileType(
    name="net_wait",
    unit="nanoseconds",
    description="Time spent in network system calls, by the user stack that made the call.",
)

TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

BUILTIN_PROFILE_TYPES: Mapping[str, ProfileType] = MappingProxyType(
    {CPU.name: CPU, NET_WAIT.name: NET_WAIT}
)


class ProfileTypeConflict(ValueError):
    """A type of that name exists with another unit, or the name is reserved."""
