"""GET /api/v1/labels and /api/v1/labels/{name}/values: what a selector can match on."""

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from podflame.server.deps import SelectedProfile, Store
from podflame.server.errors import ERROR_RESPONSES, ParameterError
from podflame.server.selector import LABEL_NAME

router = APIRouter(tags=["query"])

MAX_LABEL_NAMES = 10_000


class LabelNamesResponse(BaseModel):
    names: list[str] = Field(
        description="Sorted names of the labels with a non-empty value in the selected samples."
    )


class LabelValuesResponse(BaseModel):
    name: str
    values: list[str] = Field(description="Distinct non-empty values, sorted (pid numerically).")
    truncated: bool = Field(description="Whether more values exist than `limit`.")


@router.get(
    "/api/v1/labels",
    response_model=LabelNamesResponse,
    summary="Label names of the selected samples",
    responses=ERROR_RESPONSES,
)
def label_names(store: Store, selected: SelectedProfile) -> LabelNamesResponse:
    return LabelNamesResponse(names=store.label_names(selected, MAX_LABEL_NAMES))


@router.get(
    "/api/v1/labels/{name}/values",
    response_model=LabelValuesResponse,
    summary="Values of one label in the selected samples",
    responses=ERROR_RESPONSES,
)
def label_values(
    store: Store,
    selected: SelectedProfile,
    name: Annotated[str, Path(description="A label name, such as pod or pid.")],
    limit: Annotated[int, Query(ge=1, le=100_000, description="Most values returned.")] = 1000,
) -> LabelValuesResponse:
    if not LABEL_NAME.fullmatch(name):
        raise ParameterError("name", f"{name!r} is not a label name ([A-Za-z_][A-Za-z0-9_]*)")
    # One more than asked tells whether there are more.
    values = store.label_values(selected, name, limit + 1)
    return LabelValuesResponse(name=name, values=values[:limit], truncated=len(values) > limit)
