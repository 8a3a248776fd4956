"""The superuser panel at /superuser: users, organizations, service keys, registry-wide usage
logs, global messages (banners every visitor sees) and the change log.

Only superusers see it, and only while FEATURE_SUPER_USERS is on; everyone else, anonymous
visitors included, gets the plain 404 page. Every change goes through the superuser API's own
functions (superuser/api.py), so the rules and the action log entries are the same; like the API,
changes need a recent sign-in, which the panel asks for with a password field."""

from datetime import UTC, datetime, time

from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from quaymaster.accounts import orgs
from quaymaster.accounts import service as accounts
from quaymaster.accounts.service import AccountError, Identity
from quaymaster.accounts.views_orgs import (
    error_text,
    is_fresh,
    reconfirm_password,
    usage_logs_context,
)
from quaymaster.api.errors import ApiError
from quaymaster.superuser import api, service
from quaymaster.web.render import check_csrf, ctx_of, flash, identity_of, render

TABS = (("users", "Users"), ("orgs", "Organizations"), ("keys", "Service keys"), ("logs", "Usage logs"),
        ("messages", "Messages"), ("changelog", "Change log"))
SEVERITIES = (("info", "Normal"), ("warning", "Warning"), ("error", "Error"))
PER_PAGE = 50
BASE = "/superuser"


def _field(form: FormData, name: str, limit: int = 1024) -> str:
    value = form.get(name)
    return value[:limit].strip() if isinstance(value, str) else ""


def _page_param(request: Request) -> int:
    try:
        return min(max(1, int(request.query_params.get("page", "1"))), 100_000)
    except ValueError:
        return 1


async def _superuser(request: Request) -> Identity:
    """The signed-in superuser; anyone else (anonymous too) sees a 404, as for any missing page."""
    identity = await identity_of(request)
    if not ctx_of(request).settings.FEATURE_SUPER_USERS or identity.anonymous or not identity.superuser:
        raise HTTPException(404)
    return identity


async def _writer(request: Request) -> tuple[Identity, FormData, bool]:
    """For POSTs: a superuser, a valid CSRF token; the bool says whether the sign-in is recent enough."""
    identity = await _superuser(request)
    form = await check_csrf(request)
    return identity, form, is_fresh(request, identity)


def _tab_url(tab: str) -> str:
    return f"{BASE}?tab={tab}"


# --- the page ------------------------------------------------------------------------------------

def _paged(items: list, page: int) -> dict:
    start = (page - 1) * PER_PAGE
    return {"rows": items[start:start + PER_PAGE], "page": page, "has_more": len(items) > start + PER_PAGE,
            "total": len(items)}


async def _users_context(request: Request) -> dict:
    query = request.query_params.get("q", "")[:255].strip().lower()
    async with ctx_of(request).db.read() as session:
        # The accounts service lists every user; the page shows PER_PAGE of them at a time.
        found = await accounts.list_users(session)
    if query:
        found = [u for u in found if query in u.username or query in (u.email or "").lower()]
    settings = ctx_of(request).settings
    return {"users": _paged(found, _page_param(request)), "q": query, "is_superuser": settings.is_superuser}


async def _orgs_context(request: Request) -> dict:
    query = request.query_params.get("q", "")[:255].strip().lower()
    async with ctx_of(request).db.read() as session:
        found = await orgs.list_orgs(session)
    if query:
        found = [o for o in found if query in o.username or query in (o.email or "").lower()]
    return {"orgs": _paged(found, _page_param(request)), "q": query}


async def _keys_context(request: Request) -> dict:
    async with ctx_of(request).db.read() as session:
        rows = await service.list_keys(session)
    keys = [{"row": r, "approval": service.approval(r), "metadata": service.public_metadata(r)} for r in rows]
    return {"keys": keys}


def _changelog() -> str:
    try:
        return api.CHANGELOG.read_text(encoding="utf-8")
    except OSError:
        return ""


