"""Server settings, read from PODFLAME_* environment variables (and `podflame server` flags)."""

import re
from datetime import timedelta
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from podflame.server import limits
from podflame.server.schema import check_cluster_name

DEFAULT_MAX_INGEST_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_RANGE = "31d"
DEFAULT_MAX_NODES = 65_536
DEFAULT_QUERY_TIMEOUT_SECONDS = 30.0

_DURATION = re.compile(r"(\d+)([smhdw]?)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, bare_unit: str = "s") -> timedelta:
    """`90s`, `15m`, `24h`, `7d`, `2w`; a bare number is in `bare_unit`. Raises ValueError."""
    found = _DURATION.fullmatch(text.strip())
    if not found:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 24h, 7d or 2w")
    amount, unit = found.groups()
    return timedelta(seconds=int(amount) * _UNIT_SECONDS[unit or bare_unit])


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PODFLAME_")

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8420, ge=0, le=65535, description="TCP port to listen on.")
    storage: str = Field(
        default="chdb://./data/chdb",
        description=(
            "Where profiles are stored: chdb://<directory> for embedded chDB (relative to the"
            " working directory) or http(s)://user:password@host:8123/database for ClickHouse."
        ),
    )
    retention: str = Field(
        default="7d",
        description="How long samples are kept before ClickHouse drops them: whole days,"
        " as 7d or 2w (a bare number is days).",
    )
    max_ingest_bytes: int = Field(
        default=DEFAULT_MAX_INGEST_BYTES,
        gt=0,
        description="Largest accepted request body, both as sent and after gzip decompression.",
    )
    max_stack_frames: int = Field(
        default=limits.DEFAULT_MAX_STACK_FRAMES,
        ge=2,
        description="Deepest stack stored: a deeper one keeps its leaf end, under a"
        " '[truncated]' root frame.",
    )
    max_stacks_per_push: int = Field(
        default=limits.DEFAULT_MAX_STACKS_PER_PUSH,
        gt=0,
        description="Most stacks one ingest request may hold (pprof samples, times their"
        " sample types); more: 413.",
    )
    max_frames_per_push: int = Field(
        default=limits.DEFAULT_MAX_FRAMES_PER_PUSH,
        gt=0,
        description="Most frames the stacks of one ingest request may expand to (pprof"
        " locations with their inlined lines, after --max-stack-frames); more: 413.",
    )
    max_pprof_locations: int = Field(
        default=limits.DEFAULT_MAX_PPROF_LOCATIONS,
        gt=0,
        description="Most locations in one pushed pprof profile; more: 413.",
    )
    max_pprof_lines: int = Field(
        default=limits.DEFAULT_MAX_PPROF_LINES,
        gt=0,
        description="Most lines (inlined frames) in all locations of one pprof profile; more: 413.",
    )
    max_pprof_functions: int = Field(
        default=limits.DEFAULT_MAX_PPROF_FUNCTIONS,
        gt=0,
        description="Most functions in one pushed pprof profile; more: 413.",
    )
    max_pprof_strings: int = Field(
        default=limits.DEFAULT_MAX_PPROF_STRINGS,
        gt=0,
        description="Most strings in one pushed pprof profile's string table; more: 413.",
    )
    max_pprof_sample_entries: int = Field(
        default=limits.DEFAULT_MAX_PPROF_SAMPLE_ENTRIES,
        gt=0,
        description="Most location ids, values and labels the samples of one pprof profile may"
        " hold (each costs about a microsecond to read); more: 413.",
    )
    max_profile_types: int = Field(
        default=limits.DEFAULT_MAX_PROFILE_TYPES,
        gt=0,
        description="Most profile types Pyroscope pushes may record; a push of a new one"
        " past it: 400.",
    )
    tokens_file: Path | None = Field(
        default=None,
        description='JSON file of bearer tokens: a list of {"token": "...", "scopes":'
        ' ["ingest", "query"], "namespaces": ["shop"]} (namespaces optional: omitted means'
        " all). Unset: no authentication.",
    )
    max_range: str = Field(
        default=DEFAULT_MAX_RANGE,
        description="Longest time range one query may cover, as 6h, 31d or 2w"
        " (a bare number is seconds).",
    )
    max_nodes: int = Field(
        default=DEFAULT_MAX_NODES,
        gt=0,
        description="Upper bound of a flame graph's max_nodes parameter.",
    )
    clickhouse_cluster: str | None = Field(
        default=None,
        description="ClickHouse cluster (from its remote_servers) to spread the tables over:"
        " ReplicatedMergeTree tables on every node and Distributed tables over them, created"
        " ON CLUSTER; needs http(s):// storage. Unset: plain tables on one server.",
    )
    query_timeout_seconds: float = Field(
        default=DEFAULT_QUERY_TIMEOUT_SECONDS,
        gt=0,
        description="ClickHouse max_execution_time of each query; a slower query answers 504.",
    )

    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (chain) to serve HTTPS with, together with --tls-key;"
        " unset: plain HTTP.",
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of --tls-cert.")

    @model_validator(mode="after")
    def _tls_pair(self) -> "ServerSettings":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @field_validator("retention")
    @classmethod
    def _whole_days(cls, value: str) -> str:
        # TTLs are in whole days (schema.py), so 36h would silently become 1d.
        days = parse_duration(value, bare_unit="d") / timedelta(days=1)
        if days < 1 or days != int(days):
            raise ValueError(f"{value!r}: retention must be a whole number of days, at least 1d")
        return value

    @field_validator("max_range")
    @classmethod
    def _positive_range(cls, value: str) -> str:
        if parse_duration(value) <= timedelta():
            raise ValueError(f"{value!r}: max_range must be positive")
        return value

    @field_validator("clickhouse_cluster")
    @classmethod
    def _cluster_name(cls, value: str | None) -> str | None:
        # An empty PODFLAME_CLICKHOUSE_CLUSTER (an optional Secret key left blank) means none.
        if not value:
            return None
        return check_cluster_name(value)

    @model_validator(mode="after")
    def _cluster_needs_a_server(self) -> "ServerSettings":
        if self.clickhouse_cluster and self.storage.startswith("chdb:"):
            raise ValueError(
                "clickhouse_cluster needs a ClickHouse server: set storage to"
                " http(s)://user:password@host:8123/database"
            )
        return self

    @property
    def retention_days(self) -> int:
        return int(parse_duration(self.retention, bare_unit="d") / timedelta(days=1))

    @property
    def max_range_delta(self) -> timedelta:
        return parse_duration(self.max_range)
