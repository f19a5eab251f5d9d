"""Run the server: open the store, build the app, serve it with uvicorn."""

import logging
import socket
import ssl
from urllib.parse import urlsplit, urlunsplit

import uvicorn

from podflame.server.app import create_app
from podflame.server.auth import TokensFileError, load_tokens
from podflame.server.clickhouse_store import open_store
from podflame.server.deps import QueryLimits
from podflame.server.limits import IngestLimits
from podflame.server.settings import ServerSettings
from podflame.server.store import Storage

logger = logging.getLogger(__name__)

# On SIGTERM uvicorn stops accepting and waits for in-flight requests; past
# this many seconds it cancels them (their batches are retried by the agents).
# Under Kubernetes' default 30 s grace period, so the store is still closed
# cleanly before a SIGKILL.
GRACEFUL_SHUTDOWN_SECONDS = 25


# Agents and Pyroscope SDKs send every 10-15 s. With uvicorn's default of 5 s a
# keep-alive client's connection is closed between two sends, and a send that
# crosses the close fails (seen once in 11,690 requests of benchmarks/load.py).
KEEP_ALIVE_SECONDS = 75


class _StoreServer(uvicorn.Server):
    """A uvicorn server that closes its store once it has stopped serving.

    So `podflame up` can run one in a thread, set should_exit, and open the
    same chDB path again afterwards.
    """

    def __init__(self, config: uvicorn.Config, store: Storage) -> None:
        super().__init__(config)
        self.store = store
        self._store_open = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Here, once in-flight requests are done: uvicorn re-raises a captured
        # SIGTERM when serve() returns, which ends the process before serve's
        # own cleanup would run.
        try:
            await super().shutdown(sockets)
        finally:
            self._close_store()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().serve(sockets)
        finally:
            self._close_store()  # a start that failed never reaches shutdown()

    def _close_store(self) -> None:
        if self._store_open:
            self._store_open = False
            self.store.close()
            logger.info("storage closed")


def build_server(settings: ServerSettings) -> uvicorn.Server:
    """Open the store and return a server ready to run(); stop it with should_exit = True."""
    # Read before opening the store: a bad tokens file stops the start with its message.
    try:
        tokens = load_tokens(settings.tokens_file) if settings.tokens_file else None
    except TokensFileError as error:
        raise SystemExit(f"podflame: {error}") from None
    check_tls(settings)
    store = open_store(
        settings.storage,
        retention_days=settings.retention_days,
        query_timeout_seconds=settings.query_timeout_seconds,
        cluster=settings.clickhouse_cluster,
    )
    limits = QueryLimits(max_range=settings.max_range_delta, max_nodes=settings.max_nodes)
    app = create_app(
        store,
        max_ingest_bytes=settings.max_ingest_bytes,
        limits=limits,
        ingest_limits=IngestLimits.from_settings(settings),
        tokens=tokens,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    return _StoreServer(config, store)


def check_tls(settings: ServerSettings) -> None:
    """Load the certificate and key once, so a bad pair stops the start with its reason."""
    if settings.tls_cert is None or settings.tls_key is None:
        return
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as error:
        raise SystemExit(
            f"podflame: cannot use --tls-cert {settings.tls_cert} with --tls-key"
            f" {settings.tls_key}: {error}"
        ) from None


def serve(settings: ServerSettings) -> None:
    # A no-op when the caller has configured logging already.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = build_server(settings)
    cluster = settings.clickhouse_cluster
    logger.info(
        "podflame server at %s (storage %s%s, %s)",
        server_url(settings),
        redact(settings.storage),
        f" on cluster {cluster}" if cluster else "",
        "bearer tokens required" if settings.tokens_file else "no authentication",
    )
    if settings.tokens_file and not settings.tls:
        logger.warning("bearer tokens travel in clear text: serve HTTPS (--tls-cert, --tls-key)")
    server.run()


def server_url(settings: ServerSettings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    scheme = "https" if settings.tls else "http"
    return f"{scheme}://{host}:{settings.port}/"


def redact(dsn: str) -> str:
    """The storage DSN without its password, fit for a log."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