async def panel(request: Request, *, tab: str | None = None, status: int = 200, extra: dict | None = None) -> Response:
    identity = await _superuser(request)
    tab = tab or request.query_params.get("tab", "users")
    if tab not in dict(TABS):
        tab = "users"
    context = {"tab": tab, "tabs": list(TABS), "base": BASE, "fresh": is_fresh(request, identity),
               "errors": {}, "values": {}, "severities": SEVERITIES}
    if tab == "users":
        context.update(await _users_context(request))
    elif tab == "orgs":
        context.update(await _orgs_context(request))
    elif tab == "keys":
        context.update(await _keys_context(request))
    elif tab == "logs":
        context.update(await usage_logs_context(request, _tab_url("logs")))
    elif tab == "messages":
        async with ctx_of(request).db.read() as session:
            context["all_messages"] = await service.list_messages(session)
    elif tab == "changelog":
        context["changelog"] = _changelog()
    context.update(extra or {})
    return await render(request, "superuser/panel.html", context, status=status)


async def panel_get(request: Request) -> Response:
    return await panel(request)


async def _stale(request: Request, tab: str, **extra) -> Response:
    """A change sent with an old sign-in: the same tab, asking for the password first."""
    return await panel(request, tab=tab, status=403, extra={
        "error": "Your sign-in is more than a few minutes old. Confirm your password above, then repeat the change.",
        **extra})


async def _failed(request: Request, tab: str, exc: Exception, **extra) -> Response:
    status = 404 if getattr(exc, "status", 400) == 404 else 400
    return await panel(request, tab=tab, status=status, extra={"error": error_text(exc), **extra})


async def confirm_password(request: Request) -> Response:
    """Refresh the sign-in time with the password, so that changes are allowed again."""
    identity = await _superuser(request)
    form = await check_csrf(request)
    tab = _field(form, "tab", 20)
    tab = tab if tab in dict(TABS) else "users"
    password = form.get("confirm_password")
    problem = await reconfirm_password(request, identity, password if isinstance(password, str) else "")
    if problem:
        return await panel(request, tab=tab, status=403, extra={"confirm_error": problem})
    flash(request, "Password confirmed. You can make changes for the next few minutes.", "success")
    return RedirectResponse(_tab_url(tab), status_code=303)


# --- users ---------------------------------------------------------------------------------------

async def create_user(request: Request) -> Response:
    identity, form, fresh = await _writer(request)
    values = {"username": _field(form, "username", 255), "email": _field(form, "email", 255)}
    if not fresh:
        return await _stale(request, "users", values=values)
    if not values["username"]:
        return await panel(request, tab="users", status=400,
                           extra={"errors": {"username": "Enter a username."}, "values": values})
    try:
        created = await api.create_user(request, api.NewUser(username=values["username"],
                                                             email=values["email"] or None), identity)
    except (ApiError, AccountError, ValidationError) as exc:
        text = error_text(exc)
        return await panel(request, tab="users", status=409 if getattr(exc, "status", 400) == 409 else 400,
                           extra={"errors": {"email" if "email" in text.lower() else "username": text},
                                  "values": values})
    # Shown in the response to this POST only: the password is never stored in the clear.
    return await panel(request, tab="users", extra={"new_user": created})


async def _change_user(request: Request, change: api.UserChange, done: str) -> Response:
    identity, _, fresh = await _writer(request)
    username = request.path_params["username"]
    if not fresh:
        return await _stale(request, "users")
    try:
        await api.change_user(request, username, change, identity)
    except (ApiError, AccountError, ValidationError) as exc:
        return await _failed(request, "users", exc)
    flash(request, done.format(username=username), "success")
    return RedirectResponse(_tab_url("users"), status_code=303)


async def disable_user(request: Request) -> Response:
    return await _change_user(request, api.UserChange(enabled=False),
                              "{username} is disabled: they can no longer sign in, push or pull.")


