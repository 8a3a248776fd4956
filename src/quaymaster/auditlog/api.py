"""/api/v1 usage logs: per repository, organization and user, and registry-wide for superusers.

Entries are buffered before they reach the database, so every read flushes first: a user sees
the action they just took."""

from datetime import datetime, time, timedelta

from fastapi import APIRouter, Depends, Query, Request
from itsdangerous import BadSignature, URLSafeSerializer

from quaymaster.accounts import orgs
from quaymaster.accounts.service import Identity
from quaymaster.api.access import org_access, repo_access
from quaymaster.api.auth import ctx_of, scoped, superuser
from quaymaster.api.errors import ApiError, not_found
from quaymaster.api.format import quay_time
from quaymaster.auditlog import service as auditlog
from quaymaster.auditlog.service import LogFilter, LogView
from quaymaster.db.base import utcnow
from quaymaster.superuser.api import FEATURE

router = APIRouter(tags=["logs"])

DATE_FORMAT = "%m/%d/%Y"
MAX_AGGREGATE_RANGE = timedelta(days=31)


def _parse_day(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, DATE_FORMAT)
    except ValueError:
        raise ApiError(400, f"{name}: expected a date as MM/DD/YYYY (UTC), got {value!r}") from None


def time_range(starttime: str | None, endtime: str | None) -> tuple[datetime, datetime]:
    """Quay's window: from `starttime` (default a day ago) to the end of `endtime` (default today)."""
    now = utcnow()
    try:
        start = _parse_day(starttime, "starttime") or now - timedelta(days=1)
        end = (_parse_day(endtime, "endtime") or now) + timedelta(days=1)
    except OverflowError:
        raise ApiError(400, "endtime is out of range") from None
    if end < start:
        raise ApiError(400, "endtime is before starttime")
    return start, end


class LogQuery:
    """The query parameters every /logs route takes."""

    def __init__(self, request: Request, starttime: str | None = Query(None), endtime: str | None = Query(None),
                 performer: str | None = Query(None), next_page: str | None = Query(None)):
        self.start, self.end = time_range(starttime, endtime)
        self.performer = performer or None
        self.after = _read_page_token(request, next_page)


def _serializer(request: Request) -> URLSafeSerializer:
    return URLSafeSerializer(ctx_of(request).settings.SECRET_KEY, salt="quaymaster.logs.next_page")


def _read_page_token(request: Request, token: str | None) -> tuple[datetime, int] | None:
    if not token:
        return None
    try:
        stamp, entry_id = _serializer(request).loads(token)
        return datetime.fromisoformat(stamp), int(entry_id)
    except (BadSignature, ValueError, TypeError):
        raise ApiError(400, "next_page: not a page token this registry issued") from None


def avatar(name: str, kind: str) -> dict:
    return {"name": name, "kind": kind}


def log_view(entry: LogView) -> dict:
    """Quay's JSON for one entry; performer and namespace only when they are known."""
    view = {"kind": entry.kind, "metadata": entry.metadata, "ip": entry.ip, "datetime": quay_time(entry.datetime)}
    if entry.performer_name:
        view["performer"] = {"kind": "user", "name": entry.performer_name, "is_robot": entry.performer_robot,
                             "avatar": avatar(entry.performer_name, "user")}
    if entry.account_name:
        kind = "org" if entry.account_is_org else "user"
        view["namespace"] = {"kind": kind, "name": entry.account_name, "avatar": avatar(entry.account_name, kind)}
    return view


async def logs_page(request: Request, q: LogQuery, **scope) -> dict:
    """One page of logs for the given scope (account_id, repository_id, exclude_kinds)."""
    ctx = ctx_of(request)
    await ctx.audit.flush()
    flt = LogFilter(start=q.start, end=q.end, performer=q.performer, **scope)
    async with ctx.db.read() as session:
        entries, after = await auditlog.lookup_logs(session, flt, after=q.after)
    body = {"start_time": quay_time(q.start), "end_time": quay_time(q.end), "logs": [log_view(e) for e in entries]}
    if after is not None:
        body["next_page"] = _serializer(request).dumps([after[0].isoformat(), after[1]])
    return body


