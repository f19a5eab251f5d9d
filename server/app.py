"""The composition root: wires a store into the HTTP API and the static UI."""

from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from podflame.model import Batch
from podflame.server.errors import install_error_handlers
from podflame.server.openapi import add_schemas
from podflame.server.routers import (
    diff,
    export,
    flamegraph,
    health,
    ingest,
    labels,
    metrics,
    profile_types,
    pyroscope,
    timeline,
    top,
)
from podflame.server.settings import DEFAULT_MAX_INGEST_BYTES
from podflame.server.store import ProfileStore

_DESCRIPTION = (
    "Continuous eBPF profiles of Kubernetes pods: agents POST batches to /api/v1/ingest;"
    " query them as folded stacks or top functions with PromQL-style label selectors."
)


def create_app(store: ProfileStore, *, max_ingest_bytes: int = DEFAULT_MAX_INGEST_BYTES) -> FastAPI:
    app = FastAPI(title="podflame", version=_version(), description=_DESCRIPTION)
    app.state.store = store
    app.state.max_ingest_bytes = max_ingest_bytes
    install_error_handlers(app)
    routers = (ingest, pyroscope, export, top, flamegraph, diff, timeline, labels, profile_types)
    for module in (*routers, metrics, health):
        app.include_router(module.router)
    add_schemas(app, [Batch])
    # Mounted last: "/" would otherwise shadow the API routes.
    app.mount("/", StaticFiles(directory=ui_directory(), html=True), name="ui")
    return app


def ui_directory() -> Path:
    return Path(str(files("podflame.ui")))


def _version() -> str:
    try:
        return version("podflame")
    except PackageNotFoundError:
        return "0.0.0"