async def enable_user(request: Request) -> Response:
    return await _change_user(request, api.UserChange(enabled=True), "{username} is enabled again.")


async def change_user_password(request: Request) -> Response:
    identity, form, fresh = await _writer(request)
    username = request.path_params["username"]
    password = form.get("password") if isinstance(form.get("password"), str) else ""
    if not fresh:
        return await _stale(request, "users")
    if len(password) < accounts.MIN_PASSWORD_LENGTH:
        return await panel(request, tab="users", status=400, extra={
            "error": f"The new password for {username} needs at least {accounts.MIN_PASSWORD_LENGTH} characters.",
            "password_for": username})
    try:
        await api.change_user(request, username, api.UserChange(password=password), identity)
    except (ApiError, AccountError, ValidationError) as exc:
        return await _failed(request, "users", exc, password_for=username)
    flash(request, f"The password of {username} was changed.", "success")
    return RedirectResponse(_tab_url("users"), status_code=303)


async def delete_user(request: Request) -> Response:
    identity, _, fresh = await _writer(request)
    username = request.path_params["username"]
    if not fresh:
        return await _stale(request, "users")
    try:
        await api.delete_user(request, username, identity)
    except (ApiError, AccountError) as exc:
        return await _failed(request, "users", exc)
    flash(request, f"User {username} deleted.", "success")
    return RedirectResponse(_tab_url("users"), status_code=303)


# --- organizations -------------------------------------------------------------------------------

async def delete_org(request: Request) -> Response:
    identity, _, fresh = await _writer(request)
    name = request.path_params["name"]
    if not fresh:
        return await _stale(request, "orgs")
    try:
        await api.delete_organization(request, name, identity)
    except (ApiError, AccountError) as exc:
        return await _failed(request, "orgs", exc)
    flash(request, f"Organization {name} deleted.", "success")
    return RedirectResponse(_tab_url("orgs"), status_code=303)


async def take_ownership(request: Request) -> Response:
    identity, _, fresh = await _writer(request)
    name = request.path_params["name"]
    if not fresh:
        return await _stale(request, "orgs")
    try:
        await api.take_ownership(request, name, identity)
    except (ApiError, AccountError) as exc:
        return await _failed(request, "orgs", exc)
    flash(request, f"You are now in the owners team of {name}.", "success")
    return RedirectResponse(f"/organization/{name}", status_code=303)


# --- service keys --------------------------------------------------------------------------------

def _expiration(text: str) -> float | None:
    """A YYYY-MM-DD date (end of that day, UTC) as unix seconds; empty means never."""
    if not text:
        return None
    day = datetime.strptime(text, "%Y-%m-%d").date()
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC).timestamp()


async def create_key(request: Request) -> Response:
    identity, form, fresh = await _writer(request)
    values = {"service": _field(form, "service", 255), "name": _field(form, "name", 255),
              "expiration": _field(form, "expiration", 10), "notes": _field(form, "notes", 4096)}
    if not fresh:
        return await _stale(request, "keys", values=values)
    errors = {}
    if not values["service"]:
        errors["service"] = "Enter the service the key is for."
    try:
        expiration = _expiration(values["expiration"])
    except ValueError:
        errors["expiration"] = "Enter a date as YYYY-MM-DD, or leave it empty."
        expiration = None
    if not errors:
        try:
            created = await api.create_key(request, api.NewServiceKey(
                service=values["service"], name=values["name"], expiration=expiration, notes=values["notes"]),
                identity)
        except (ApiError, AccountError, ValidationError) as exc:
            text = error_text(exc)
            errors["expiration" if "expiration" in text.lower() else "name" if "name" in text.lower()
                   else "service"] = text
    if errors:
        return await panel(request, tab="keys", status=400, extra={"errors": errors, "values": values})
    # The private half exists only in this response; the registry keeps just the public key.
    return await panel(request, tab="keys", extra={"new_key": created})


