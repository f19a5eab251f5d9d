"""Every error leaves the API as JSON `{"error": "..."}`, whatever raised it."""

import logging
from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from podflame.server.limits import IngestLimitExceeded
from podflame.server.selector import SelectorError
from podflame.server.store import InvalidBatchError, StorageError
from podflame.server.timerange import TimeRangeError

logger = logging.getLogger(__name__)

# Seconds a client should wait before retrying when storage is down.
RETRY_AFTER_SECONDS = 5
_MAX_REPORTED_ERRORS = 5
# ClickHouse's TIMEOUT_EXCEEDED (max_execution_time) and TOO_SLOW (the same
# limit, predicted from the speed so far).
_TIMEOUT_CODES = frozenset({159, 160})


class ParameterError(ValueError):
    """A query parameter is well-formed but not acceptable: 400 naming it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"invalid '{parameter}': {message}")
        self.parameter = parameter


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, for a human.")
    position: int | None = Field(
        default=None, description="For a bad selector: offset of the problem in `query`."
    )
    parameter: str | None = Field(default=None, description="The offending query parameter.")
    limit: str | None = Field(
        default=None,
        description="For a request over an ingest limit: the server setting (max_stack_frames,"
        " ...).",
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad input."},
    401: {"model": ErrorBody, "description": "Tokens are configured and none was sent."},
    403: {"model": ErrorBody, "description": "The token lacks the scope this path needs."},
    422: {"model": ErrorBody, "description": "A parameter or the body failed validation."},
    503: {"model": ErrorBody, "description": "Storage unavailable; retry after Retry-After."},
    504: {"model": ErrorBody, "description": "The query ran longer than --query-timeout-seconds."},
}


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """`body.period: Input should be greater than 0; ...` from pydantic's error list."""
    parts = [
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in errors[:_MAX_REPORTED_ERRORS]
    ]
    more = len(errors) - _MAX_REPORTED_ERRORS
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    return error_response(error.status_code, str(error.detail), dict(error.headers or {}))


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return error_response(422, describe_validation_errors(error.errors()))


async def _selector_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, SelectorError)
    # The position goes in its own field; the UI shows it as "(at position N)".
    message = f"invalid query: {error.message}"
    return error_response(400, message, position=error.position, parameter="query")


async def _time_range_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, TimeRangeError)
    return error_response(400, str(error), parameter=error.parameter)


async def _invalid_batch(_: Request, error: Exception) -> JSONResponse:
    return error_response(400, f"invalid batch: {error}")


async def _ingest_limit(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, IngestLimitExceeded)
    return error_response(413, str(error), limit=error.setting)


async def _parameter_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ParameterError)
    return error_response(400, str(error), parameter=error.parameter)


async def _storage_error(request: Request, error: Exception) -> JSONResponse:
    timed_out = is_timeout(error)
    telemetry = getattr(request.app.state, "telemetry", None)
    if telemetry is not None:
        telemetry.storage_errors.count("timeout" if timed_out else "unavailable")
    if timed_out:
        message = "query timed out: narrow the selector or the time range (--query-timeout-seconds)"
        return error_response(504, message)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return error_response(503, str(error), headers)


def is_timeout(error: BaseException) -> bool:
    """Whether ClickHouse stopped the query at max_execution_time (the store wraps its error)."""
    cause = error.__cause__
    return isinstance(cause, DatabaseError) and getattr(cause, "code", None) in _TIMEOUT_CODES


async def _unexpected(_: Request, error: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=error)
    return error_response(500, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(SelectorError, _selector_error)
    app.add_exception_handler(TimeRangeError, _time_range_error)
    app.add_exception_handler(ParameterError, _parameter_error)
    app.add_exception_handler(InvalidBatchError, _invalid_batch)
    app.add_exception_handler(IngestLimitExceeded, _ingest_limit)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(Exception, _unexpected)