async def aggregated(request: Request, q: LogQuery, **scope) -> dict:
    """Counts per kind and day for the given scope."""
    if q.end - q.start > MAX_AGGREGATE_RANGE:
        raise ApiError(400, "Invalid date range for logs: aggregates cover at most a month")
    ctx = ctx_of(request)
    await ctx.audit.flush()
    flt = LogFilter(start=q.start, end=q.end, performer=q.performer, **scope)
    async with ctx.db.read() as session:
        counts = await auditlog.aggregate_logs(session, flt)
    return {"aggregated": [{"kind": kind, "count": count, "datetime": quay_time(datetime.combine(day, time()))}
                           for kind, day, count in counts]}


# --- repository ----------------------------------------------------------------------------------

RepoAdmin = Depends(scoped("repo:admin"))
OrgAdmin = Depends(scoped("org:admin"))
UserAdmin = Depends(scoped("user:admin"))
Query_ = Depends(LogQuery)


async def _repo_id(request: Request, identity: Identity, namespace: str, name: str) -> int:
    repo, _ = await repo_access(request, identity, namespace, name, need="admin")
    return repo.id


@router.get("/repository/{namespace}/{name}/logs", summary="Usage logs of a repository (repository admins)")
async def repository_logs(request: Request, namespace: str, name: str, identity: Identity = RepoAdmin,
                          q: LogQuery = Query_):
    return await logs_page(request, q, repository_id=await _repo_id(request, identity, namespace, name))


@router.get("/repository/{namespace}/{name}/aggregatelogs", summary="Log counts per kind and day for a repository")
async def repository_aggregate_logs(request: Request, namespace: str, name: str, identity: Identity = RepoAdmin,
                                    q: LogQuery = Query_):
    return await aggregated(request, q, repository_id=await _repo_id(request, identity, namespace, name))


# --- organization --------------------------------------------------------------------------------

async def _org_id(request: Request, identity: Identity, orgname: str) -> int:
    """Org admins; superusers too when FEATURE_SUPERUSERS_FULL_ACCESS is on."""
    ctx = ctx_of(request)
    if identity.superuser and ctx.settings.FEATURE_SUPERUSERS_FULL_ACCESS:
        async with ctx.db.read() as session:
            org = await orgs.get_org(session, orgname)
        if org is None:
            raise not_found(f"organization {orgname} not found")
        return org.id
    return (await org_access(request, identity, orgname, admin=True)).id


@router.get("/organization/{orgname}/logs", summary="Usage logs of an organization (its admins)")
async def organization_logs(request: Request, orgname: str, identity: Identity = OrgAdmin, q: LogQuery = Query_):
    return await logs_page(request, q, account_id=await _org_id(request, identity, orgname))


@router.get("/organization/{orgname}/aggregatelogs", summary="Log counts per kind and day for an organization")
async def organization_aggregate_logs(request: Request, orgname: str, identity: Identity = OrgAdmin,
                                      q: LogQuery = Query_):
    return await aggregated(request, q, account_id=await _org_id(request, identity, orgname))


# --- the signed-in user --------------------------------------------------------------------------

def _own_account(identity: Identity) -> dict:
    if identity.kind != "user":
        raise ApiError(403, "only users have a usage log", "insufficient_scope")
    return {"account_id": identity.user_id, "exclude_kinds": auditlog.SERVICE_LEVEL_KINDS}


@router.get("/user/logs", summary="Usage logs of your own account")
async def user_logs(request: Request, identity: Identity = UserAdmin, q: LogQuery = Query_):
    return await logs_page(request, q, **_own_account(identity))


@router.get("/user/aggregatelogs", summary="Log counts per kind and day for your own account")
async def user_aggregate_logs(request: Request, identity: Identity = UserAdmin, q: LogQuery = Query_):
    return await aggregated(request, q, **_own_account(identity))


# --- the whole registry (superusers) -------------------------------------------------------------

@router.get("/superuser/logs", summary="Every usage log of the registry (superusers)",
            dependencies=FEATURE)
async def superuser_logs(request: Request, identity: Identity = Depends(superuser), q: LogQuery = Query_):
    return await logs_page(request, q)


@router.get("/superuser/aggregatelogs", summary="Log counts per kind and day for the whole registry",
            dependencies=FEATURE)
async def superuser_aggregate_logs(request: Request, identity: Identity = Depends(superuser), q: LogQuery = Query_):
    return await aggregated(request, q)
