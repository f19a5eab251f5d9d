"""GET /metrics: the server's own metrics for Prometheus (outside /api/v1, never behind a token)."""

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import generate_latest

from podflame.server.telemetry import CONTENT_TYPE, Telemetry

router = APIRouter(tags=["health"])

_EXAMPLE = "podflame_ingested_batches_total 3\n"


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics",
    responses={200: {"content": {"text/plain": {"example": _EXAMPLE}}}},
)
def metrics(request: Request) -> PlainTextResponse:
    telemetry: Telemetry = request.app.state.telemetry
    return PlainTextResponse(generate_latest(telemetry.registry), media_type=CONTENT_TYPE)
