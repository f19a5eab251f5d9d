"""The agent-to-server batch format (JSON, optionally gzip-compressed).

A batch holds the stacks seen during one drain interval once each, and per
process (one `Series` per label set) the value of every stack it was seen in.
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from podflame.model.network import Connection, LatencyHistogram

WIRE_VERSION = 1

Label = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class StackValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stack: int = Field(ge=0, description="Index into Batch.stacks.")
    value: int = Field(gt=0, description="Value in the profile type's unit.")


class Series(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: dict[Label, Annotated[str, Field(max_length=4096)]] = Field(
        description="Labels of the process, such as node, comm and pid."
    )
    samples: list[StackValue]


class Batch(BaseModel):
    """One drain interval of one agent."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(default=WIRE_VERSION, ge=1, le=WIRE_VERSION)
    batch_id: str = Field(
        min_length=8, max_length=64, description="Idempotency key: a retried batch is stored once."
    )
    profile_type: str = Field(default="cpu", description="A name from /api/v1/profile-types.")
    period: int = Field(gt=0, description="Value of one sample, in the profile type's unit.")
    start_time_ns: int = Field(ge=0, description="Start of the interval, Unix nanoseconds.")
    end_time_ns: int = Field(ge=0, description="End of the interval, Unix nanoseconds.")
    stacks: list[list[Annotated[str, Field(max_length=4096)]]] = Field(
        description="Distinct stacks, frames root first; kernel frames end in '_[k]'."
    )
    series: list[Series]
    counters: dict[str, int] = Field(
        default_factory=dict, description="Agent counters for this interval, such as drops."
    )
    latency: list[LatencyHistogram] = Field(
        default_factory=list,
        description="Network system-call latency per process and call (net_wait batches).",
    )
    connections: list[Connection] = Field(
        default_factory=list,
        description="connect() outcomes per process and destination (net_wait batches).",
    )

    @model_validator(mode="after")
    def _check_references(self) -> "Batch":
        if self.end_time_ns < self.start_time_ns:
            raise ValueError("end_time_ns is before start_time_ns")
        for s_index, series in enumerate(self.series):
            for sample in series.samples:
                if sample.stack >= len(self.stacks):
                    raise ValueError(
                        f"series[{s_index}] refers to stack {sample.stack}, "
                        f"but the batch has {len(self.stacks)} stacks"
                    )
        return self
