"""Pyroscope-compatible ingestion, so apps with a Pyroscope SDK land next to the eBPF profiles.

- `POST /push.v1.PusherService/Push`: the Connect unary call of current SDKs; errors
  are Connect errors (`{"code": ..., "message": ...}`), as its clients expect.
- `POST /ingest`: the older HTTP API (folded text or pprof); errors are podflame's.

The conversion lives in podflame.server.pyroscope; this module is HTTP only.
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from podflame.model.pprof import PprofTooLarge
from podflame.model.profile import ProfileTypeConflict
from podflame.server.body import read_body
from podflame.server.deps import Expansion, MaxIngestBytes, Store, Types
from podflame.server.errors import ERROR_RESPONSES, RETRY_AFTER_SECONDS, ErrorBody
from podflame.server.limits import IngestLimitExceeded, IngestLimits
from podflame.server.profile_types import ProfileTypes
from podflame.server.pyroscope import (
    Converted,
    LegacyUpload,
    PushError,
    decode_push_json,
    decode_push_proto,
    legacy_folded,
    legacy_pprof,
    multipart_profile,
    push_batches,
)
from podflame.server.store import InvalidBatchError, ProfileStore, StorageError

router = APIRouter(tags=["pyroscope"])

_PROTO = "application/proto"
# 2100-01-01, as far as the store's timestamps go.
_MAX_UNIX = 4_102_444_800
_JSON = "application/json"
# Connect's codes for the HTTP statuses we answer with. 413 is kept for an
# oversized body (Connect would say 429); clients read the code, not the status.
_CONNECT_CODES = {
    400: "invalid_argument",
    413: "resource_exhausted",
    415: "unimplemented",
    503: "unavailable",
}

_PUSH_BODY = {
    "requestBody": {
        "required": True,
        "description": "A push.v1.PushRequest, protobuf or protojson, optionally gzip-encoded.",
        "content": {_PROTO: {"schema": {"type": "string", "format": "binary"}}, _JSON: {}},
    }
}


class _ConnectFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@router.post(
    "/push.v1.PusherService/Push",
    summary="Pyroscope SDK push (Connect)",
    openapi_extra=_PUSH_BODY,
    response_class=Response,
    responses={
        200: {"description": "Stored: `{}` in JSON, an empty message in protobuf."},
        400: {"description": 'Connect error {"code": "invalid_argument", "message": ...}.'},
        413: {
            "description": "Connect error resource_exhausted: body or profile too large, or"
            " more stacks, frames or pprof entries than the server allows (the message"
            " names the setting)."
        },
    },
)
async def push(
    request: Request, store: Store, types: Types, max_bytes: MaxIngestBytes, limits: Expansion
) -> Response:
    """Each pushed pprof is stored under its series' `__name__` type (e.g. process_cpu)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    try:
        if media not in (_PROTO, _JSON):
            raise _ConnectFailure(
                415, f"unsupported Content-Type {media!r}; use {_PROTO} or {_JSON}"
            )
        try:
            body = await read_body(request, max_bytes)
        except HTTPException as error:
            raise _ConnectFailure(error.status_code, str(error.detail)) from None
        await run_in_threadpool(_push, store, types, media, body, max_bytes, limits)
    except _ConnectFailure as failure:
        return _connect_error(failure.status, failure.message)
    # An empty PushResponse: `{}` in protojson, zero bytes in protobuf.
    return Response(b"{}" if media == _JSON else b"", media_type=media)


def _push(
    store: ProfileStore,
    types: ProfileTypes,
    media: str,
    body: bytes,
    limit: int,
    limits: IngestLimits,
) -> None:
    try:
        series = decode_push_json(body) if media == _JSON else decode_push_proto(body)
        _store(store, types, push_batches(series, body, limit, limits), limits)
    except (PprofTooLarge, IngestLimitExceeded) as error:
        raise _ConnectFailure(413, str(error)) from None
    except (PushError, ProfileTypeConflict, InvalidBatchError) as error:
        raise _ConnectFailure(400, str(error)) from None
    except StorageError as error:
        raise _ConnectFailure(503, str(error)) from None


