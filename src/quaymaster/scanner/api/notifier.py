"""Notifier routes: page through and delete a notification set."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quaymaster.scanner.api.common import json_response, runtime
from quaymaster.scanner.api.errors import error

PREFIX = "/notifier/api/v1"
DEFAULT_PAGE = 500
MAX_PAGE = 1000


def _uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


async def notification_get(request: Request) -> Response:
    set_id = _uuid(request.path_params["id"])
    if not set_id:
        return error(400, "notification id is not a uuid")
    raw_size = request.query_params.get("page_size", str(DEFAULT_PAGE))
    if not raw_size.isdigit() or int(raw_size) < 1:
        return error(400, "page_size must be a positive integer")
    after = request.query_params.get("next") or ""
    if after and not _uuid(after):
        return error(400, "next is not a uuid")
    page = await runtime(request).notifier.page(set_id, min(int(raw_size), MAX_PAGE), _uuid(after) if after else None)
    if page is None:
        return error(404, f"notification {set_id} not found")
    return json_response(page)


async def notification_delete(request: Request) -> Response:
    set_id = _uuid(request.path_params["id"])
    if not set_id:
        return error(400, "notification id is not a uuid")
    await runtime(request).notifier.delete(set_id)
    return Response(status_code=200)


routes = [
    Route(f"{PREFIX}/notification/{{id}}", notification_get, methods=["GET"]),
    Route(f"{PREFIX}/notification/{{id}}", notification_delete, methods=["DELETE"]),
]
