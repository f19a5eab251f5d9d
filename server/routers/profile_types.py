"""GET /api/v1/profile-types: what can be queried, and in which unit."""

from datetime import UTC, datetime

from fastapi import APIRouter

from podflame.model import ProfileType
from podflame.model.profile import BUILTIN_PROFILE_TYPES
from podflame.server.deps import (
    Limits,
    NamespaceRestriction,
    NamespaceScope,
    QueryLimits,
    Store,
    Types,
)
from podflame.server.profile_types import ProfileTypes
from podflame.server.store import ProfileQuery, ProfileStore
from podflame.server.timerange import TimeRange

router = APIRouter(tags=["query"])


@router.get(
    "/api/v1/profile-types",
    response_model=list[ProfileType],
    summary="Profile types",
    description="The built-in types, then those recorded at ingest (e.g. Pyroscope's"
    " process_cpu), by name. A token limited to some namespaces sees the recorded types"
    " that have samples in them within --max-range.",
)
def profile_types(
    store: Store, types: Types, scope: NamespaceScope, limits: Limits
) -> list[ProfileType]:
    return visible_types(store, types, scope, limits)


def visible_types(
    store: ProfileStore, types: ProfileTypes, scope: NamespaceRestriction, limits: QueryLimits
) -> list[ProfileType]:
    """All types for an unrestricted caller; else the built-ins and the recorded types
    with recent samples in the caller's namespaces."""
    every = types.all()
    if scope.namespaces is None:
        return every
    now = datetime.now(UTC)
    recent = TimeRange(now - limits.max_range, now)
    return [
        item
        for item in every
        if item.name in BUILTIN_PROFILE_TYPES or _has_samples(store, scope, item.name, recent)
    ]


def _has_samples(
    store: ProfileStore, scope: NamespaceRestriction, name: str, time_range: TimeRange
) -> bool:
    """Whether type `name` has samples in the caller's namespaces (a runtime type's name
    may say whose it is)."""
    query = ProfileQuery(name, scope.restrict(()), time_range)
    return bool(store.label_values(query, "namespace", 1))
