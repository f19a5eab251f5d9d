"""GET /api/v1/flamegraph: the selected profile as a compact tree for drawing."""

from fastapi import APIRouter
from pydantic import BaseModel, Field

from podflame.model.tree import flame_graph
from podflame.server.deps import MaxNodes, SelectedProfile, SelectedType, Store
from podflame.server.errors import ERROR_RESPONSES

router = APIRouter(tags=["query"])

_NODES_DESCRIPTION = (
    "One [parent, name, self, total] per node in depth-first pre-order: parent is the index of"
    " the parent node in this list (-1 for the root), name an index into `names`. Node 0 is"
    " the root, named 'total'; children follow their parent sorted by name. When max_nodes"
    " dropped nodes, their value is in a last child named 'other' of their parent, so a node's"
    " total is always its self plus its children's totals."
)


class FlameGraphResponse(BaseModel):
    unit: str = Field(description="Unit of every value, from the profile type.")
    total: int = Field(description="Value of all selected samples (the root's total).")
    truncated: bool = Field(description="Whether max_nodes merged nodes into 'other'.")
    names: list[str] = Field(description="Frame names, each once; nodes refer to them by index.")
    nodes: list[list[int]] = Field(description=_NODES_DESCRIPTION)


@router.get(
    "/api/v1/flamegraph",
    response_model=FlameGraphResponse,
    summary="Flame graph of the selected profile",
    responses=ERROR_RESPONSES,
)
def flamegraph(
    store: Store, selected: SelectedProfile, profile_type: SelectedType, max_nodes: MaxNodes
) -> FlameGraphResponse:
    stacks = store.stacks(selected)
    tree = flame_graph(((stack.frames, stack.value) for stack in stacks), max_nodes)
    return FlameGraphResponse(
        unit=profile_type.unit,
        total=tree.totals[0],
        truncated=tree.truncated,
        names=tree.names,
        nodes=tree.nodes,
    )
