"""Agent settings: every field is a `podflame agent` flag and a PODFLAME_<FIELD> variable."""

import socket
from pathlib import Path

from pydantic import AnyHttpUrl, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PODFLAME_")

    server: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8420"),
        description="Base URL of the podflame server the agent ships batches to.",
    )
    frequency: int = Field(
        default=19,
        ge=1,
        le=1000,
        description="Samples per second per CPU. A prime avoids lockstep with periodic work.",
    )
    interval: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds between drains of the kernel maps (one batch per drain).",
    )
    node_name: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="The node label of every sample (on Kubernetes: spec.nodeName).",
    )
    kernel_stacks: bool = Field(
        default=True, description="Record kernel frames below the user frames."
    )
    network: bool = Field(
        default=True,
        description="Trace network system calls: latency histograms per process and call, "
        "net_wait stacks and connect() outcomes (the net_wait profile type).",
    )
    token: str | None = Field(
        default=None,
        description="Bearer token with the ingest scope, for a server started with --tokens-file.",
    )
    max_pending_batches: int = Field(
        default=30,
        ge=1,
        description="Batches kept in memory while the server is unreachable; the oldest go first.",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address of the agent's Prometheus /metrics endpoint."
    )
    metrics_port: int = Field(
        default=9421, ge=0, le=65535, description="Port of /metrics; 0 turns it off."
    )
    symbol_cache_bytes: int = Field(
        default=64 << 20,
        ge=1 << 20,
        description="Memory for parsed symbol tables; the least recently used go first.",
    )
    symbol_cache_dir: Path | None = Field(
        default=None,
        description="Directory for parsed symbol tables, so a restarted agent does not parse "
        "binaries again (by build-id); unset: no disk cache.",
    )
