"""Account pages: sign in, create account, sign out, and the user's own settings
(password, email, time-machine window, app-specific tokens, CLI login help)."""

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from quaymaster.accounts import apptokens, credentials, orgs
from quaymaster.accounts import service as users
from quaymaster.accounts.models import User
from quaymaster.accounts.service import AccountError, AuthUnavailable, Identity, LoginThrottled
from quaymaster.accounts.views_orgs import expiration_choices, duration_text
from quaymaster.api.auth import start_session
from quaymaster.api.format import client_ip
from quaymaster.web.render import (
    check_csrf,
    ctx_of,
    flash,
    identity_of,
    render,
    require_signin,
    safe_next,
)

REVEAL_KEY = "_reveal_app_token"  # the uuid of a token created a moment ago, shown once


def _field(form, name: str, limit: int = 1024) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


# --- sign in / out, create account ---------------------------------------------------------------

def local_passwords(settings) -> bool:
    """Passwords live in our database (not in an LDAP directory): they can be set and changed here."""
    return settings.AUTHENTICATION_TYPE == "Database"


def signup_enabled(settings) -> bool:
    return settings.FEATURE_USER_CREATION and local_passwords(settings)


async def signin(request: Request) -> Response:
    ctx = ctx_of(request)
    next_url = safe_next(request.query_params.get("next"))
    if request.method == "GET":
        if not (await identity_of(request)).anonymous:
            return RedirectResponse(next_url, status_code=303)
        return await render(request, "accounts/signin.html", {"next": next_url, "username": ""})
    form = await check_csrf(request)
    next_url = safe_next(_field(form, "next"))
    username, password = _field(form, "username", 255).strip(), _field(form, "password")
    error, status = None, 200
    user = None
    if not username or not password:
        error, status = "Enter your username and password.", 400
    else:
        try:
            async with ctx.db.write() as session:
                found = await credentials.password_login(session, ctx.settings, username, password)
            user = found[0] if found else None
        except LoginThrottled as exc:
            error, status = str(exc).capitalize() + ".", 429
        except AuthUnavailable:
            ctx.audit.record("login_failure", ip=client_ip(request),
                             metadata={"type": "signin", "username": username, "reason": "unavailable"})
            error, status = "The sign-in service is unavailable right now. Try again later.", 503
        if user is None and error is None:
            ctx.audit.record("login_failure", ip=client_ip(request), metadata={"type": "signin", "username": username})
            error, status = "Invalid username or password.", 403
    if user is None:
        return await render(request, "accounts/signin.html",
                            {"next": next_url, "username": username, "error": error}, status=status)
    start_session(request, user)
    ctx.audit.record("login_success", account_id=user.id, performer_id=user.id, ip=client_ip(request),
                     metadata={"type": "signin"})
    return RedirectResponse(next_url, status_code=303)


async def signup(request: Request) -> Response:
    ctx = ctx_of(request)
    if not signup_enabled(ctx.settings):
        raise HTTPException(404)
    next_url = safe_next(request.query_params.get("next"))
    values = {"username": "", "email": ""}
    if request.method == "GET":
        return await render(request, "accounts/signup.html", {"next": next_url, "values": values, "errors": {}})
    form = await check_csrf(request)
    next_url = safe_next(_field(form, "next"))
    values = {"username": _field(form, "username", 255).strip(), "email": _field(form, "email", 255).strip()}
    password, confirm = _field(form, "password"), _field(form, "confirm_password")
    errors: dict[str, str] = {}
    if not values["username"]:
        errors["username"] = "Choose a username."
    if not values["email"]:
        errors["email"] = "Enter an email address."
    if len(password) < users.MIN_PASSWORD_LENGTH:
        errors["password"] = f"Use at least {users.MIN_PASSWORD_LENGTH} characters."
    elif password != confirm:
        errors["confirm_password"] = "The passwords do not match."
    user = None
    if not errors:
        try:
            async with ctx.db.write() as session:
                user = await users.create_user(session, values["username"], values["email"], password)
        except AccountError as exc:
            message = str(exc)
            errors["email" if "email" in message else "username"] = message[:1].upper() + message[1:]
    if user is None:
        return await render(request, "accounts/signup.html", {"next": next_url, "values": values, "errors": errors},
                            status=409 if any("taken" in e or "in use" in e for e in errors.values()) else 400)
    ctx.audit.record("user_create", account_id=user.id, performer_id=user.id, ip=client_ip(request),
                     metadata={"username": user.username})
    start_session(request, user)
    flash(request, f"Welcome, {user.username}! Your account is ready.", "success")
    return RedirectResponse(next_url, status_code=303)


