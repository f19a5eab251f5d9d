"""The storage seams: what the HTTP layer needs from storage, one Protocol per concern.

Routers depend on the Protocol of their concern only (profiles, network, profile
types); `Storage` is all of them plus ping and close, what `create_app` takes. The
ClickHouse store implements the lot in one class; a store can be swapped (or faked in
a caller's tests) without touching the routers.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from podflame.model import Batch, ProfileType
from podflame.model.frames import Frame
from podflame.server.selector import Matcher
from podflame.server.timerange import TimeRange


class StorageError(RuntimeError):
    """The store could not be reached or failed; the request may be retried."""


class InvalidBatchError(ValueError):
    """The batch is well-formed but cannot be stored, e.g. an unknown profile type."""


@dataclass(frozen=True)
class ProfileQuery:
    """Which samples to aggregate: one profile type, a label selector and a time range."""

    profile_type: str
    matchers: tuple[Matcher, ...]
    time_range: TimeRange


@dataclass(frozen=True)
class LabelSelection:
    """Which processes' data to read, whatever its kind: a label selector and a time range."""

    matchers: tuple[Matcher, ...]
    time_range: TimeRange


@dataclass(frozen=True)
class LatencyQuery:
    """Network latency summed per group: `group_by` names labels or `syscall`."""

    selection: LabelSelection
    group_by: tuple[str, ...]
    # Most groups returned, those with the most calls.
    limit: int


@dataclass(frozen=True)
class LatencySums:
    """One group's calls: totals and the summed histogram (bucket index -> calls)."""

    # One value per name of LatencyQuery.group_by, in its order.
    key: tuple[str, ...]
    count: int
    errors: int
    eagain: int
    max_ns: int
    buckets: dict[int, int]


@dataclass(frozen=True)
class LatencyStep:
    """One group's calls during one step."""

    key: tuple[str, ...]
    # Start of the step, Unix milliseconds, a multiple of the step.
    start_ms: int
    count: int
    max_ns: int
    buckets: dict[int, int]


@dataclass(frozen=True)
class PeerSums:
    """connect() calls from one source to one address:port (and destination labels)."""

    source: dict[str, str]
    address: str
    port: int
    destination: dict[str, str]
    count: int
    # Calls per errno name ('ok' and 'EINPROGRESS' are not errors).
    errors: dict[str, int]
    in_progress: int
    # Latency of the completed calls: EINPROGRESS ones were not followed to the end.
    max_ns: int
    buckets: dict[int, int]


@dataclass(frozen=True)
class SeriesPoint:
    """The summed value of one group of samples during one step."""

    # One label value per name grouped by, in its order ('' where a sample has none).
    key: tuple[str, ...]
    # Start of the step, Unix milliseconds, a multiple of the step.
    start_ms: int
    value: int


@dataclass(frozen=True)
class IngestResult:
    stored_samples: int
    stacks: int


@dataclass(frozen=True)
class StackTotal:
    """One distinct stack, frames root first, and the sum of its values."""

    stack: tuple[Frame, ...]
    value: int

    @property
    def frames(self) -> tuple[str, ...]:
        """The frames' labels: what the flame graph and the folded text show."""
        return tuple(frame.label for frame in self.stack)


@dataclass(frozen=True)
class FunctionCost:
    name: str
    # Value of the stacks whose leaf is this function.
    self_value: int
    # Value of the stacks this function is on, each stack counted once.
    total_value: int


@dataclass(frozen=True)
class TopResult:
    total: int
    functions: tuple[FunctionCost, ...]


class ProfileStore(Protocol):
    """Profiles: what ingest writes and the profile queries read."""

    def ingest(self, batch: Batch, first_send: bool = False) -> IngestResult:
        """Store a batch (its profile samples and its network rows); storing the same
        batch_id again changes nothing. `first_send`: its sender says it never sent this
        batch before, so the store need not look for it (a false claim can only store
        that sender's batch twice).

        Raises InvalidBatchError for content the store rejects.
        """
        ...

    def stacks(self, query: ProfileQuery) -> list[StackTotal]:
        """Distinct stacks of the selected samples with their summed values."""
        ...

    def top(self, query: ProfileQuery, limit: int) -> TopResult:
        """The `limit` functions with the highest self value."""
        ...

    def timeline(self, query: ProfileQuery, step_seconds: int) -> list[tuple[int, int]]:
        """(bucket start in Unix seconds, summed value) of the non-empty buckets, in order.

        Buckets are aligned to multiples of `step_seconds` since the epoch.
        """
        ...

    def series(
        self, query: ProfileQuery, step_ms: int, group_by: tuple[str, ...], limit: int
    ) -> list[SeriesPoint]:
        """Per distinct value of the `group_by` labels, the summed value of each non-empty
        step, steps aligned to multiples of `step_ms` since the epoch; at most `limit`."""
        ...

    def label_names(self, query: ProfileQuery, limit: int) -> list[str]:
        """Sorted names of the labels with a non-empty value in the selected samples."""
        ...

    def label_values(self, query: ProfileQuery, name: str, limit: int) -> list[str]:
        """The first `limit` distinct non-empty values of label `name`, sorted (pid numerically)."""
        ...


class NetworkStore(Protocol):
    """Network latency and connect() outcomes, for /api/v1/network."""

    def network_latency(self, query: LatencyQuery) -> list[LatencySums]:
        """The `query.limit` groups with the most calls, by count descending."""
        ...

    def network_latency_steps(self, query: LatencyQuery, step_seconds: int) -> list[LatencyStep]:
        """Per step of the groups network_latency returns, the non-empty steps in order.

        Steps are aligned to multiples of `step_seconds` since the epoch.
        """
        ...

    def network_peers(self, selection: LabelSelection, limit: int) -> list[PeerSums]:
        """The `limit` (source, address, port, destination) with the most connect() calls."""
        ...


class ProfileTypeStore(Protocol):
    """The profile types recorded at runtime (server/profile_types.ProfileTypes reads it)."""

    def profile_types(self, add: Sequence[ProfileType] = ()) -> list[ProfileType]:
        """Record the runtime types in `add` (built-ins are never recorded), then list all
        recorded ones; the first unit recorded for a name wins."""
        ...


class Storage(ProfileStore, NetworkStore, ProfileTypeStore, Protocol):
    """The whole backend, as the composition root opens it and hands its parts out."""

    def ping(self) -> None:
        """Return if the store answers, else raise StorageError."""
        ...

    def close(self) -> None: ...
