"""Rendering pages: the shared template context, sign-in and CSRF checks, one-shot flash messages.

Every page handler of every domain goes through `render`, so the navigation, the global banners
and the CSRF token are the same everywhere. Handlers never touch SQL: they call services."""

import math
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse

from quaymaster.accounts.service import ANONYMOUS, Identity
from quaymaster.context import AppContext

TEMPLATES_DIR = Path(__file__).parent / "templates"
CSRF_FIELD = "_csrf_token"
CSRF_HEADER = "x-csrf-token"
FLASH_KEY = "_flash"
FLASH_LEVELS = ("info", "success", "warning", "error")


class RedirectTo(Exception):
    """Raise from a page handler to send the browser elsewhere (303); the web app handles it."""

    def __init__(self, url: str):
        super().__init__(url)
        self.url = url


# --- filters -------------------------------------------------------------------------------------

_SIZE_UNITS = ("bytes", "kB", "MB", "GB", "TB", "PB")


def humansize(value: int | float | None) -> str:
    """Decimal units as registries and `podman images` show them: 2300000 -> "2.3 MB"."""
    if value is None:
        return "—"
    size = float(value)
    if size < 1000:
        return f"{int(size)} bytes" if size != 1 else "1 byte"
    exponent = min(int(math.log(size, 1000)), len(_SIZE_UNITS) - 1)
    scaled = size / 1000 ** exponent
    if round(scaled, 1) >= 1000 and exponent < len(_SIZE_UNITS) - 1:
        exponent, scaled = exponent + 1, scaled / 1000
    return f"{scaled:.1f} {_SIZE_UNITS[exponent]}"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _ago_text(value: datetime, now: datetime) -> str:
    delta = (now - value).total_seconds()
    future = delta < 0
    seconds = abs(delta)
    if seconds < 45:
        return "in a few seconds" if future else "just now"
    for unit, length in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
                         ("hour", 3600), ("minute", 60)):
        if seconds >= length * 0.95:
            count = max(1, round(seconds / length))
            words = f"{count} {unit}{'s' if count != 1 else ''}"
            return f"in {words}" if future else f"{words} ago"
    return "in a minute" if future else "a minute ago"


def humantime(value: datetime | None, now: datetime | None = None) -> Markup:
    """A <time> element reading "3 hours ago", with the exact ISO time as its title."""
    if value is None:
        return Markup('<span class="muted">—</span>')
    value = _aware(value)
    iso = value.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    text = _ago_text(value, _aware(now) if now else datetime.now(timezone.utc))
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(iso, text)


def shortdigest(digest: str | None, length: int = 12) -> str:
    """sha256:abcdef... -> "sha256:abcdef123456" (the algorithm kept, the hex cut)."""
    if not digest:
        return ""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:length]}" if hexpart else digest[:length]


def fromtimestamp(seconds: int | float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc)