async def signout(request: Request) -> Response:
    await check_csrf(request)
    identity = await identity_of(request)
    if not identity.anonymous:
        ctx_of(request).audit.record("logout_success", account_id=identity.user_id, performer_id=identity.user_id,
                                     ip=client_ip(request))
    request.session.clear()
    flash(request, "You are signed out.", "info")
    return RedirectResponse("/signin", status_code=303)


# --- the user's page and settings ----------------------------------------------------------------

async def _me(request: Request, name: str) -> tuple[Identity, User]:
    """The signed-in user, who must be `name`: nobody sees another account's settings."""
    identity = await require_signin(request)
    if identity.kind != "user" or identity.username != name:
        raise HTTPException(404)
    async with ctx_of(request).db.read() as session:
        user = await session.get(User, identity.user_id)
    if user is None:
        raise HTTPException(404)
    return identity, user


def cli_commands(ctx, username: str) -> dict:
    host = ctx.settings.SERVER_HOSTNAME
    return {"podman": f"podman login {host}", "docker": f"docker login {host}", "host": host, "username": username,
            "plain_http": ctx.settings.PREFERRED_URL_SCHEME == "http"}


async def _settings_page(request: Request, user: User, *, status: int = 200, **extra) -> Response:
    ctx = ctx_of(request)
    tokens_on = ctx.settings.FEATURE_APP_SPECIFIC_TOKENS
    tokens, new_token = [], None
    reveal = request.session.pop(REVEAL_KEY, None)
    if tokens_on:
        async with ctx.db.read() as session:
            tokens = await apptokens.list_app_tokens(session, user)
        for row in tokens:
            if reveal and row.uuid == reveal:
                new_token = {"title": row.title, "token": apptokens.full_app_token(ctx.cipher, row)}
    context = {"account": user, "tokens": tokens, "tokens_enabled": tokens_on, "new_token": new_token,
               "local_passwords": local_passwords(ctx.settings),
               "expiration_text": duration_text(user.removed_tag_expiration_s),
               "expiration_choices": expiration_choices(request),
               "can_change_expiration": ctx.settings.FEATURE_CHANGE_TAG_EXPIRATION,
               "cli": cli_commands(ctx, user.username), "errors": {}}
    context.update(extra)
    return await render(request, "accounts/settings.html", context, status=status)


async def user_page(request: Request) -> Response:
    """Quay's /user/{name}: the settings tab for yourself; otherwise that user's repositories."""
    name = request.path_params["name"]
    identity = await identity_of(request)
    if request.query_params.get("tab", "settings") == "settings" and identity.username == name \
            and identity.kind == "user":
        _, user = await _me(request, name)
        return await _settings_page(request, user)
    tab = request.query_params.get("tab")
    if identity.anonymous and tab in ("settings", "robots"):
        await require_signin(request)
    if tab == "robots" and identity.username == name:
        return RedirectResponse(f"/user/{name}/robots", status_code=303)  # the robots pages (views_orgs)
    return RedirectResponse(f"/repository/?namespace={name}", status_code=303)


async def _verify_current(request: Request, user: User, password: str) -> bool:
    """A fresh login: the signed-in user's password, checked wherever passwords live."""
    ctx = ctx_of(request)
    try:
        async with ctx.db.write() as session:
            return await credentials.confirm_password(session, ctx.settings, user, password)
    except (LoginThrottled, AuthUnavailable):
        return False


async def change_password(request: Request) -> Response:
    identity, user = await _me(request, request.path_params["name"])
    form = await check_csrf(request)
    ctx = ctx_of(request)
    if not local_passwords(ctx.settings):
        raise HTTPException(404)
    current, new = _field(form, "current_password"), _field(form, "new_password")
    confirm = _field(form, "confirm_password")
    errors = {}
    if not await _verify_current(request, user, current):
        errors["current_password"] = "Your current password is not correct."
    elif len(new) < users.MIN_PASSWORD_LENGTH:
        errors["new_password"] = f"Use at least {users.MIN_PASSWORD_LENGTH} characters."
    elif new != confirm:
        errors["confirm_password"] = "The new passwords do not match."
    if errors:
        return await _settings_page(request, user, status=400, errors=errors, open_section="password")
    async with ctx.db.write() as session:
        row = await session.get(User, user.id)
        await users.set_password(session, row, new)
    ctx.audit.record("user_change_password", account_id=user.id, performer_id=user.id, ip=client_ip(request))
    start_session(request, user)  # a fresh session: the login time restarts, old CSRF tokens stop working
    flash(request, "Your password was changed.", "success")
    return RedirectResponse(f"/user/{user.username}?tab=settings", status_code=303)


