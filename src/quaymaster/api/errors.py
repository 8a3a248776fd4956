"""Quay's API error shape: {status, error_message, title, error_type, detail, type}."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from quaymaster.accounts.service import AccountError, LoginThrottled
from quaymaster.content.service import ContentError

TITLES = {400: "invalid_request", 401: "unauthorized", 403: "insufficient_scope", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 429: "too_many_requests", 503: "unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, error_type: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or TITLES.get(status, "error")
        self.headers = headers or {}


def not_found(message: str = "Not Found") -> ApiError:
    return ApiError(404, message, "not_found")


def forbidden(message: str = "Unauthorized") -> ApiError:
    return ApiError(403, message, "insufficient_scope")


def unauthorized(message: str = "Requires authentication") -> ApiError:
    return ApiError(401, message, "invalid_token")


def error_body(request: Request, status: int, message: str, error_type: str) -> dict:
    return {
        "status": status, "error_message": message, "title": error_type, "error_type": error_type,
        "detail": message, "type": f"{request.base_url}api/v1/error/{error_type}",
    }


def _respond(request: Request, err: ApiError) -> JSONResponse:
    return JSONResponse(error_body(request, err.status, err.message, err.error_type), status_code=err.status,
                        headers=err.headers)


# Content error codes that mean "the thing is not there" rather than "your request is wrong".
_CONTENT_NOT_FOUND = {"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN", "TAG_EXPIRED"}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, err: ApiError):
        return _respond(request, err)

    @app.exception_handler(AccountError)
    async def _account(request: Request, err: AccountError):
        headers = {"Retry-After": str(err.retry_after)} if isinstance(err, LoginThrottled) else {}
        return _respond(request, ApiError(err.status, str(err), headers=headers))

    @app.exception_handler(ContentError)
    async def _content(request: Request, err: ContentError):
        if err.code in _CONTENT_NOT_FOUND:
            return _respond(request, not_found(err.message))
        if err.code == "DENIED":
            return _respond(request, ApiError(503, err.message, "unavailable"))
        if err.code == "TAG_IMMUTABLE":
            return _respond(request, ApiError(409, err.message, "conflict"))
        return _respond(request, ApiError(400, err.message))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return _respond(request, ApiError(400, f"{where}: {first['msg']}" if where else first["msg"]))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException):
        return _respond(request, ApiError(err.status_code, str(err.detail)))
