"""/api/v1 superuser panel (users, organizations, service keys, change log) and global messages.

Every superuser route needs FEATURE_SUPER_USERS (else 404, as Quay hides it), a superuser and a
token with `super:user`; changes made from a browser session also need a fresh login."""

from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from quaymaster.accounts import orgs
from quaymaster.accounts import service as accounts
from quaymaster.accounts.models import ServiceKey, User
from quaymaster.accounts.service import Identity
from quaymaster.api.auth import ctx_of, require_fresh_login, superuser
from quaymaster.api.errors import ApiError, not_found
from quaymaster.api.format import client_ip, quay_time
from quaymaster.superuser import service
from quaymaster.superuser.models import Message

router = APIRouter(tags=["superuser"])

CHANGELOG = Path(__file__).resolve().parents[3] / "CHANGELOG.md"


def superuser_feature(request: Request) -> None:
    """Quay hides superuser resources (404) while FEATURE_SUPER_USERS is off."""
    if not ctx_of(request).settings.FEATURE_SUPER_USERS:
        raise not_found("superuser features are disabled")


FEATURE = [Depends(superuser_feature)]


async def superuser_change(request: Request, identity: Identity = Depends(superuser)) -> Identity:
    """A superuser making a change: from a browser session, only shortly after signing in."""
    require_fresh_login(request, identity)
    return identity


Reader = Depends(superuser)
Writer = Depends(superuser_change)


def _record(request: Request, kind: str, identity: Identity, account_id: int | None, **metadata) -> None:
    ctx_of(request).audit.record(kind, account_id=account_id, performer_id=identity.user_id, ip=client_ip(request),
                                 metadata=metadata)


# --- users ---------------------------------------------------------------------------------------

class NewUser(BaseModel):
    username: str
    email: str | None = None


class UserChange(BaseModel):
    password: str | None = None
    email: str | None = None
    enabled: bool | None = None


def user_view(request: Request, user: User) -> dict:
    return {"kind": "user", "name": user.username, "username": user.username, "email": user.email,
            "verified": user.verified, "avatar": {"name": user.username, "kind": "user"},
            "super_user": ctx_of(request).settings.is_superuser(user.username), "enabled": user.enabled}


async def _target_user(request: Request, session, username: str, action: str) -> User:
    """A non-superuser account a superuser may change (Quay leaves superusers to the config file)."""
    user = await accounts.get_user(session, username)
    if user is None:
        raise not_found(f"user {username} not found")
    if ctx_of(request).settings.is_superuser(username):
        raise ApiError(400, f"Cannot {action} a superuser")
    return user


@router.get("/superuser/users/", summary="Every user of the registry", dependencies=FEATURE)
async def list_users(request: Request, disabled: bool = Query(True), identity: Identity = Reader):
    async with ctx_of(request).db.read() as session:
        rows = await accounts.list_users(session, include_disabled=disabled)
    return {"users": [user_view(request, u) for u in rows]}


@router.post("/superuser/users/", summary="Create a user with a generated password (shown once)",
             dependencies=FEATURE)
async def create_user(request: Request, body: NewUser, identity: Identity = Writer):
    ctx = ctx_of(request)
    async with ctx.db.write() as session:
        user, password = await service.create_user(session, body.username, body.email)
    _record(request, "user_create", identity, user.id, username=user.username, superuser=identity.username)
    return {"username": user.username, "email": user.email, "password": password}


@router.get("/superuser/users/{username}", summary="One user", dependencies=FEATURE)
async def get_user(request: Request, username: str, identity: Identity = Reader):
    async with ctx_of(request).db.read() as session:
        user = await accounts.get_user(session, username)
    if user is None:
        raise not_found(f"user {username} not found")
    return user_view(request, user)


@router.put("/superuser/users/{username}", summary="Change a user's password, email or enabled state",
            dependencies=FEATURE)
async def change_user(request: Request, username: str, body: UserChange, identity: Identity = Writer):
    ctx = ctx_of(request)
    async with ctx.db.write() as session:
        user = await _target_user(request, session, username, "update")
        if body.password is not None:
            await accounts.set_password(session, user, body.password)
        if body.email is not None:
            await accounts.set_email(session, user, body.email)
        if body.enabled is not None:
            await accounts.set_enabled(session, user, body.enabled)
    # Recorded only once the change is committed.
    if body.password is not None:
        _record(request, "user_change_password", identity, user.id, username=username, superuser=identity.username)
    if body.email is not None:
        _record(request, "user_change_email", identity, user.id, username=username, email=body.email,
                superuser=identity.username)
    if body.enabled is not None:
        _record(request, "user_enable" if body.enabled else "user_disable", identity, user.id, username=username,
                superuser=identity.username)
    return user_view(request, user)


