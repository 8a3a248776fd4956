"""/api/v1 storage quota routes in Quay's paths and JSON (FEATURE_QUOTA_MANAGEMENT; 404 while off).

Reading a quota needs membership of the organization (or being the user, for a user namespace),
or superuser rights. Creating, changing and deleting quotas and their limits needs a superuser
(with the `super:user` scope) and FEATURE_EDIT_QUOTA, as in Quay; organization admins cannot
raise their own quota. As in Quay, the `/organization/{ns}/quota/{id}...` paths also reach a
user namespace's quota, which is how a superuser gives it limits.
"""

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from quaymaster.accounts import permissions
from quaymaster.accounts import service as users
from quaymaster.accounts.models import User
from quaymaster.accounts.service import Identity
from quaymaster.api.auth import (
    ctx_of,
    require_fresh_login,
    scoped,
    signed_in,
    superuser,
)
from quaymaster.api.errors import ApiError, forbidden, not_found
from quaymaster.api.format import client_ip
from quaymaster.content import quota as quotas
from quaymaster.content.models import Quota, QuotaLimit
from quaymaster.content.quota import QuotaError
from quaymaster.settings.units import parse_size


def quota_feature(request: Request) -> None:
    if not ctx_of(request).settings.FEATURE_QUOTA_MANAGEMENT:
        raise not_found("quota management is disabled")


router = APIRouter(tags=["quota"], dependencies=[Depends(quota_feature)])
user_admin = scoped("user:admin")


class NewQuota(BaseModel):
    limit_bytes: int | None = None
    limit: str | None = None  # "10G", "512MiB": the superuser panel's human-readable form


class NewLimit(BaseModel):
    type: str
    threshold_percent: int


class LimitChange(BaseModel):
    type: str | None = None
    threshold_percent: int | None = None


# --- views ------------------------------------------------------------------------------------

