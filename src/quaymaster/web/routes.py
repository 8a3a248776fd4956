"""The web UI as one Starlette app: every domain's page routes, /static, the session, error pages.

A domain contributes pages by exposing `routes: list[BaseRoute]` in its `views.py` (or another
module listed in VIEW_MODULES). The app is mounted last at the root, after /v2, /api/v1 and
/health, so Quay's page URLs (/repository/..., /organization/..., /user/...) work as bookmarks."""

import importlib
import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from quaymaster.accounts.service import AccountError
from quaymaster.api.app import session_middleware_options
from quaymaster.api.errors import ApiError
from quaymaster.content.errors import ContentError
from quaymaster.settings import Settings
from quaymaster.web.render import RedirectTo, identity_of, is_htmx, render, signin_url

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"

# Modules whose `routes` make up the UI; a module that does not exist yet is skipped.
VIEW_MODULES = (
    "quaymaster.accounts.views",
    "quaymaster.content.views",
    "quaymaster.accounts.views_orgs",
    "quaymaster.superuser.views",
    "quaymaster.mirroring.views",
    "quaymaster.secscan.views",
)

ERROR_TITLES = {400: "Bad request", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
                409: "Conflict", 429: "Too many requests", 500: "Something went wrong"}


def collect_routes(modules: tuple[str, ...] = VIEW_MODULES) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # not written yet; a broken import inside it still fails loudly
                continue
            raise
        routes.extend(getattr(module, "routes", []))
    return routes


async def _redirect(request: Request, exc: RedirectTo) -> Response:
    if is_htmx(request):  # htmx follows HX-Redirect with a full page load
        return Response(status_code=200, headers={"HX-Redirect": exc.url})
    return RedirectResponse(exc.url, status_code=303)


async def error_page(request: Request, status: int, detail: str | None = None) -> Response:
    title = ERROR_TITLES.get(status, "Error")
    if status == 404 and not detail:
        detail = "There is nothing here, or you do not have access to it."
    try:
        return await render(request, "errors/error.html", {"status": status, "title": title, "detail": detail},
                            status=status)
    except Exception:  # noqa: BLE001 - an error page must not fail itself (e.g. database down)
        log.exception("rendering the error page failed")
        return Response(f"{status} {title}", status_code=status, media_type="text/plain")


async def _http_error(request: Request, exc: HTTPException) -> Response:
    detail = exc.detail if exc.detail and exc.detail != ERROR_TITLES.get(exc.status_code) else None
    if exc.status_code == 404:
        detail = None  # a private repository and a missing one must look the same
    response = await error_page(request, exc.status_code, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _account_error(request: Request, exc: AccountError) -> Response:
    return await error_page(request, exc.status, None if exc.status == 404 else str(exc))


async def _api_error(request: Request, exc: ApiError) -> Response:
    """The API's access helpers (repo_access, org_access, ...) work in pages too."""
    if exc.status == 401 and (await identity_of(request)).anonymous:
        return await _redirect(request, RedirectTo(signin_url(request)))
    return await error_page(request, exc.status, None if exc.status == 404 else exc.message)


_CONTENT_STATUS = {"MANIFEST_UNKNOWN": 404, "NAME_UNKNOWN": 404, "BLOB_UNKNOWN": 404, "TAG_EXPIRED": 404,
                   "DENIED": 409, "TAG_IMMUTABLE": 409}


async def _content_error(request: Request, exc: ContentError) -> Response:
    status = _CONTENT_STATUS.get(exc.code, 400)
    return await error_page(request, status, None if status == 404 else exc.message)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("page %s failed", request.url.path, exc_info=exc)
    return await error_page(request, 500, "The server hit an error. It has been logged.")


async def _home(request: Request) -> Response:
    return RedirectResponse("/repository/", status_code=302)


def create_web(settings: Settings) -> Starlette:
    routes: list[BaseRoute] = [
        Route("/", _home),
        Mount("/static", app=StaticFiles(directory=str(STATIC_DIR)), name="static"),
        *collect_routes(),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(SessionMiddleware, **session_middleware_options(settings))],
        exception_handlers={RedirectTo: _redirect, HTTPException: _http_error, AccountError: _account_error,
                            ApiError: _api_error, ContentError: _content_error, Exception: _server_error},
    )