@router.delete("/superuser/users/{username}", status_code=204,
               summary="Delete a user (their repositories are garbage collected)", dependencies=FEATURE)
async def delete_user(request: Request, username: str, identity: Identity = Writer):
    async with ctx_of(request).db.write() as session:
        user = await _target_user(request, session, username, "delete")
        user_id = user.id
        await service.delete_user(session, user)
    _record(request, "user_delete", identity, user_id, username=username, superuser=identity.username)
    return Response(status_code=204)


# --- organizations -------------------------------------------------------------------------------

@router.get("/superuser/organizations/", summary="Every organization of the registry", dependencies=FEATURE)
async def list_organizations(request: Request, identity: Identity = Reader):
    async with ctx_of(request).db.read() as session:
        rows = await orgs.list_orgs(session)
    return {"organizations": [{"name": o.username, "email": o.email, "avatar": {"name": o.username, "kind": "org"}}
                              for o in rows]}


@router.delete("/superuser/organizations/{name}", status_code=204,
               summary="Delete an organization (its repositories are garbage collected)", dependencies=FEATURE)
async def delete_organization(request: Request, name: str, identity: Identity = Writer):
    async with ctx_of(request).db.write() as session:
        org = await orgs.get_org(session, name)
        if org is None:
            raise not_found(f"organization {name} not found")
        org_id = org.id
        await service.delete_org(session, org)
    _record(request, "org_delete", identity, org_id, namespace=name, superuser=identity.username)
    return Response(status_code=204)


@router.post("/superuser/takeownership/{namespace}", summary="Join an organization's owners team",
             dependencies=FEATURE)
async def take_ownership(request: Request, namespace: str, identity: Identity = Writer):
    ctx = ctx_of(request)
    if ctx.settings.is_superuser(namespace):
        raise ApiError(400, "Cannot take ownership of a superuser")
    async with ctx.db.write() as session:
        target = await accounts.get_namespace(session, namespace)
        if target is None or target.robot:
            raise not_found(f"namespace {namespace} not found")
        if not target.organization:
            raise ApiError(400, f"{namespace} is a user; taking over a user namespace (converting it to an "
                                "organization) is not supported")
        me = await session.get(User, identity.user_id)
        await service.take_ownership(session, target, me)
        entity_id = target.id
    _record(request, "take_ownership", identity, identity.user_id, entity_id=entity_id, namespace=namespace,
            was_user=False, superuser=identity.username)
    return {"namespace": namespace}


# --- service keys --------------------------------------------------------------------------------

class NewServiceKey(BaseModel):
    service: str
    name: str = ""
    expiration: float | None
    metadata: dict = Field(default_factory=dict)
    notes: str = ""


class ServiceKeyChange(BaseModel):
    name: str | None = None
    metadata: dict | None = None
    expiration: float | None = None


class Approval(BaseModel):
    notes: str = ""