def _connect_error(status: int, message: str) -> JSONResponse:
    code = _CONNECT_CODES.get(status, "internal")
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


@router.post(
    "/ingest",
    summary="Pyroscope legacy ingest",
    response_class=Response,
    responses={
        **ERROR_RESPONSES,
        413: {"model": ErrorBody, "description": "Body too large, or over an ingest limit."},
    },
)
async def legacy_ingest(
    request: Request,
    store: Store,
    types: Types,
    max_bytes: MaxIngestBytes,
    limits: Expansion,
    name: Annotated[
        str, Query(min_length=1, max_length=4096, description="app[.kind]{key=value,...}")
    ],
    start: Annotated[
        float | None, Query(alias="from", ge=0, le=_MAX_UNIX, description="Unix seconds.")
    ] = None,
    until: Annotated[float | None, Query(ge=0, le=_MAX_UNIX, description="Unix seconds.")] = None,
    sample_rate: Annotated[
        int, Query(alias="sampleRate", ge=1, le=1_000_000, description="Samples a second.")
    ] = 100,
    spy_name: Annotated[str, Query(alias="spyName", description="Ignored.")] = "",
    units: Annotated[
        str,
        Query(pattern=r"^[a-z_]{0,32}$", description="samples: CPU samples (stored as ns)."),
    ] = "samples",
    aggregation_type: Annotated[
        str, Query(alias="aggregationType", description="Ignored: values are summed.")
    ] = "sum",
    upload_format: Annotated[
        str, Query(alias="format", description="folded (a;b;c 12 per line) or pprof.")
    ] = "folded",
) -> Response:
    """A multipart/form-data body's `profile` part is read as pprof."""
    upload = LegacyUpload(name, start, until, sample_rate, units, spy_name)
    content_type = request.headers.get("content-type", "")
    multipart = content_type.lower().startswith("multipart/form-data")
    if upload_format not in ("folded", "pprof") and not multipart:
        raise HTTPException(400, f"unsupported format {upload_format!r} (supported: folded, pprof)")
    body = await read_body(request, max_bytes)
    request_body = _LegacyBody(content_type, multipart, upload_format, body)
    await run_in_threadpool(_legacy, store, types, upload, request_body, max_bytes, limits)
    return Response(status_code=200)


@dataclass(frozen=True)
class _LegacyBody:
    content_type: str
    multipart: bool
    upload_format: str
    data: bytes


def _legacy(
    store: ProfileStore,
    types: ProfileTypes,
    upload: LegacyUpload,
    body: _LegacyBody,
    limit: int,
    limits: IngestLimits,
) -> None:
    # IngestLimitExceeded goes to its 413 handler (errors.py).
    try:
        if body.multipart:
            profile = multipart_profile(body.content_type, body.data)
            converted = legacy_pprof(upload, profile, body.data, limit, limits)
        elif body.upload_format == "pprof":
            converted = legacy_pprof(upload, body.data, body.data, limit, limits)
        else:
            converted = legacy_folded(upload, body.data, limits)
        _store(store, types, converted, limits)
    except PprofTooLarge as error:
        raise HTTPException(413, str(error)) from None
    except (PushError, ProfileTypeConflict) as error:
        raise HTTPException(400, str(error)) from None


def _store(
    store: ProfileStore, types: ProfileTypes, converted: Converted, limits: IngestLimits
) -> None:
    # Every type is checked before any is recorded, and the batches were checked while
    # converting: a refused upload writes nothing. Types first: a batch of a type the
    # registry does not know is refused.
    names = types.record(converted.types, limits.max_profile_types)
    for profile_type, batch in converted.batches:
        name = names[profile_type.name, profile_type.unit]
        if name != batch.profile_type:  # pushed in another unit than the name's
            batch = batch.model_copy(update={"profile_type": name})
        store.ingest(batch)
