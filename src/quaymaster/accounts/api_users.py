"""/api/v1 routes for the signed-in user: account, sign-in, sessions, app tokens, first-user bootstrap."""

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from quaymaster.accounts import apptokens, credentials, orgs
from quaymaster.accounts import service as users
from quaymaster.accounts.models import AppSpecificAuthToken, User
from quaymaster.accounts.service import Identity
from quaymaster.api.auth import (
    ctx_of,
    current_identity,
    require_fresh_login,
    scoped,
    signed_in,
    start_session,
)
from quaymaster.api.errors import ApiError, forbidden, not_found, unauthorized
from quaymaster.api.format import client_ip, quay_time
from quaymaster.settings.units import parse_duration

router = APIRouter(tags=["user"])


class NewUser(BaseModel):
    username: str
    password: str
    email: str | None = None


class InitializeUser(NewUser):
    access_token: bool = False


class SignIn(BaseModel):
    username: str
    password: str


class VerifyPassword(BaseModel):
    password: str


class UserUpdate(BaseModel):
    password: str | None = None
    email: str | None = None
    tag_expiration_s: int | None = Field(default=None, ge=0)  # the time-machine window


class NewAppToken(BaseModel):
    title: str = Field(min_length=1, max_length=255)


async def user_view(request: Request, user: User, identity: Identity | None = None) -> dict:
    """Quay's shape of the signed-in user."""
    ctx = ctx_of(request)
    async with ctx.db.read() as session:
        memberships = await orgs.orgs_of(session, user.id)
    return {
        "anonymous": False, "username": user.username, "email": user.email, "verified": user.verified,
        "avatar": {"name": user.username, "kind": "user"},
        "organizations": [{"name": org.username, "is_org_admin": admin, "avatar": {"name": org.username, "kind": "org"}}
                          for org, admin in memberships],
        "super_user": identity.superuser if identity is not None and identity.user_id == user.id
        else ctx.settings.is_superuser(user.username), "can_create_repo": True,
        "tag_expiration_s": user.removed_tag_expiration_s, "prompts": [],
    }


async def _me(request: Request, identity: Identity) -> User:
    async with ctx_of(request).db.read() as session:
        user = await session.get(User, identity.user_id)
    if user is None or user.robot:
        raise unauthorized()
    return user


@router.get("/user/", summary="The signed-in user")
async def get_user(request: Request, identity: Identity = Depends(scoped("user:read"))):
    return await user_view(request, await _me(request, identity), identity)


@router.post("/user/", status_code=201, summary="Create an account")
async def create_user(request: Request, body: NewUser):
    ctx = ctx_of(request)
    if not ctx.settings.FEATURE_USER_CREATION:
        raise forbidden("user creation is disabled")
    _require_database_auth(ctx.settings, "accounts are created by signing in with LDAP credentials")
    async with ctx.db.write() as session:
        user = await users.create_user(session, body.username, body.email, body.password)
    ctx.audit.record("user_create", account_id=user.id, performer_id=user.id, ip=client_ip(request),
                     metadata={"username": user.username})
    return await user_view(request, user)


@router.put("/user/", summary="Change the signed-in user's password, email or time-machine window")
async def update_user(request: Request, body: UserUpdate, identity: Identity = Depends(scoped("user:admin"))):
    require_fresh_login(request, identity)
    ctx = ctx_of(request)
    async with ctx.db.write() as session:
        user = await session.get(User, identity.user_id)
        if body.password is not None:
            _require_database_auth(ctx.settings, "passwords are managed by the LDAP directory")
            await users.set_password(session, user, body.password)
            ctx.audit.record("user_change_password", account_id=user.id, performer_id=user.id, ip=client_ip(request))
        if body.email is not None:
            await users.set_email(session, user, body.email)
            ctx.audit.record("user_change_email", account_id=user.id, performer_id=user.id, ip=client_ip(request),
                             metadata={"email": body.email})
        if body.tag_expiration_s is not None:
            if not ctx.settings.FEATURE_CHANGE_TAG_EXPIRATION:
                raise ApiError(400, "changing the time-machine window is disabled (FEATURE_CHANGE_TAG_EXPIRATION)")
            allowed = [parse_duration(option) for option in ctx.settings.TAG_EXPIRATION_OPTIONS]
            orgs.set_tag_expiration(user, body.tag_expiration_s, allowed)
            ctx.audit.record("user_change_tag_expiration", account_id=user.id, performer_id=user.id,
                             ip=client_ip(request), metadata={"tag_expiration": body.tag_expiration_s})
    return await user_view(request, user)


@router.get("/users/{username}", summary="A user's public profile")
async def public_user(request: Request, username: str):
    async with ctx_of(request).db.read() as session:
        user = await users.get_user(session, username)
    if user is None:
        raise not_found("user not found")
    return {"username": user.username, "avatar": {"name": user.username, "kind": "user"}, "super_user": False}


@router.post("/user/initialize", summary="Create the first user of an empty registry")
async def initialize(request: Request, body: InitializeUser):
    ctx = ctx_of(request)
    if not ctx.settings.FEATURE_USER_INITIALIZE:
        raise not_found("FEATURE_USER_INITIALIZE is off")
    _require_database_auth(ctx.settings, "the first user signs in with LDAP credentials")
    async with ctx.db.write() as session:
        if await users.count_users(session):
            raise ApiError(400, "cannot initialize a registry that already has users")
        user = await users.create_user(session, body.username, body.email, body.password)
        result = {"username": user.username, "email": user.email, "encrypted_password": None}
        if body.access_token:
            _, token = await apptokens.create_oauth_token(session, user, frozenset(apptokens.SCOPES))
            result["access_token"] = token
    ctx.audit.record("user_create", account_id=user.id, performer_id=user.id, ip=client_ip(request),
                     metadata={"username": user.username, "via": "initialize"})
    return result