def _from_unix(value: float | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(float(value), tz=UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        raise ApiError(400, f"invalid expiration date {value!r}") from None


def key_view(row: ServiceKey) -> dict:
    found = service.approval(row)
    if found is not None:
        found = {**found, "approved_date": quay_time(found["approved_date"])}
        approver = found.pop("approver")
        found["approver"] = {"kind": "user", "name": approver, "username": approver,
                             "avatar": {"name": approver, "kind": "user"}} if approver else None
    return {"kid": row.kid, "name": row.name, "service": row.service, "jwk": row.jwk,
            "metadata": service.public_metadata(row), "created_date": quay_time(row.created_date),
            "expiration_date": quay_time(row.expiration_date), "rotation_duration": row.rotation_duration,
            "approval": found}


def _key_log(row: ServiceKey, **extra) -> dict:
    return {"kid": row.kid, "service": row.service, "name": row.name,
            "expiration_date": quay_time(row.expiration_date), **extra}


@router.get("/superuser/keys", summary="Every service key, the registry nodes' own included", dependencies=FEATURE)
async def list_keys(request: Request, identity: Identity = Reader):
    async with ctx_of(request).db.read() as session:
        rows = await service.list_keys(session)
    return {"keys": [key_view(r) for r in rows]}


@router.post("/superuser/keys", summary="Generate an approved service key (the private key is shown once)",
             dependencies=FEATURE)
async def create_key(request: Request, body: NewServiceKey, identity: Identity = Writer):
    metadata = {**body.metadata, "created_by": "Superuser API", "creator": identity.username,
                "ip": client_ip(request)}
    async with ctx_of(request).db.write() as session:
        new = await service.create_key(session, name=body.name, service=body.service,
                                       expiration=_from_unix(body.expiration), metadata=metadata,
                                       approver=identity.username, notes=body.notes)
    details = _key_log(new.row, preshared=True, auto_approved=True)
    _record(request, "service_key_create", identity, None, **details)
    _record(request, "service_key_approve", identity, None, **details)
    return {"kid": new.row.kid, "name": new.row.name, "service": new.row.service,
            "public_key": new.public_pem, "private_key": new.private_pem}


@router.get("/superuser/keys/{kid}", summary="One service key", dependencies=FEATURE)
async def get_key(request: Request, kid: str, identity: Identity = Reader):
    async with ctx_of(request).db.read() as session:
        row = await service.require_key(session, kid)
    return key_view(row)


@router.put("/superuser/keys/{kid}", summary="Rename a service key, add metadata or change its expiration",
            dependencies=FEATURE)
async def change_key(request: Request, kid: str, body: ServiceKeyChange, identity: Identity = Writer):
    given = body.model_fields_set
    async with ctx_of(request).db.write() as session:
        row = await service.require_key(session, kid)
        old_expiration = row.expiration_date
        await service.update_key(session, row, name=body.name, metadata=body.metadata,
                                 set_expiration="expiration" in given, expiration=_from_unix(body.expiration))
    if "expiration" in given:
        _record(request, "service_key_extend", identity, None,
                **_key_log(row, old_expiration_date=quay_time(old_expiration)))
    if given & {"name", "metadata"}:
        _record(request, "service_key_modify", identity, None, **_key_log(row))
    return key_view(row)


@router.delete("/superuser/keys/{kid}", status_code=204, summary="Delete a service key", dependencies=FEATURE)
async def delete_key(request: Request, kid: str, identity: Identity = Writer):
    async with ctx_of(request).db.write() as session:
        row = await service.require_key(session, kid)
        await service.delete_key(session, row)
    _record(request, "service_key_delete", identity, None,
            **_key_log(row, created_date=quay_time(row.created_date)))
    return Response(status_code=204)


@router.post("/superuser/approvedkeys/{kid}", status_code=201, summary="Approve a pending service key",
             dependencies=FEATURE)
async def approve_key(request: Request, kid: str, body: Approval, identity: Identity = Writer):
    async with ctx_of(request).db.write() as session:
        row = await service.require_key(session, kid)
        approved = await service.approve_key(session, row, identity.username, body.notes)
    if approved:
        _record(request, "service_key_approve", identity, None, **_key_log(row))
    return Response(status_code=201)


# --- change log ----------------------------------------------------------------------------------

@router.get("/superuser/changelog/", summary="Release notes of this installation", dependencies=FEATURE)
async def changelog(request: Request, identity: Identity = Reader):
    try:
        text = CHANGELOG.read_text(encoding="utf-8")
    except OSError:
        text = ""
    return {"log": text}


# --- global messages -----------------------------------------------------------------------------

class MessageBody(BaseModel):
    content: str
    media_type: str = "text/plain"
    severity: str = "info"


class NewMessage(BaseModel):
    message: MessageBody


def message_view(row: Message) -> dict:
    return {"uuid": row.uuid, "content": row.content, "media_type": row.media_type, "severity": row.severity}


@router.get("/messages", summary="Messages every visitor sees (no sign-in needed)")
async def list_messages(request: Request):
    async with ctx_of(request).db.read() as session:
        rows = await service.list_messages(session)
    return {"messages": [message_view(m) for m in rows]}


@router.post("/messages", status_code=201, summary="Show a message to every visitor", dependencies=FEATURE)
async def create_message(request: Request, body: NewMessage, identity: Identity = Writer):
    async with ctx_of(request).db.write() as session:
        row = await service.create_message(session, body.message.content, body.message.media_type,
                                           body.message.severity)
    _record(request, "create_message", identity, identity.user_id, uuid=row.uuid, message=row.content,
            severity=row.severity)
    return message_view(row)


@router.delete("/message/{message_uuid}", status_code=204, summary="Remove a message", dependencies=FEATURE)
async def delete_message(request: Request, message_uuid: str, identity: Identity = Writer):
    async with ctx_of(request).db.write() as session:
        row = await service.delete_message(session, message_uuid)
    _record(request, "delete_message", identity, identity.user_id, uuid=row.uuid, message=row.content)
    return Response(status_code=204)
