"""Profile types and stack truncation shared by every stage."""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

# Frame naming lives in frames.py; re-exported for the modules that import it from here.
from podflame.model.frames import KERNEL_FRAME_SUFFIX as KERNEL_FRAME_SUFFIX
from podflame.model.frames import is_kernel_frame as is_kernel_frame
from podflame.model.frames import kernel_frame as kernel_frame

# The root frame of a stack cut to its leaf end (the server's --max-stack-frames): the
# leaf frames, where the time is spent, are kept; one fixed name, so cut stacks that
# share their leaf end merge.
TRUNCATED_FRAME = "[truncated]"


def truncate_stack(frames: Sequence[str], max_frames: int) -> list[str]:
    """`frames` (root first), or their last `max_frames - 1` under TRUNCATED_FRAME."""
    if len(frames) <= max_frames:
        return list(frames)
    return [TRUNCATED_FRAME, *frames[len(frames) - max_frames + 1 :]]


def truncate_wire_stack(frames: Sequence[int | str], max_frames: int) -> list[int | str]:
    """The same for a wire stack (model.wire: frame indexes or names); the root it
    is cut under is the TRUNCATED_FRAME name, whatever form its other frames have."""
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
