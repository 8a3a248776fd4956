"""Who is calling the API: a bearer OAuth token or the browser session (with CSRF), else anonymous."""

import secrets
import time

from fastapi import Depends, Request

from quaymaster.accounts import credentials
from quaymaster.accounts.models import User
from quaymaster.accounts.service import ANONYMOUS, Identity
from quaymaster.api.errors import ApiError, forbidden, unauthorized
from quaymaster.context import AppContext

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
FRESH_LOGIN_S = 600


def ctx_of(request: Request) -> AppContext:
    return request.app.state.ctx


async def current_identity(request: Request) -> Identity:
    """Cached per request: every route dependency asks, the database is asked once."""
    cached = getattr(request.state, "identity", None)
    if cached is not None:
        return cached
    ctx = ctx_of(request)
    identity = ANONYMOUS
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        async with ctx.db.read() as session:
            found = await credentials.from_bearer(session, ctx.settings, token.strip())
        if found is None:
            raise unauthorized("invalid or expired token")
        identity = found
    elif "session" in request.scope and request.session.get("user_uuid"):
        async with ctx.db.read() as session:
            from sqlalchemy import select

            user = await session.scalar(select(User).where(User.uuid == request.session["user_uuid"]))
            if user is not None and user.enabled:
                identity = await credentials.identity_of(session, user, ctx.settings, via="session")
        if user is not None and user.enabled:
            if request.method not in SAFE_METHODS:
                sent = request.headers.get("x-csrf-token") or request.query_params.get("_csrf_token")
                expected = request.session.get("csrf")
                if not sent or not expected or not secrets.compare_digest(sent, expected):
                    raise ApiError(403, "CSRF token was invalid or missing", "invalid_request")
        else:
            request.session.clear()
    request.state.identity = identity
    return identity


async def signed_in(identity: Identity = Depends(current_identity)) -> Identity:
    if identity.anonymous:
        raise unauthorized()
    return identity


def scoped(scope: str):
    """A dependency: signed in, with a token that carries `scope` (sessions carry every scope)."""

    async def dependency(identity: Identity = Depends(signed_in)) -> Identity:
        if not identity.has_scope(scope):
            raise forbidden(f"this token lacks the {scope} scope")
        return identity

    return dependency


async def superuser(identity: Identity = Depends(scoped("super:user"))) -> Identity:
    if not identity.superuser:
        raise forbidden("requires superuser rights")
    return identity


def start_session(request: Request, user: User) -> str:
    """Sign the browser in; returns the CSRF token the client must echo on writes."""
    request.session.clear()
    csrf = secrets.token_urlsafe(32)
    request.session.update({"user_uuid": user.uuid, "login": int(time.time()), "csrf": csrf})
    return csrf


def require_fresh_login(request: Request, identity: Identity) -> None:
    """Sensitive changes from a browser need a login in the last ten minutes (tokens bypass)."""
    if identity.via != "session":
        return
    if time.time() - request.session.get("login", 0) > FRESH_LOGIN_S:
        raise ApiError(401, "fresh login required: POST /api/v1/signin/verify with your password",
                       "fresh_login_required")
