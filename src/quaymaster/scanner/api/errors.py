"""Clair's error body `{"code", "message"}` and the exception handlers that produce it."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger(__name__)
_CODES = {400: "bad-request", 404: "not-found", 405: "method-not-allowed", 412: "precondition-failed",
          415: "unsupported-media-type", 429: "too-many-requests"}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": _CODES.get(status, "internal-error"), "message": message}, status_code=status)


async def http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (304, 204):
        return Response(status_code=exc.status_code)
    return error(exc.status_code, str(exc.detail))


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error(500, "internal error")


HANDLERS = {HTTPException: http_exception, Exception: server_error}