def _require_database_auth(settings, why: str) -> None:
    """Local passwords mean nothing when another service checks them (Quay answers the same way)."""
    if settings.AUTHENTICATION_TYPE != "Database":
        raise ApiError(400, f"not available with AUTHENTICATION_TYPE {settings.AUTHENTICATION_TYPE}: {why}")


def _unavailable() -> ApiError:
    return ApiError(403, "authentication service unavailable; try again later", "authentication_unavailable")


@router.post("/signin", summary="Sign in with a password (starts a browser session)")
async def signin(request: Request, body: SignIn):
    ctx = ctx_of(request)
    try:
        async with ctx.db.write() as session:
            found = await credentials.password_login(session, ctx.settings, body.username, body.password)
    except users.AuthUnavailable:
        ctx.audit.record("login_failure", ip=client_ip(request),
                         metadata={"type": "signin", "username": body.username[:255], "reason": "unavailable"})
        raise _unavailable() from None
    user = found[0] if found else None
    if user is None:
        ctx.audit.record("login_failure", ip=client_ip(request), metadata={"type": "signin", "username": body.username[:255]})
        raise ApiError(403, "Invalid username or password", "invalid_credentials")
    csrf = start_session(request, user)
    ctx.audit.record("login_success", account_id=user.id, performer_id=user.id, ip=client_ip(request),
                     metadata={"type": "signin"})
    return {"success": True, "csrf_token": csrf}


@router.post("/signin/verify", summary="Confirm the password again for a fresh login")
async def verify(request: Request, body: VerifyPassword, identity: Identity = Depends(signed_in)):
    ctx = ctx_of(request)
    try:
        async with ctx.db.write() as session:
            user = await session.get(User, identity.user_id)
            confirmed = user is not None and await credentials.confirm_password(session, ctx.settings, user,
                                                                                body.password)
    except users.AuthUnavailable:
        raise _unavailable() from None
    if not confirmed:
        raise ApiError(403, "Invalid password", "invalid_credentials")
    return {"success": True, "csrf_token": start_session(request, user)}


@router.post("/signout", summary="End the browser session")
async def signout(request: Request, identity: Identity = Depends(current_identity)):
    if not identity.anonymous:
        ctx_of(request).audit.record("logout_success", account_id=identity.user_id, performer_id=identity.user_id,
                                     ip=client_ip(request))
    request.session.clear()
    return {"success": True}


@router.get("/csrf_token", summary="The CSRF token to send as X-CSRF-Token with browser writes")
async def csrf_token(request: Request, identity: Identity = Depends(signed_in)):
    return {"csrf_token": request.session.get("csrf")}


# --- app-specific tokens -------------------------------------------------------------------------

def _token_view(row: AppSpecificAuthToken, token: str | None = None) -> dict:
    view = {"uuid": row.uuid, "title": row.title, "created": quay_time(row.created), "expiration": quay_time(row.expiration),
            "last_accessed": quay_time(row.last_accessed)}
    if token is not None:
        view["token_code"] = token
    return view


def _require_app_tokens(request: Request, identity: Identity) -> None:
    if not ctx_of(request).settings.FEATURE_APP_SPECIFIC_TOKENS:
        raise not_found("app-specific tokens are disabled")
    if identity.kind != "user":
        raise forbidden("robots have no app tokens")


@router.get("/user/apptoken", summary="List your app-specific tokens")
async def list_app_tokens(request: Request, identity: Identity = Depends(scoped("user:admin"))):
    _require_app_tokens(request, identity)
    async with ctx_of(request).db.read() as session:
        rows = await apptokens.list_app_tokens(session, await session.get(User, identity.user_id))
    return {"tokens": [_token_view(r) for r in rows], "only_expiring": None}


@router.post("/user/apptoken", summary="Create an app-specific token (shown once)")
async def create_app_token(request: Request, body: NewAppToken, identity: Identity = Depends(scoped("user:admin"))):
    _require_app_tokens(request, identity)
    ctx = ctx_of(request)
    async with ctx.db.write() as session:
        row, token = await apptokens.create_app_token(session, ctx.cipher, await session.get(User, identity.user_id),
                                                      body.title)
    ctx.audit.record("create_app_specific_token", account_id=identity.user_id, performer_id=identity.user_id,
                     ip=client_ip(request), metadata={"app_specific_token_title": body.title, "app_specific_token": row.uuid})
    return {"token": _token_view(row, token)}


@router.get("/user/apptoken/{token_uuid}", summary="One app-specific token, with its secret")
async def get_app_token(request: Request, token_uuid: str, identity: Identity = Depends(scoped("user:admin"))):
    _require_app_tokens(request, identity)
    ctx = ctx_of(request)
    async with ctx.db.read() as session:
        row = await apptokens.require_app_token(session, await session.get(User, identity.user_id), token_uuid)
    return {"token": _token_view(row, apptokens.full_app_token(ctx.cipher, row))}


@router.delete("/user/apptoken/{token_uuid}", status_code=204, summary="Revoke an app-specific token")
async def revoke_app_token(request: Request, token_uuid: str, identity: Identity = Depends(scoped("user:admin"))):
    _require_app_tokens(request, identity)
    ctx = ctx_of(request)
    async with ctx.db.write() as session:
        row = await apptokens.require_app_token(session, await session.get(User, identity.user_id), token_uuid)
        await apptokens.revoke_app_token(session, row)
    ctx.audit.record("revoke_app_specific_token", account_id=identity.user_id, performer_id=identity.user_id,
                     ip=client_ip(request), metadata={"app_specific_token_title": row.title, "app_specific_token": row.uuid})
