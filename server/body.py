"""Request bodies: read one, gzip-encoded or not, without ever holding more than a limit."""

import zlib

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_GZIP_ENCODINGS = ("gzip", "x-gzip")
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_GZIP_MAGIC = b"\x1f\x8b"


async def read_body(request: Request, limit: int) -> bytes:
    """The decoded body; 413 past `limit` bytes (before or after decompression)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", *_GZIP_ENCODINGS):
        raise HTTPException(415, f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise _too_large(limit)
    if encoding in _GZIP_ENCODINGS:
        # Off the event loop: inflating a large batch takes milliseconds, during
        # which no other request could be read.
        return await run_in_threadpool(_gunzip, bytes(raw), limit)
    return bytes(raw)


def _gunzip(data: bytes, limit: int) -> bytes:
    """All gzip members of `data`, concatenated (RFC 1952); 400 for anything after them."""
    body = bytearray()
    rest = data
    while True:
        decompressor = zlib.decompressobj(wbits=_GZIP_WBITS)
        try:
            # max_length stops a small "zip bomb" from expanding past the limit.
            body += decompressor.decompress(rest, limit + 1 - len(body))
        except zlib.error as error:
            raise HTTPException(400, f"invalid gzip body: {error}") from None
        if len(body) > limit:
            raise _too_large(limit)
        if not decompressor.eof:
            raise HTTPException(400, "invalid gzip body: truncated")
        rest = decompressor.unused_data
        if not rest:
            return bytes(body)
        if not rest.startswith(_GZIP_MAGIC):
            raise HTTPException(400, "invalid gzip body: data after the end of the gzip stream")


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"body larger than {limit} bytes (PODFLAME_MAX_INGEST_BYTES)")


class BodyLimitMiddleware:
    """413 for any request body over `limit` bytes as sent, whichever route reads it.

    read_body() also bounds the decompressed size; this covers the routes that
    let FastAPI or Starlette read their bodies.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # No early answer on Content-Length: read_body() checks it itself, and
        # the Pyroscope push route turns a 413 into a Connect error.
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                # Raised inside the endpoint that reads, so the app's handler answers 413.
                raise _too_large(self.limit)
            return message

        await self.app(scope, bounded_receive, send)
