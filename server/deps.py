"""FastAPI dependencies: the store, the caller's namespace scope and the parsed, validated,
limited query parameters."""

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Query, Request

from podflame.model import ProfileType
from podflame.server.auth import PRINCIPAL_STATE_KEY, Principal
from podflame.server.errors import ParameterError
from podflame.server.limits import IngestLimits
from podflame.server.profile_types import ProfileTypes
from podflame.server.selector import Matcher, Op, parse_selector
from podflame.server.settings import DEFAULT_MAX_NODES
from podflame.server.store import LabelSelection, NetworkStore, ProfileQuery, ProfileStore, Storage
from podflame.server.timerange import (
    DEFAULT_FROM,
    DEFAULT_UNTIL,
    TimeRange,
    TimeRangeError,
    parse_range,
)

DEFAULT_FLAMEGRAPH_NODES = 8192  # as Pyroscope's default maxNodes


@dataclass(frozen=True)
class QueryLimits:
    """Bounds on what one query may ask for (flags --max-range and --max-nodes)."""

    max_range: timedelta = timedelta(days=31)
    max_nodes: int = DEFAULT_MAX_NODES

    def check_range(self, time_range: TimeRange, parameter: str = "from") -> None:
        """Raise TimeRangeError (400 naming `parameter`) for a range longer than max_range."""
        if time_range.end - time_range.start > self.max_range:
            raise TimeRangeError(
                parameter,
                f"the range covers {time_range.end - time_range.start}, more than the"
                f" {self.max_range} allowed (PODFLAME_MAX_RANGE)",
            )


@dataclass(frozen=True)
class NamespaceRestriction:
    """The namespaces a caller may read; None when it may read them all."""

    namespaces: tuple[str, ...] | None = None

    def restrict(self, matchers: tuple[Matcher, ...]) -> tuple[Matcher, ...]:
        """ANDs a namespace matcher to a parsed selector, so nothing outside the scope matches."""
        if self.namespaces is None:
            return matchers
        if len(self.namespaces) == 1:
            # An equality, unlike a regex, lets ClickHouse use the primary key.
            return (*matchers, Matcher("namespace", Op.EQ, self.namespaces[0]))
        # Escaped, so a namespace is matched literally; re2 accepts Python's escapes.
        alternatives = "|".join(re.escape(name) for name in self.namespaces)
        return (*matchers, Matcher("namespace", Op.RE, alternatives))

    def allows(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces


def get_store(request: Request) -> ProfileStore:
    store: ProfileStore = request.app.state.store
    return store


def get_network_store(request: Request) -> NetworkStore:
    store: NetworkStore = request.app.state.network_store
    return store


def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


def get_max_ingest_bytes(request: Request) -> int:
    limit: int = request.app.state.max_ingest_bytes
    return limit


def get_ingest_limits(request: Request) -> IngestLimits:
    limits: IngestLimits = request.app.state.ingest_limits
    return limits


def get_limits(request: Request) -> QueryLimits:
    limits: QueryLimits = request.app.state.limits
    return limits


def namespace_scope(request: Request) -> NamespaceRestriction:
    # Set by BearerAuthMiddleware; absent when authentication is off.
    principal: Principal | None = getattr(request.state, PRINCIPAL_STATE_KEY, None)
    return NamespaceRestriction(principal.namespaces if principal else None)


def get_profile_types(request: Request) -> ProfileTypes:
    types: ProfileTypes = request.app.state.profile_types
    return types


def selected_profile_type(
    types: Annotated[ProfileTypes, Depends(get_profile_types)],
    scope: Annotated[NamespaceRestriction, Depends(namespace_scope)],
    profile_type: Annotated[
        str, Query(alias="type", description="A name from /api/v1/profile-types.")
    ] = "cpu",
) -> ProfileType:
    # Types pushed by Pyroscope SDKs live in the store; a miss asks it (400 if unknown).
    # A caller limited to some namespaces is not told the types of the others.
    return types.require(profile_type, list_known=scope.namespaces is None)


def profile_type_name(
    profile_type: Annotated[ProfileType, Depends(selected_profile_type)],
) -> str:
    return profile_type.name


def label_selection(
    scope: Annotated[NamespaceRestriction, Depends(namespace_scope)],
    limits: Annotated[QueryLimits, Depends(get_limits)],
    query: Annotated[
        str,
        Query(
            description='Label selector in PromQL syntax, e.g. {namespace="shop", pod=~"api-.*"};'
            " empty selects everything."
        ),
    ] = "",
    start: Annotated[
        str,
        Query(
            alias="from",
            description="Start (inclusive): Unix seconds, RFC 3339, now or now-<n><s|m|h|d|w>.",
        ),
    ] = DEFAULT_FROM,
    until: Annotated[
        str, Query(description="End (exclusive), same forms as from.")
    ] = DEFAULT_UNTIL,
) -> LabelSelection:
    """The selector (within the caller's namespaces) and the time range (within max_range)."""
    # SelectorError and TimeRangeError propagate to their 400 handlers.
    time_range = parse_range(start, until)
    limits.check_range(time_range)
    return LabelSelection(scope.restrict(parse_selector(query)), time_range)


def profile_query(
    profile_type: Annotated[str, Depends(profile_type_name)],
    selection: Annotated[LabelSelection, Depends(label_selection)],
) -> ProfileQuery:
    return ProfileQuery(profile_type, selection.matchers, selection.time_range)


def max_nodes(
    limits: Annotated[QueryLimits, Depends(get_limits)],
    nodes: Annotated[
        int,
        Query(alias="max_nodes", ge=1, description="Most nodes returned; the rest are merged."),
    ] = DEFAULT_FLAMEGRAPH_NODES,
) -> int:
    if nodes > limits.max_nodes:
        message = f"{nodes} is above the server's limit {limits.max_nodes} (PODFLAME_MAX_NODES)"
        raise ParameterError("max_nodes", message)
    return nodes


Store = Annotated[ProfileStore, Depends(get_store)]
Network = Annotated[NetworkStore, Depends(get_network_store)]
# The whole backend, for what concerns it whole (readiness).
Backend = Annotated[Storage, Depends(get_storage)]
# The app's profile types (built-in and recorded), and the one a query's `type` names.
Types = Annotated[ProfileTypes, Depends(get_profile_types)]
SelectedType = Annotated[ProfileType, Depends(selected_profile_type)]
MaxIngestBytes = Annotated[int, Depends(get_max_ingest_bytes)]
# What one ingest request may expand to (stacks, frames, pprof entries, profile types).
Expansion = Annotated[IngestLimits, Depends(get_ingest_limits)]
Limits = Annotated[QueryLimits, Depends(get_limits)]
# For routers that parse selectors themselves (labels, diff's left and right):
# pass each parsed selector through .restrict().
NamespaceScope = Annotated[NamespaceRestriction, Depends(namespace_scope)]
SelectedProfile = Annotated[ProfileQuery, Depends(profile_query)]
# The selector and time range alone, for data that is not a profile (network).
Selected = Annotated[LabelSelection, Depends(label_selection)]
# A flame graph's `max_nodes` parameter, checked against --max-nodes.
MaxNodes = Annotated[int, Depends(max_nodes)]
