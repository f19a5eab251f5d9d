"""FastAPI dependencies: the store and the parsed, validated query parameters."""

from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request

from podflame.model import PROFILE_TYPES
from podflame.server.selector import parse_selector
from podflame.server.store import ProfileQuery, ProfileStore
from podflame.server.timerange import DEFAULT_FROM, DEFAULT_UNTIL, parse_range


def get_store(request: Request) -> ProfileStore:
    store: ProfileStore = request.app.state.store
    return store


def get_max_ingest_bytes(request: Request) -> int:
    limit: int = request.app.state.max_ingest_bytes
    return limit


def profile_type_name(
    profile_type: Annotated[
        str, Query(alias="type", description="A name from /api/v1/profile-types.")
    ] = "cpu",
) -> str:
    if profile_type not in PROFILE_TYPES:
        known = ", ".join(sorted(PROFILE_TYPES))
        raise HTTPException(400, f"unknown profile type {profile_type!r} (known: {known})")
    return profile_type


def profile_query(
    profile_type: Annotated[str, Depends(profile_type_name)],
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
) -> ProfileQuery:
    # SelectorError and TimeRangeError propagate to their 400 handlers.
    return ProfileQuery(profile_type, parse_selector(query), parse_range(start, until))


Store = Annotated[ProfileStore, Depends(get_store)]
MaxIngestBytes = Annotated[int, Depends(get_max_ingest_bytes)]
SelectedProfile = Annotated[ProfileQuery, Depends(profile_query)]
