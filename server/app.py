"""The composition root: wires a store into the HTTP API and the static UI."""

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from podflame.model import Batch
from podflame.server.auth import Authenticator, BearerAuthMiddleware, TokenEntry
from podflame.server.body import BodyLimitMiddleware
from podflame.server.deps import QueryLimits
from podflame.server.errors import install_error_handlers
from podflame.server.limits import IngestLimits
from podflame.server.openapi import add_schemas
from podflame.server.profile_types import ProfileTypes
from podflame.server.routers import (
    diff,
    export,
    flamegraph,
    health,
    ingest,
    labels,
    metrics,
    network,
    profile_types,
    pyroscope,
    querier,
    render,
    timeline,
    top,
)
from podflame.server.settings import DEFAULT_MAX_INGEST_BYTES
from podflame.server.store import Storage
from podflame.server.telemetry import MeteredStore, MetricsMiddleware, Telemetry

_DESCRIPTION = (
    "Continuous eBPF profiles of Kubernetes pods: agents POST batches to /api/v1/ingest;"
    " query them as folded stacks or top functions with PromQL-style label selectors."
)


def create_app(
    store: Storage,
    *,
    max_ingest_bytes: int = DEFAULT_MAX_INGEST_BYTES,
    limits: QueryLimits | None = None,
    ingest_limits: IngestLimits | None = None,
    tokens: Sequence[TokenEntry] | None = None,
) -> FastAPI:
    """`tokens` None: no authentication; see auth.py for what they guard."""
    app = FastAPI(title="podflame", version=_version(), description=_DESCRIPTION)
    telemetry = Telemetry()
    app.state.telemetry = telemetry
    app.state.storage = store
    app.state.store = MeteredStore(store, telemetry.ingest)
    app.state.network_store = store
    # The built-in types and those recorded in the store (one registry per app).
    app.state.profile_types = ProfileTypes(store)
    app.state.max_ingest_bytes = max_ingest_bytes
    app.state.limits = limits or QueryLimits()
    app.state.ingest_limits = ingest_limits or IngestLimits()
    install_error_handlers(app)
    # The last added runs first: count every request, then authenticate, then cap bodies.
    app.add_middleware(BodyLimitMiddleware, limit=max_ingest_bytes)
    if tokens is not None:
        app.add_middleware(BearerAuthMiddleware, authenticator=Authenticator(tokens))
    app.add_middleware(MetricsMiddleware, requests=telemetry.requests)
    routers = (ingest, pyroscope, export, top, flamegraph, diff, timeline, labels, profile_types)
    for module in (*routers, querier, render, network, metrics, health):
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
