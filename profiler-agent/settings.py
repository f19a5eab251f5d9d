"""Agent settings: every field is a `podflame agent` flag and a PODFLAME_<FIELD> variable."""

import socket
import ssl
from pathlib import Path

from pydantic import AnyHttpUrl, Field, FilePath, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from podflame.agent.pods import pod_label_names

DEFAULT_POD_LABELS = "app.kubernetes.io/name,app.kubernetes.io/version,app,version"


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
        description="The node label of every sample, and the node whose pods the agent watches "
        "(on Kubernetes: spec.nodeName from the downward API).",
    )
    kubernetes: bool = Field(
        default=True,
        description="Label samples with their pod's metadata from the Kubernetes API: in a pod "
        "through its service account, elsewhere only with --kubeconfig. Off (or unreachable): "
        "samples still carry the cgroup's pod_uid and container_id.",
    )
    kubeconfig: FilePath | None = Field(
        default=None,
        description="kubeconfig file for reaching the Kubernetes API from outside a pod.",
    )
    pod_labels: str = Field(
        default=DEFAULT_POD_LABELS,
        description="Comma-separated pod label keys copied onto the pod's samples, each as its "
        "own label; characters other than letters, digits and _ become _ "
        "(app.kubernetes.io/name -> app_kubernetes_io_name). Empty: none.",
    )
    kernel_stacks: bool = Field(
        default=True, description="Record kernel frames below the user frames."
    )
    python: bool = Field(
        default=True,
        description="Name the Python functions of CPython 3.6-3.13 processes, read from the "
        "interpreter's own state (see profiling.md, Python).",
    )
    unwind_tables: bool = Field(
        default=False,
        description="Walk user stacks with unwind tables built from the binaries' .eh_frame, "
        "so code built without frame pointers keeps its callers (x86-64; see profiling.md).",
    )
    unwind_table_rows: int = Field(
        default=1 << 20,
        ge=1 << 10,
        le=1 << 24,
        description="With --unwind-tables: rows of all loaded tables together, 16 bytes each "
        "in kernel memory; tables past it are not loaded (frame pointers there).",
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
        description="Without --spool-dir: batches kept in memory while the server is "
        "unreachable; the oldest go first.",
    )
    spool_dir: Path | None = Field(
        default=None,
        description="Directory where batches wait, one file each, until the server acknowledges "
        "them; they survive an agent restart and are sent oldest first. Unset: in memory "
        "(--max-pending-batches).",
    )
    spool_max_bytes: int = Field(
        default=256 << 20,
        ge=1 << 20,
        description="Bytes of batches --spool-dir may hold; past it the oldest go first.",
    )
    shutdown_timeout: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="Seconds after SIGTERM the agent gives the server to acknowledge what it "
        "holds; the rest stays in --spool-dir (or, without one, is lost and counted).",
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
    ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CA certificate(s) that signed the server's HTTPS"
        " certificate (an https --server); unset: the system's trust store.",
    )

    @field_validator("ca_file")
    @classmethod
    def _loadable_ca_file(cls, value: Path | None) -> Path | None:
        # Checked with the other settings, before BPF is loaded, rather than at the first send.
        if value is not None:
            try:
                ssl.create_default_context(cafile=value)
            except (OSError, ssl.SSLError) as error:
                raise ValueError(f"cannot load CA certificates from {value}: {error}") from None
        return value

    @field_validator("pod_labels")
    @classmethod
    def _pod_label_keys_are_valid(cls, value: str) -> str:
        pod_label_names(_split(value))
        return value

    def pod_label_map(self) -> dict[str, str]:
        """Pod label key -> sample label name, for --pod-labels."""
        return pod_label_names(_split(self.pod_labels))


def _split(keys: str) -> list[str]:
    return [key.strip() for key in keys.split(",") if key.strip()]
