"""GET /api/v1/profile-types: what can be queried, and in which unit."""

from fastapi import APIRouter

from podflame.model import ProfileType
from podflame.server.deps import Store
from podflame.server.profile_types import all_profile_types

router = APIRouter(tags=["query"])


@router.get(
    "/api/v1/profile-types",
    response_model=list[ProfileType],
    summary="Profile types",
    description="The built-in types, then those recorded at ingest (e.g. Pyroscope's"
    " process_cpu), by name.",
)
def profile_types(store: Store) -> list[ProfileType]:
    return all_profile_types(store)