async def change_email(request: Request) -> Response:
    identity, user = await _me(request, request.path_params["name"])
    form = await check_csrf(request)
    ctx = ctx_of(request)
    if not local_passwords(ctx.settings):
        raise HTTPException(404)  # the directory owns the email address too
    email, current = _field(form, "email", 255).strip(), _field(form, "current_password")
    errors = {}
    if not await _verify_current(request, user, current):
        errors["email_password"] = "Your current password is not correct."
    else:
        try:
            async with ctx.db.write() as session:
                row = await session.get(User, user.id)
                await users.set_email(session, row, email)
        except AccountError as exc:
            errors["email"] = str(exc)[:1].upper() + str(exc)[1:]
    if errors:
        return await _settings_page(request, user, status=400, errors=errors, email_value=email)
    ctx.audit.record("user_change_email", account_id=user.id, performer_id=user.id, ip=client_ip(request),
                     metadata={"email": email})
    flash(request, "Your email address was changed.", "success")
    return RedirectResponse(f"/user/{user.username}?tab=settings", status_code=303)


async def change_expiration(request: Request) -> Response:
    """The user's own time-machine window, one of TAG_EXPIRATION_OPTIONS (as PUT /api/v1/user/)."""
    _, user = await _me(request, request.path_params["name"])
    form = await check_csrf(request)
    ctx = ctx_of(request)
    if not ctx.settings.FEATURE_CHANGE_TAG_EXPIRATION:
        raise HTTPException(403, "The administrator does not allow changing the time machine window.")
    try:
        seconds = int(_field(form, "tag_expiration_s", 20).strip())
    except ValueError:
        seconds = -1
    allowed = [s for s, _ in expiration_choices(request)]
    if seconds not in allowed:
        return await _settings_page(request, user, status=400,
                                    errors={"tag_expiration_s": "Choose one of the offered windows."})
    async with ctx.db.write() as session:
        row = await session.get(User, user.id)
        orgs.set_tag_expiration(row, seconds, allowed)
    ctx.audit.record("user_change_tag_expiration", account_id=user.id, performer_id=user.id, ip=client_ip(request),
                     metadata={"tag_expiration": seconds})
    flash(request, f"Time machine window set to {duration_text(seconds)}.", "success")
    return RedirectResponse(f"/user/{user.username}?tab=settings#time-machine", status_code=303)


def _require_tokens(request: Request) -> None:
    if not ctx_of(request).settings.FEATURE_APP_SPECIFIC_TOKENS:
        raise HTTPException(404)


async def create_token(request: Request) -> Response:
    identity, user = await _me(request, request.path_params["name"])
    _require_tokens(request)
    form = await check_csrf(request)
    ctx = ctx_of(request)
    title = _field(form, "title", 300).strip()
    if not title or len(title) > 255:
        return await _settings_page(request, user, status=400,
                                    errors={"title": "Give the token a title of 1 to 255 characters."})
    async with ctx.db.write() as session:
        row, token = await apptokens.create_app_token(session, ctx.cipher, await session.get(User, user.id), title)
    ctx.audit.record("create_app_specific_token", account_id=user.id, performer_id=user.id, ip=client_ip(request),
                     metadata={"app_specific_token_title": title, "app_specific_token": row.uuid})
    # Post/redirect/get: the session remembers only which token to reveal, never its secret,
    # and the next page shows it once.
    request.session[REVEAL_KEY] = row.uuid
    return RedirectResponse(f"/user/{user.username}?tab=settings#new-token", status_code=303)


async def revoke_token(request: Request) -> Response:
    identity, user = await _me(request, request.path_params["name"])
    _require_tokens(request)
    await check_csrf(request)
    ctx = ctx_of(request)
    async with ctx.db.write() as session:
        row = await apptokens.require_app_token(session, await session.get(User, user.id),
                                                request.path_params["token_uuid"])
        title = row.title
        await apptokens.revoke_app_token(session, row)
    ctx.audit.record("revoke_app_specific_token", account_id=user.id, performer_id=user.id, ip=client_ip(request),
                     metadata={"app_specific_token_title": title,
                               "app_specific_token": request.path_params["token_uuid"]})
    flash(request, f"The token “{title}” was revoked.", "success")
    return RedirectResponse(f"/user/{user.username}?tab=settings#tokens", status_code=303)


routes = [
    Route("/signin", signin, methods=["GET", "POST"]),
    Route("/signup", signup, methods=["GET", "POST"]),
    Route("/signout", signout, methods=["POST"]),
    Route("/user/{name}", user_page),
    Route("/user/{name}/password", change_password, methods=["POST"]),
    Route("/user/{name}/email", change_email, methods=["POST"]),
    Route("/user/{name}/expiration", change_expiration, methods=["POST"]),
    Route("/user/{name}/apptoken", create_token, methods=["POST"]),
    Route("/user/{name}/apptoken/{token_uuid}/revoke", revoke_token, methods=["POST"]),
]
