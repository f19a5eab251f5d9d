"""The Connect protocol's unary calls, as Grafana's Pyroscope datasource makes them.

A call is `POST /<package>.<Service>/<Method>` whose body is the request message in
binary protobuf (`application/proto`) or in protobuf's JSON mapping
(`application/json`, int64 as strings); the answer is the response message in the
same codec. An error is a JSON body `{"code": ..., "message": ...}` with the HTTP
status Connect gives that code. Messages are the generated ones (querier_pb2), encoded
and decoded by the protobuf library.
"""

from collections.abc import Callable
from typing import TypeVar

from fastapi import HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from podflame.server.body import read_body
from podflame.server.errors import RETRY_AFTER_SECONDS

PROTO = "application/proto"
JSON = "application/json"
# Query requests are a selector and a few numbers; a megabyte is plenty.
MAX_REQUEST_BYTES = 1 << 20

# The HTTP status the Connect protocol gives each code this server answers with.
STATUS = {
    "invalid_argument": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "unimplemented": 404,
    "deadline_exceeded": 408,
    "resource_exhausted": 429,
    "internal": 500,
    "unavailable": 503,
}
_CODE_OF_STATUS = {400: "invalid_argument", 413: "resource_exhausted", 415: "unimplemented"}

RequestT = TypeVar("RequestT", bound=Message)


class ConnectError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_response(error: ConnectError) -> JSONResponse:
    status = STATUS.get(error.code, 500)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if error.code == "unavailable" else None
    body = {"code": error.code, "message": error.message}
    return JSONResponse(body, status_code=status, headers=headers)


def codec(request: Request) -> str:
    """The request's codec; unimplemented (with 415, as Connect says) for any other."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media not in (PROTO, JSON):
        message = f"unsupported Content-Type {media!r}; use {PROTO} or {JSON}"
        raise _UnsupportedMedia(message)
    return media


class _UnsupportedMedia(ConnectError):
    def __init__(self, message: str) -> None:
        super().__init__("unimplemented", message)


async def read_message(request: Request, media: str, message_type: type[RequestT]) -> RequestT:
    try:
        body = await read_body(request, MAX_REQUEST_BYTES)
    except HTTPException as error:
        code = _CODE_OF_STATUS.get(error.status_code, "invalid_argument")
        raise ConnectError(code, str(error.detail)) from None
    return decode(body, media, message_type)


def decode(body: bytes, media: str, message_type: type[RequestT]) -> RequestT:
    message = message_type()
    try:
        if media == PROTO:
            message.ParseFromString(body)
        else:
            # Fields of Pyroscope's messages that podflame does not declare are skipped,
            # as the binary codec skips unknown fields.
            json_format.Parse(body, message, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, RecursionError) as error:
        raise ConnectError("invalid_argument", f"cannot decode the request: {error}") from None
    return message


def encode(message: Message, media: str) -> Response:
    if media == PROTO:
        return Response(message.SerializeToString(), media_type=PROTO)
    # The canonical JSON mapping: lowerCamelCase names, int64 as strings.
    return Response(json_format.MessageToJson(message, indent=None), media_type=JSON)


async def unary(
    request: Request,
    message_type: type[RequestT],
    handle: Callable[[RequestT], Message],
    errors: Callable[[Exception], ConnectError | None],
) -> Response:
    """Decode, run `handle` in a worker thread (the store blocks), encode. `errors` turns
    what `handle` raises into a Connect error, or None to let it propagate."""
    try:
        media = codec(request)
        message = await read_message(request, media, message_type)
        try:
            answer = await run_in_threadpool(handle, message)
        except ConnectError:
            raise
        except Exception as error:
            connect_error = errors(error)
            if connect_error is None:
                raise
            raise connect_error from error
        return encode(answer, media)
    except ConnectError as error:
        if isinstance(error, _UnsupportedMedia):
            response = error_response(error)
            response.status_code = 415
            return response
        return error_response(error)