async def approve_key(request: Request) -> Response:
    identity, form, fresh = await _writer(request)
    kid = request.path_params["kid"]
    if not fresh:
        return await _stale(request, "keys")
    try:
        await api.approve_key(request, kid, api.Approval(notes=_field(form, "notes", 4096)), identity)
    except (ApiError, AccountError) as exc:
        return await _failed(request, "keys", exc)
    flash(request, "Service key approved.", "success")
    return RedirectResponse(_tab_url("keys"), status_code=303)


async def delete_key(request: Request) -> Response:
    identity, _, fresh = await _writer(request)
    kid = request.path_params["kid"]
    if not fresh:
        return await _stale(request, "keys")
    try:
        await api.delete_key(request, kid, identity)
    except (ApiError, AccountError) as exc:
        return await _failed(request, "keys", exc)
    flash(request, "Service key deleted.", "success")
    return RedirectResponse(_tab_url("keys"), status_code=303)


# --- global messages -----------------------------------------------------------------------------

async def create_message(request: Request) -> Response:
    identity, form, fresh = await _writer(request)
    content = form.get("content") if isinstance(form.get("content"), str) else ""
    values = {"content": content, "severity": _field(form, "severity", 16) or "info"}
    if not fresh:
        return await _stale(request, "messages", values=values)
    errors = {}
    if values["severity"] not in dict(SEVERITIES):
        errors["severity"] = "Choose normal, warning or error."
    elif not content.strip():
        errors["content"] = "Write the message every visitor will see."
    else:
        try:
            await api.create_message(request, api.NewMessage(message=api.MessageBody(
                content=content.strip(), media_type="text/plain", severity=values["severity"])), identity)
        except (ApiError, AccountError, ValidationError) as exc:
            errors["content"] = error_text(exc)
    if errors:
        return await panel(request, tab="messages", status=400, extra={"errors": errors, "values": values})
    flash(request, "Message published: every visitor now sees it at the top of each page.", "success")
    return RedirectResponse(_tab_url("messages"), status_code=303)


async def delete_message(request: Request) -> Response:
    identity, _, fresh = await _writer(request)
    if not fresh:
        return await _stale(request, "messages")
    try:
        await api.delete_message(request, request.path_params["uuid"], identity)
    except (ApiError, AccountError) as exc:
        return await _failed(request, "messages", exc)
    flash(request, "Message removed.", "success")
    return RedirectResponse(_tab_url("messages"), status_code=303)


async def not_found(request: Request) -> Response:
    """GET on an action URL: the same 404 as anything else under /superuser (not a 405 hinting at it)."""
    raise HTTPException(404)


POST = ["POST"]

routes = [
    Route(BASE, panel_get),
    Route(BASE + "/", panel_get),
    Route(BASE + "/confirm", confirm_password, methods=POST),
    Route(BASE + "/users", create_user, methods=POST),
    Route(BASE + "/users/{username}/disable", disable_user, methods=POST),
    Route(BASE + "/users/{username}/enable", enable_user, methods=POST),
    Route(BASE + "/users/{username}/password", change_user_password, methods=POST),
    Route(BASE + "/users/{username}/delete", delete_user, methods=POST),
    Route(BASE + "/organizations/{name}/delete", delete_org, methods=POST),
    Route(BASE + "/organizations/{name}/takeownership", take_ownership, methods=POST),
    Route(BASE + "/keys", create_key, methods=POST),
    Route(BASE + "/keys/{kid}/approve", approve_key, methods=POST),
    Route(BASE + "/keys/{kid}/delete", delete_key, methods=POST),
    Route(BASE + "/messages", create_message, methods=POST),
    Route(BASE + "/messages/{uuid}/delete", delete_message, methods=POST),
    Route(BASE + "/{rest:path}", not_found, methods=["GET"]),
]