_UNITS = ("Byte", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_bytes(size: int) -> str:
    """Binary prefixes with one decimal, as Quay shows sizes ("1.5 GiB")."""
    value, unit = float(size), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{value:.1f} {_UNITS[unit]}"


def limit_view(limit: QuotaLimit) -> dict:
    return {"id": limit.id, "type": limit.kind, "limit_percent": limit.percent}


def quota_view(request: Request, quota: Quota, limits: list[QuotaLimit]) -> dict:
    return {"id": quota.id, "limit_bytes": quota.limit_bytes, "limit": human_bytes(quota.limit_bytes),
            "default_config": False, "limits": [limit_view(limit) for limit in limits],
            "default_config_exists": _system_default(request) > 0}


def _system_default(request: Request) -> int:
    return ctx_of(request).settings.DEFAULT_SYSTEM_REJECT_QUOTA_BYTES


def default_quota_view(request: Request) -> dict:
    """What applies to a namespace without a quota when DEFAULT_SYSTEM_REJECT_QUOTA_BYTES is set."""
    size = _system_default(request)
    return {"id": None, "limit_bytes": size, "limit": human_bytes(size), "default_config": True,
            "limits": [{"id": None, "type": quotas.REJECT, "limit_percent": 100}], "default_config_exists": True}


async def _quota_list(request: Request, namespace: User) -> list[dict]:
    async with ctx_of(request).db.read() as session:
        quota = await quotas.get_quota(session, namespace.id)
        limits = await quotas.list_limits(session, quota.id) if quota else []
    if quota is not None:
        return [quota_view(request, quota, limits)]
    return [default_quota_view(request)] if _system_default(request) > 0 else []


# --- access -----------------------------------------------------------------------------------

def _is_superuser(request: Request, identity: Identity) -> bool:
    return (ctx_of(request).settings.FEATURE_SUPER_USERS and identity.superuser
            and identity.has_scope("super:user"))


async def _namespace(request: Request, name: str, *, org_only: bool = False) -> User:
    async with ctx_of(request).db.read() as session:
        found = await users.get_namespace(session, name)
    if found is None or found.robot or (org_only and not found.organization):
        raise not_found(f"{'organization' if org_only else 'namespace'} {name} not found")
    return found


async def _readable(request: Request, identity: Identity, name: str, *, org_only: bool = False) -> User:
    """The namespace, if the caller may see its quota: member (org), the user itself, or superuser."""
    namespace = await _namespace(request, name, org_only=org_only)
    if _is_superuser(request, identity):
        return namespace
    if namespace.organization:
        async with ctx_of(request).db.read() as session:
            if await permissions.is_org_member(session, identity, namespace):
                return namespace
    elif identity.kind == "user" and identity.user_id == namespace.id:
        return namespace
    raise forbidden(f"requires membership of {name} or superuser rights")


async def quota_editor(request: Request, identity: Identity = Depends(signed_in)) -> Identity:
    """Only superusers change quotas, and only while FEATURE_EDIT_QUOTA is on."""
    if not ctx_of(request).settings.FEATURE_EDIT_QUOTA:
        raise forbidden("quota editing is disabled (FEATURE_EDIT_QUOTA)")
    if not _is_superuser(request, identity):
        raise forbidden("only superusers may change quotas")
    return identity


MAX_ID = 2**31 - 1


def _id(value: str, what: str = "quota") -> int:
    """Path ids are numbers that fit the id columns; anything else names nothing."""
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_ID:
        raise not_found(f"{what} not found")
    return int(value)


async def _quota(session, namespace: User, quota_id: str) -> Quota:
    found = await quotas.quota_by_id(session, namespace.id, _id(quota_id))
    if found is None:
        raise not_found("quota not found")
    return found


async def _limit(session, quota: Quota, limit_id: str) -> QuotaLimit:
    found = await quotas.limit_by_id(session, quota.id, _id(limit_id, "quota limit"))
    if found is None:
        raise not_found("quota limit not found")
    return found


def _limit_bytes(body: NewQuota) -> int | None:
    if body.limit is not None:
        try:
            return parse_size(body.limit)
        except ValueError:
            raise ApiError(400, "Invalid limit format") from None
    return body.limit_bytes


def _log(request: Request, identity: Identity, kind: str, namespace: User, **metadata) -> None:
    ctx_of(request).audit.record(kind, account_id=namespace.id, performer_id=identity.user_id,
                                 ip=client_ip(request), metadata={**metadata, "namespace": namespace.username})


# --- shared operations ------------------------------------------------------------------------

async def _create(request: Request, identity: Identity, namespace: User, body: NewQuota) -> str:
    limit_bytes = _limit_bytes(body)
    if limit_bytes is None:
        raise ApiError(400, "limit_bytes is required")
    try:
        async with ctx_of(request).db.write() as session:
            await quotas.create_quota(session, namespace, limit_bytes)
    except QuotaError as err:
        raise ApiError(400, str(err)) from None
    except IntegrityError:
        raise ApiError(400, f"Quota for '{namespace.username}' already exists") from None
    _log(request, identity, "org_create_quota", namespace, limit_bytes=limit_bytes)
    return "Created"


async def _change(request: Request, identity: Identity, namespace: User, quota_id: str, body: NewQuota) -> dict:
    limit_bytes = _limit_bytes(body)
    try:
        async with ctx_of(request).db.write() as session:
            quota = await _quota(session, namespace, quota_id)
            if limit_bytes is not None:
                await quotas.set_limit_bytes(session, quota, limit_bytes)
            view = quota_view(request, quota, await quotas.list_limits(session, quota.id))
    except QuotaError as err:
        raise ApiError(400, str(err)) from None
    if limit_bytes is not None:
        _log(request, identity, "org_change_quota", namespace, limit_bytes=limit_bytes)
    return view


async def _delete(request: Request, identity: Identity, namespace: User, quota_id: str) -> Response:
    async with ctx_of(request).db.write() as session:
        await quotas.delete_quota(session, await _quota(session, namespace, quota_id))
    _log(request, identity, "org_delete_quota", namespace)
    return Response(status_code=204)


# --- /organization/{orgname}/quota ------------------------------------------------------------

@router.get("/organization/{orgname}/quota", summary="The organization's quota (or the system default)")
async def list_org_quota(request: Request, orgname: str, identity: Identity = Depends(signed_in)):
    return await _quota_list(request, await _readable(request, identity, orgname, org_only=True))


@router.post("/organization/{orgname}/quota", status_code=201, summary="Give an organization a quota")
async def create_org_quota(request: Request, orgname: str, body: NewQuota,
                           identity: Identity = Depends(quota_editor)):
    return await _create(request, identity, await _namespace(request, orgname, org_only=True), body)


@router.get("/organization/{orgname}/quota/{quota_id}", summary="One quota")
async def get_org_quota(request: Request, orgname: str, quota_id: str, identity: Identity = Depends(signed_in)):
    namespace = await _readable(request, identity, orgname)
    async with ctx_of(request).db.read() as session:
        quota = await _quota(session, namespace, quota_id)
        return quota_view(request, quota, await quotas.list_limits(session, quota.id))


@router.put("/organization/{orgname}/quota/{quota_id}", summary="Change a quota's size")
async def change_org_quota(request: Request, orgname: str, quota_id: str, body: NewQuota,
                           identity: Identity = Depends(quota_editor)):
    return await _change(request, identity, await _namespace(request, orgname), quota_id, body)


@router.delete("/organization/{orgname}/quota/{quota_id}", status_code=204, summary="Remove a quota")
async def delete_org_quota(request: Request, orgname: str, quota_id: str,
                           identity: Identity = Depends(quota_editor)):
    return await _delete(request, identity, await _namespace(request, orgname), quota_id)


@router.get("/organization/{orgname}/quota/{quota_id}/limit", summary="A quota's limits")
async def list_org_quota_limits(request: Request, orgname: str, quota_id: str,
                                identity: Identity = Depends(signed_in)):
    namespace = await _readable(request, identity, orgname)
    async with ctx_of(request).db.read() as session:
        quota = await _quota(session, namespace, quota_id)
        return [limit_view(limit) for limit in await quotas.list_limits(session, quota.id)]


@router.post("/organization/{orgname}/quota/{quota_id}/limit", status_code=201,
             summary="Add a Warning or Reject limit at a percentage of the quota")
async def create_org_quota_limit(request: Request, orgname: str, quota_id: str, body: NewLimit,
                                 identity: Identity = Depends(quota_editor)):
    namespace = await _namespace(request, orgname)
    try:
        async with ctx_of(request).db.write() as session:
            quota = await _quota(session, namespace, quota_id)
            limit = await quotas.add_limit(session, quota, body.type, body.threshold_percent)
            kind, percent = limit.kind, limit.percent
    except QuotaError as err:
        raise ApiError(400, str(err)) from None
    except IntegrityError:
        raise ApiError(400, "Quota limit already exists") from None
    _log(request, identity, "org_create_quota_limit", namespace, type=kind, threshold_percent=percent)
    return "Created"


@router.get("/organization/{orgname}/quota/{quota_id}/limit/{limit_id}", summary="One quota limit")
async def get_org_quota_limit(request: Request, orgname: str, quota_id: str, limit_id: str,
                              identity: Identity = Depends(signed_in)):
    namespace = await _readable(request, identity, orgname)
    async with ctx_of(request).db.read() as session:
        return limit_view(await _limit(session, await _quota(session, namespace, quota_id), limit_id))


@router.put("/organization/{orgname}/quota/{quota_id}/limit/{limit_id}", summary="Change a quota limit")
async def change_org_quota_limit(request: Request, orgname: str, quota_id: str, limit_id: str, body: LimitChange,
                                 identity: Identity = Depends(quota_editor)):
    namespace = await _namespace(request, orgname)
    try:
        async with ctx_of(request).db.write() as session:
            quota = await _quota(session, namespace, quota_id)
            limit = await _limit(session, quota, limit_id)
            await quotas.change_limit(session, limit, body.type, body.threshold_percent)
            kind, percent = limit.kind, limit.percent
            view = quota_view(request, quota, await quotas.list_limits(session, quota.id))
    except QuotaError as err:
        raise ApiError(400, str(err)) from None
    except IntegrityError:
        raise ApiError(400, "Quota limit already exists") from None
    _log(request, identity, "org_change_quota_limit", namespace, type=kind, threshold_percent=percent)
    return view


@router.delete("/organization/{orgname}/quota/{quota_id}/limit/{limit_id}", status_code=204,
               summary="Remove a quota limit")
async def delete_org_quota_limit(request: Request, orgname: str, quota_id: str, limit_id: str,
                                 identity: Identity = Depends(quota_editor)):
    namespace = await _namespace(request, orgname)
    async with ctx_of(request).db.write() as session:
        limit = await _limit(session, await _quota(session, namespace, quota_id), limit_id)
        kind, percent = limit.kind, limit.percent
        await quotas.delete_limit(session, limit)
    _log(request, identity, "org_delete_quota_limit", namespace, type=kind, threshold_percent=percent)
    return Response(status_code=204)


# --- /user/quota: the signed-in user's own namespace ------------------------------------------

async def _own_namespace(request: Request, identity: Identity) -> User:
    if identity.kind != "user":
        raise forbidden("only users have a quota of their own")
    return await _namespace(request, identity.username)


@router.get("/user/quota", summary="The signed-in user's quota")
async def list_user_quota(request: Request, identity: Identity = Depends(user_admin)):
    return await _quota_list(request, await _own_namespace(request, identity))


@router.get("/user/quota/{quota_id}", summary="One of the signed-in user's quotas")
async def get_user_quota(request: Request, quota_id: str, identity: Identity = Depends(user_admin)):
    namespace = await _own_namespace(request, identity)
    async with ctx_of(request).db.read() as session:
        quota = await _quota(session, namespace, quota_id)
        return quota_view(request, quota, await quotas.list_limits(session, quota.id))


@router.get("/user/quota/{quota_id}/limit", summary="The limits of the signed-in user's quota")
async def list_user_quota_limits(request: Request, quota_id: str,
                                 identity: Identity = Depends(user_admin)):
    namespace = await _own_namespace(request, identity)
    async with ctx_of(request).db.read() as session:
        quota = await _quota(session, namespace, quota_id)
        return [limit_view(limit) for limit in await quotas.list_limits(session, quota.id)]


@router.get("/user/quota/{quota_id}/limit/{limit_id}", summary="One limit of the signed-in user's quota")
async def get_user_quota_limit(request: Request, quota_id: str, limit_id: str,
                               identity: Identity = Depends(user_admin)):
    namespace = await _own_namespace(request, identity)
    async with ctx_of(request).db.read() as session:
        return limit_view(await _limit(session, await _quota(session, namespace, quota_id), limit_id))


# --- superuser panel: any user's or organization's quota --------------------------------------

def superuser_quota_feature(request: Request) -> None:
    """Quay hides these while FEATURE_SUPER_USERS or FEATURE_EDIT_QUOTA is off."""
    settings = ctx_of(request).settings
    if not (settings.FEATURE_SUPER_USERS and settings.FEATURE_EDIT_QUOTA):
        raise not_found("superuser quota management is disabled")


async def superuser_change(request: Request, identity: Identity = Depends(superuser)) -> Identity:
    require_fresh_login(request, identity)
    return identity


SUPERUSER_FEATURE = [Depends(superuser_quota_feature)]
USERS = "/superuser/users/{namespace}/quota"
ORGS = "/superuser/organization/{namespace}/quota"


@router.get(USERS, summary="A user's quota (superuser)", dependencies=SUPERUSER_FEATURE)
@router.get(ORGS, summary="An organization's quota (superuser)", dependencies=SUPERUSER_FEATURE)
async def superuser_list_quota(request: Request, namespace: str, identity: Identity = Depends(superuser)):
    return await _quota_list(request, await _namespace(request, namespace))


@router.post(USERS, status_code=201, summary="Give a user a quota (superuser)", dependencies=SUPERUSER_FEATURE)
@router.post(ORGS, status_code=201, summary="Give an organization a quota (superuser)",
             dependencies=SUPERUSER_FEATURE)
async def superuser_create_quota(request: Request, namespace: str, body: NewQuota,
                                 identity: Identity = Depends(superuser_change)):
    return await _create(request, identity, await _namespace(request, namespace), body)


@router.put(USERS + "/{quota_id}", summary="Change a user's quota (superuser)", dependencies=SUPERUSER_FEATURE)
@router.put(ORGS + "/{quota_id}", summary="Change an organization's quota (superuser)",
            dependencies=SUPERUSER_FEATURE)
async def superuser_change_quota(request: Request, namespace: str, quota_id: str, body: NewQuota,
                                 identity: Identity = Depends(superuser_change)):
    return await _change(request, identity, await _namespace(request, namespace), quota_id, body)


@router.delete(USERS + "/{quota_id}", status_code=204, summary="Remove a user's quota (superuser)",
               dependencies=SUPERUSER_FEATURE)
@router.delete(ORGS + "/{quota_id}", status_code=204, summary="Remove an organization's quota (superuser)",
               dependencies=SUPERUSER_FEATURE)
async def superuser_delete_quota(request: Request, namespace: str, quota_id: str,
                                 identity: Identity = Depends(superuser_change)):
    return await _delete(request, identity, await _namespace(request, namespace), quota_id)