def frommillis(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc)


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES_DIR)), autoescape=select_autoescape(["html", "svg"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(humansize=humansize, humantime=humantime, shortdigest=shortdigest,
                       fromtimestamp=fromtimestamp, frommillis=frommillis)
    return env


templates = _env()


# --- identity, session ---------------------------------------------------------------------------

def ctx_of(request: Request) -> AppContext:
    return request.app.state.ctx


async def identity_of(request: Request) -> Identity:
    """The signed-in user from the session cookie, else ANONYMOUS (cached on the request).

    Reuses the API's resolver; CSRF on page forms is checked by `check_csrf`, not here."""
    cached = getattr(request.state, "identity", None)
    if cached is not None:
        return cached
    from quaymaster.api.auth import current_identity
    from quaymaster.api.errors import ApiError

    # The API resolver checks CSRF headers on writes; pages send the token as a form field instead,
    # so it sees this request as a read. State and session are shared with the real request.
    probe = Request({**request.scope, "method": "GET"})
    try:
        identity = await current_identity(probe)
    except ApiError:
        identity = ANONYMOUS
    request.state.identity = identity
    return identity


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created for anonymous visitors too (sign-in forms need one)."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def signin_url(request: Request) -> str:
    """/signin?next=<this page> (for htmx requests: the page the fragment belongs to)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if is_htmx(request) and request.headers.get("hx-current-url"):
        from urllib.parse import urlsplit

        current = urlsplit(request.headers["hx-current-url"])
        target = current.path + (f"?{current.query}" if current.query else "")
    return f"/signin?next={quote(target, safe='/')}"


async def require_signin(request: Request) -> Identity:
    """The signed-in user; anonymous visitors are sent to /signin?next=<this page>."""
    identity = await identity_of(request)
    if identity.anonymous:
        raise RedirectTo(signin_url(request))
    return identity


async def check_csrf(request: Request, form: FormData | None = None) -> FormData:
    """Reject a POST whose `_csrf_token` field (or X-CSRF-Token header) does not match the session."""
    if form is None:
        form = await request.form()
    sent = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    expected = request.session.get("csrf")
    if not isinstance(sent, str) or not expected or not secrets.compare_digest(sent, expected):
        raise HTTPException(403, "Your form expired or was sent from another site (CSRF token invalid or missing). "
                                 "Reload the page and try again.")
    return form


def flash(request: Request, message: str, level: str = "info") -> None:
    """Queue a message shown once, on the next page this browser renders."""
    if level not in FLASH_LEVELS:
        level = "info"
    queued = list(request.session.get(FLASH_KEY, []))
    queued.append({"message": str(message), "level": level})
    request.session[FLASH_KEY] = queued[-5:]


def _take_flashes(request: Request) -> list[dict]:
    return list(request.session.pop(FLASH_KEY, []) or [])


def safe_next(target: str | None, default: str = "/repository/") -> str:
    """A local path to go to after sign-in; anything pointing off-site becomes `default`."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


# --- rendering -----------------------------------------------------------------------------------

async def _global_messages(ctx: AppContext) -> list:
    from quaymaster.superuser import service as superuser

    async with ctx.db.read() as session:
        return await superuser.list_messages(session)


async def _user_orgs(ctx: AppContext, identity: Identity) -> list[dict]:
    if identity.anonymous or identity.kind != "user":
        return []
    from quaymaster.accounts import orgs

    async with ctx.db.read() as session:
        memberships = await orgs.orgs_of(session, identity.user_id)
    return [{"name": org.username, "is_admin": admin} for org, admin in memberships]


async def base_context(request: Request) -> dict[str, Any]:
    """What every full page gets: user, orgs, messages, flashes, csrf_token, config, request."""
    ctx = ctx_of(request)
    identity = await identity_of(request)
    settings = ctx.settings
    return {
        "request": request,
        "user": None if identity.anonymous else identity,
        "user_orgs": await _user_orgs(ctx, identity),
        "messages": await _global_messages(ctx),
        "flashes": _take_flashes(request),
        "csrf_token": csrf_token(request),
        "csrf_field": CSRF_FIELD,
        "config": {"title": settings.REGISTRY_TITLE, "title_short": settings.REGISTRY_TITLE_SHORT,
                   "hostname": settings.SERVER_HOSTNAME, "scheme": settings.PREFERRED_URL_SCHEME,
                   "user_creation": settings.FEATURE_USER_CREATION and settings.AUTHENTICATION_TYPE == "Database"},
    }


async def render(request: Request, template_name: str, context: dict | None = None, status: int = 200,
                 headers: dict | None = None) -> HTMLResponse:
    """A full page: `template_name` (which extends base.html) with the shared context added."""
    values = await base_context(request)
    values.update(context or {})
    return HTMLResponse(templates.get_template(template_name).render(values), status_code=status, headers=headers)


async def render_fragment(request: Request, template_name: str, context: dict | None = None, status: int = 200,
                          headers: dict | None = None) -> HTMLResponse:
    """A piece of a page for htmx to swap in: user, csrf_token and config, no banners or flashes."""
    ctx = ctx_of(request)
    identity = await identity_of(request)
    values: dict[str, Any] = {"request": request, "user": None if identity.anonymous else identity,
                              "csrf_token": csrf_token(request), "csrf_field": CSRF_FIELD,
                              "config": {"title": ctx.settings.REGISTRY_TITLE,
                                         "hostname": ctx.settings.SERVER_HOSTNAME}}
    values.update(context or {})
    return HTMLResponse(templates.get_template(template_name).render(values), status_code=status, headers=headers)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def plain_message(text: str) -> Markup:
    """Banner text with its line breaks kept and everything else escaped."""
    return Markup("<br>").join(escape(line) for line in str(text).splitlines())


templates.filters["plain_message"] = plain_message
