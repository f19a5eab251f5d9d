"""GET /api/v1/export: the selected profile as a file for external tools."""

import json
from datetime import UTC
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import PlainTextResponse

from podflame.server import exports
from podflame.server.deps import SelectedProfile, SelectedType, Store
from podflame.server.errors import ERROR_RESPONSES
from podflame.server.exports import folded
from podflame.server.store import ProfileQuery

router = APIRouter(tags=["query"])

FORMATS = ("folded", "pprof", "speedscope")


@router.get(
    "/api/v1/export",
    response_class=PlainTextResponse,
    summary="Export the selected profile",
    responses={
        **ERROR_RESPONSES,
        200: {
            "content": {
                "text/plain": {"example": "main;work;burn 120000000\n"},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object"}},
            },
            "description": "folded: text; pprof: a .pb.gz file; speedscope: a JSON file.",
        },
    },
)
def export(
    store: Store,
    selected: SelectedProfile,
    profile_type: SelectedType,
    export_format: Annotated[
        str,
        Query(
            alias="format",
            description="folded: one line per stack, frames root first joined by ';',"
            " a space, then the summed value (Brendan Gregg's collapsed format)."
            " pprof: gzip-compressed profile.proto, for `go tool pprof`."
            " speedscope: speedscope's JSON file format.",
        ),
    ] = "folded",
) -> Response:
    if export_format not in FORMATS:
        supported = ", ".join(FORMATS)
        raise HTTPException(400, f"unsupported format {export_format!r} (supported: {supported})")
    stacks = store.stacks(selected)
    if export_format == "folded":
        return PlainTextResponse(folded(stacks))
    # The dependency checked the name, so the registry has it.
    name = _file_stem(selected)
    if export_format == "pprof":
        data = exports.pprof(stacks, profile_type, selected.time_range)
        return _attachment(data, "application/octet-stream", f"{name}.pb.gz")
    document = exports.speedscope(stacks, profile_type, name)
    data = json.dumps(document, separators=(",", ":")).encode()
    return _attachment(data, "application/json", f"{name}.speedscope.json")


def _file_stem(selected: ProfileQuery) -> str:
    # Type names are identifiers, so the filename needs no quoting.
    start = selected.time_range.start.astimezone(UTC)
    return f"podflame-{selected.profile_type}-{start:%Y%m%dT%H%M%SZ}"


def _attachment(data: bytes, media_type: str, filename: str) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return Response(data, media_type=media_type, headers=headers)
