"""The profile data model and the agent-to-server wire format, defined once.

Both the agent and the server import from here; nothing here imports either.
"""

from podflame.model.network import Connection, LatencyHistogram
from podflame.model.profile import (
    KERNEL_FRAME_SUFFIX,
    ProfileType,
    is_kernel_frame,
    kernel_frame,
)
from podflame.model.wire import WIRE_VERSION, Batch, Series, StackValue

__all__ = [
    "KERNEL_FRAME_SUFFIX",
    "WIRE_VERSION",
    "Batch",
    "Connection",
    "LatencyHistogram",
    "ProfileType",
    "Series",
    "StackValue",
    "is_kernel_frame",
    "kernel_frame",
]
