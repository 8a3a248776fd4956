"""Helpers the route modules share: JSON bodies, ETags, the runtime handle."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from quaymaster.oci.digest import is_digest

if TYPE_CHECKING:
    from quaymaster.scanner.runtime import Runtime

JSON_TYPE = "application/json"


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status, headers=headers,
                    media_type=JSON_TYPE)


async def json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError:
        return _Invalid


class _Invalid:
    """Marker for a body that is not JSON."""


def quoted(tag: str) -> str:
    return f'"{tag}"'


def if_none_match(request: Request, tag: str) -> bool:
    """Whether If-None-Match names this entity tag (quoted, weak or bare; `*` matches too)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    for item in header.split(","):
        item = item.strip().removeprefix("W/").strip('"')
        if item in (tag, "*"):
            return True
    return False


def valid_digest(value: str) -> bool:
    return is_digest(value)
