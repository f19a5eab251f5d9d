"""Profile types and frame naming shared by every stage."""

from dataclasses import dataclass

# Brendan Gregg's FlameGraph convention: kernel frames carry a "_[k]" suffix,
# so they stay recognisable in folded text and any tool that reads it.
KERNEL_FRAME_SUFFIX = "_[k]"


def kernel_frame(name: str) -> str:
    return name + KERNEL_FRAME_SUFFIX


def is_kernel_frame(name: str) -> bool:
    return name.endswith(KERNEL_FRAME_SUFFIX)


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

PROFILE_TYPES: dict[str, ProfileType] = {CPU.name: CPU}
