"""Request bodies: read one, gzip-encoded or not, without ever holding more than a limit."""

import zlib

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_GZIP_ENCODINGS = ("gzip", "x-gzip")
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_GZIP_MAGIC = b"\x1f\x8b"
# Clients send one member; RFC 1952 allows several (concatenated files), not thousands.
MAX_GZIP_MEMBERS = 1024
# Input fed to zlib at a time: doubling from the first size, so the copy zlib makes of
# what follows a member's end is at most about the member's own size (or 4 KiB).
_FIRST_SLICE = 4096
_MAX_SLICE = 1024 * 1024


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
    """All gzip members of `data`, concatenated (RFC 1952); 400 for anything after them.

    Linear in the body: zlib copies the input it did not use into `unused_data` when
    a member ends, so each member is fed slices growing from _FIRST_SLICE bytes, never
    the whole rest of the body (which made 200,000 tiny members cost minutes).
    """
    view = memoryview(data)
    body = bytearray()
    position = 0
    for _ in range(MAX_GZIP_MEMBERS):
        position = _inflate_member(view, position, body, limit)
        if position == len(view):
            return bytes(body)
        if view[position : position + 2] != _GZIP_MAGIC:
            raise HTTPException(400, "invalid gzip body: data after the end of the gzip stream")
    raise HTTPException(400, f"invalid gzip body: more than {MAX_GZIP_MEMBERS} gzip members")


def _inflate_member(view: memoryview, position: int, body: bytearray, limit: int) -> int:
    """Append the member starting at `position` to `body`; return where the next one starts."""
    decompressor = zlib.decompressobj(wbits=_GZIP_WBITS)
    size = _FIRST_SLICE
    while not decompressor.eof:
        piece = view[position : position + size]
        if not piece:
            raise HTTPException(400, "invalid gzip body: truncated")
        try:
            # max_length stops a small "zip bomb" from expanding past the limit.
            body += decompressor.decompress(piece, limit + 1 - len(body))
        except zlib.error as error:
            raise HTTPException(400, f"invalid gzip body: {error}") from None
        if len(body) > limit:
            raise _too_large(limit)
        # Below max_length all of `piece` was read, bar what follows the member's end.
        position += len(piece) - len(decompressor.unused_data)
        size = min(2 * size, _MAX_SLICE)
    return position


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
