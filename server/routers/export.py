"""GET /api/v1/export: the selected profile as text, for external tools."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse

from podflame.server.deps import SelectedProfile, Store
from podflame.server.errors import ERROR_RESPONSES
from podflame.server.store import StackTotal

router = APIRouter(tags=["query"])

FORMATS = ("folded",)
# A line break inside a frame name would split its folded line in two.
_LINE_BREAKS = str.maketrans({"\n": "\\n", "\r": "\\r"})


@router.get(
    "/api/v1/export",
    response_class=PlainTextResponse,
    summary="Export the selected profile",
    responses={
        **ERROR_RESPONSES,
        200: {"content": {"text/plain": {"example": "main;work;burn 120000000\n"}}},
    },
)
def export(
    store: Store,
    selected: SelectedProfile,
    export_format: Annotated[
        str,
        Query(
            alias="format",
            description="folded: one line per stack, frames root first joined by ';',"
            " a space, then the summed value (Brendan Gregg's collapsed format).",
        ),
    ] = "folded",
) -> PlainTextResponse:
    if export_format not in FORMATS:
        raise HTTPException(400, f"unsupported format {export_format!r} (supported: folded)")
    return PlainTextResponse(folded(store.stacks(selected)))


def folded(stacks: list[StackTotal]) -> str:
    """Brendan Gregg's collapsed format, one `root;...;leaf value` line per stack."""
    return "".join(f"{_stack_text(stack)} {stack.value}\n" for stack in stacks)


def _stack_text(stack: StackTotal) -> str:
    return ";".join(stack.frames).translate(_LINE_BREAKS)
