"""GET /api/v1/top: the functions costing the most, self and total."""

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from podflame.server.deps import SelectedProfile, SelectedType, Store
from podflame.server.errors import ERROR_RESPONSES

router = APIRouter(tags=["query"])


class TopFunction(BaseModel):
    name: str
    self: int = Field(description="Value of the stacks where this function is the leaf.")
    total: int = Field(description="Value of the stacks this function is on, each counted once.")


class TopResponse(BaseModel):
    unit: str = Field(description="Unit of every value, from the profile type.")
    total: int = Field(description="Value of all selected samples.")
    functions: list[TopFunction] = Field(description="By self desc, then total desc, then name.")


@router.get(
    "/api/v1/top",
    response_model=TopResponse,
    summary="Top functions of the selected profile",
    responses=ERROR_RESPONSES,
)
def top(
    store: Store,
    selected: SelectedProfile,
    profile_type: SelectedType,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Most functions returned.")] = 1000,
) -> TopResponse:
    result = store.top(selected, limit)
    functions = [
        TopFunction(name=cost.name, self=cost.self_value, total=cost.total_value)
        for cost in result.functions
    ]
    unit = profile_type.unit
    return TopResponse(unit=unit, total=result.total, functions=functions)
