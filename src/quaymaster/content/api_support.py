"""What the content routers share: action logging for a repository, page tokens, scope checks."""

from datetime import UTC, datetime

from fastapi import Request
from itsdangerous import BadSignature, URLSafeSerializer

from quaymaster.accounts.service import Identity
from quaymaster.api.auth import ctx_of
from quaymaster.api.errors import ApiError
from quaymaster.api.format import client_ip
from quaymaster.content.service import RepoRef

REPO_SCOPES = ("repo:read", "repo:write", "repo:admin")
_PAGE_SALT = "quaymaster.api.next_page"


def audit(request: Request, kind: str, repo: RepoRef, identity: Identity, **metadata) -> None:
    """Log an action on a repository with Quay's metadata (namespace, repo, then the specifics)."""
    ctx_of(request).audit.record(kind, account_id=repo.namespace_id, performer_id=identity.user_id,
                                 repository_id=repo.id, ip=client_ip(request),
                                 metadata={"namespace": repo.namespace, "repo": repo.name, **metadata})


def has_repo_scope(identity: Identity) -> bool:
    """Scopes imply each other (admin > write > read), so any repo scope allows reading."""
    return any(identity.has_scope(scope) for scope in REPO_SCOPES)


def encode_page(request: Request, payload: dict) -> str:
    """An opaque, signed `next_page` token, so clients cannot forge a position."""
    return URLSafeSerializer(ctx_of(request).settings.SECRET_KEY, salt=_PAGE_SALT).dumps(payload)


def decode_page(request: Request, token: str | None) -> dict:
    if not token:
        return {}
    try:
        payload = URLSafeSerializer(ctx_of(request).settings.SECRET_KEY, salt=_PAGE_SALT).loads(token)
    except BadSignature:
        raise ApiError(400, "invalid next_page token") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid next_page token")
    return payload


def after_id(request: Request, token: str | None) -> int | None:
    """The repository id a page token continues after."""
    value = decode_page(request, token).get("after")
    if value is not None and not isinstance(value, int):
        raise ApiError(400, "invalid next_page token")
    return value


def utc_from_ms(ms: int) -> datetime:
    """Naive UTC at whole seconds, as Quay renders tag times."""
    return datetime.fromtimestamp(ms // 1000, UTC).replace(tzinfo=None)
