"""GET /api/v1/profile-types: what can be queried, and in which unit."""

from fastapi import APIRouter

from podflame.model import PROFILE_TYPES, ProfileType

router = APIRouter(tags=["query"])


@router.get("/api/v1/profile-types", response_model=list[ProfileType], summary="Profile types")
def profile_types() -> list[ProfileType]:
    return list(PROFILE_TYPES.values())
