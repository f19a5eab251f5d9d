"""Server settings, read from PODFLAME_* environment variables."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MAX_INGEST_BYTES = 64 * 1024 * 1024


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
    retention_days: int = Field(
        default=7, ge=1, description="Days samples are kept before ClickHouse drops them."
    )
    max_ingest_bytes: int = Field(
        default=DEFAULT_MAX_INGEST_BYTES,
        gt=0,
        description="Largest accepted ingest body, measured after gzip decompression.",
    )
