"""Kubernetes probes: /healthz (the process runs) and /readyz (storage answers)."""

from fastapi import APIRouter
from pydantic import BaseModel

from podflame.server.deps import Backend
from podflame.server.errors import ERROR_RESPONSES

router = APIRouter(tags=["health"])


class Status(BaseModel):
    status: str


@router.get("/healthz", response_model=Status, summary="Liveness")
def healthz() -> Status:
    return Status(status="ok")


@router.get(
    "/readyz", response_model=Status, summary="Readiness", responses={503: ERROR_RESPONSES[503]}
)
def readyz(store: Backend) -> Status:
    # A StorageError becomes 503 through the app's handler.
    store.ping()
    return Status(status="ready")
