"""Signed "older entries" cursors for paged log lists, shared by every page that shows logs."""

from datetime import datetime

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.exceptions import HTTPException
from starlette.requests import Request

from quaymaster.api.auth import ctx_of


def _serializer(request: Request) -> URLSafeSerializer:
    return URLSafeSerializer(ctx_of(request).settings.SECRET_KEY, salt="quaymaster.web.logs")


def read_cursor(request: Request) -> tuple[datetime, int] | None:
    """The (time, id) position in the `before` query parameter; 400 if it was tampered with."""
    token = request.query_params.get("before")
    if not token:
        return None
    try:
        stamp, entry_id = _serializer(request).loads(token)
        return datetime.fromisoformat(stamp), int(entry_id)
    except (BadSignature, ValueError, TypeError):
        raise HTTPException(400, "That page link is not valid.") from None


def write_cursor(request: Request, after: tuple[datetime, int] | None) -> str | None:
    """The `before` token of the next page, or None when there is none."""
    return _serializer(request).dumps([after[0].isoformat(), after[1]]) if after else None
