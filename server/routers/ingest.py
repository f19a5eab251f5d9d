"""POST /api/v1/ingest: agents send their batches here."""

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from podflame.model import Batch
from podflame.server.body import read_body
from podflame.server.deps import Expansion, MaxIngestBytes, Store, Types
from podflame.server.errors import ERROR_RESPONSES, ErrorBody
from podflame.server.gc_pause import pause_collector
from podflame.server.limits import IngestLimits, bound_batch
from podflame.server.profile_types import ProfileTypes
from podflame.server.store import InvalidBatchError, ProfileStore

router = APIRouter(tags=["ingest"])

# The body is read by hand (to decompress and cap it), so FastAPI cannot infer
# its schema; declare it, pointing at the Batch model the app adds to the schema.
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Batch"}}},
    }
}


class IngestResponse(BaseModel):
    stored_samples: int = Field(description="Sample rows in the batch.")
    stacks: int = Field(description="Distinct stacks in the batch.")


@router.post(
    "/api/v1/ingest",
    response_model=IngestResponse,
    summary="Store one agent batch",
    openapi_extra=_BATCH_BODY,
    responses={
        **ERROR_RESPONSES,
        413: {
            "model": ErrorBody,
            "description": "Body too large, or more stacks or frames than the server allows"
            " (`limit` names the setting).",
        },
        415: {"model": ErrorBody, "description": "Unsupported Content-Encoding."},
    },
)
async def ingest(
    request: Request,
    store: Store,
    types: Types,
    max_bytes: MaxIngestBytes,
    limits: Expansion,
    # Declared for the documentation only; read_body() looks at the header itself.
    content_encoding: Annotated[
        str | None, Header(description="gzip to send a compressed body.")
    ] = None,
    # model.wire.ATTEMPT_HEADER (FastAPI reads podflame_attempt as Podflame-Attempt).
    podflame_attempt: Annotated[
        str | None,
        Header(
            description="1 when the sender never sent this batch before (the store then"
            " skips looking for it); absent or more for a batch that may be stored already."
        ),
    ] = None,
) -> IngestResponse:
    """A retried batch (same batch_id) is stored once."""
    body = await read_body(request, max_bytes)
    first_send = (podflame_attempt or "").strip() == "1"
    # Parsing a large batch and writing it block; keep them off the event loop.
    return await run_in_threadpool(_store, store, types, body, limits, first_send)


def _store(
    store: ProfileStore,
    types: ProfileTypes,
    body: bytes,
    limits: IngestLimits,
    first_send: bool = False,
) -> IngestResponse:
    # The batch is parsed, stored and freed inside the pause (see gc_pause).
    with pause_collector():
        batch = parse_batch(body)
        # InvalidBatchError goes to its 400 handler, IngestLimitExceeded to its 413 (errors.py).
        if types.get(batch.profile_type) is None:
            known = ", ".join(sorted(item.name for item in types.known()))
            message = f"unknown profile_type {batch.profile_type!r} (known: {known})"
            raise InvalidBatchError(message)
        result = store.ingest(bound_batch(batch, limits), first_send)
    return IngestResponse(stored_samples=result.stored_samples, stacks=result.stacks)


def parse_batch(body: bytes) -> Batch:
    try:
        return Batch.model_validate_json(body)
    except ValidationError as error:
        errors = error.errors(include_url=False, include_context=False, include_input=False)
        if any(item["type"] == "json_invalid" for item in errors):
            raise HTTPException(400, f"malformed JSON: {errors[0]['msg']}") from None
        located = [{**item, "loc": ("body", *item["loc"])} for item in errors]
        raise RequestValidationError(located) from None
