"""/api/v1 routes for robot accounts, under /user/robots (the signed-in user's) and
/organization/{org}/robots (managed by the organization's admins), in Quay's shapes.

A robot's token is its password for `podman login -u owner+name`, so only whoever manages the
robot ever sees it: the user for their own robots (`user:admin` scope), org admins (`org:admin`)
for an organization's. Organization members may list the robots, without tokens.
"""

from dataclasses import dataclass

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from quaymaster.accounts import permissions, robots
from quaymaster.accounts import service as users
from quaymaster.accounts.api_orgs import avatar, namespace_repositories, permission_view
from quaymaster.accounts.models import RobotAccountToken, User
from quaymaster.accounts.service import Conflict, Identity
from quaymaster.api.access import org_access
from quaymaster.api.auth import ctx_of, scoped
from quaymaster.api.errors import ApiError, forbidden
from quaymaster.api.format import client_ip, quay_time

router = APIRouter(tags=["robot"])

user_admin_scope = scoped("user:admin")
org_admin_scope = scoped("org:admin")
MAX_LIMIT = 100_000  # keeps ?limit= inside a database integer


class RobotDetails(BaseModel):
    description: str | None = Field(default=None, max_length=255)
    unstructured_metadata: dict | None = None


@dataclass(frozen=True)
class Owner:
    """The namespace whose robots a request manages, and whether the caller may see tokens."""

    namespace: User
    manager: bool


async def _user_owner(request: Request, identity: Identity) -> Owner:
    if identity.kind != "user":
        raise forbidden("only users have robot accounts")
    async with ctx_of(request).db.read() as session:
        return Owner(await users.require_user(session, identity.username), manager=True)


async def _org_owner(request: Request, identity: Identity, orgname: str, *, admin: bool = True) -> Owner:
    org = await org_access(request, identity, orgname, admin=admin)
    if admin:
        return Owner(org, manager=True)
    async with ctx_of(request).db.read() as session:
        return Owner(org, manager=await permissions.is_org_admin(session, identity, org))


def _robot_view(robot: User, row: RobotAccountToken, *, token: str | None = None, metadata: bool = True,
                teams: list[str] | None = None, repositories: list[str] | None = None) -> dict:
    view = {"name": robot.username, "created": quay_time(robot.creation_date), "last_accessed": None,
            "description": row.description}
    if metadata:
        view["unstructured_metadata"] = row.unstructured_json or {}
    if token is not None:
        view["token"] = token
    if teams is not None:
        view["teams"] = [{"name": t, "avatar": avatar(t, "team")} for t in teams]
        view["repositories"] = repositories or []
    return view


def _log(request: Request, identity: Identity, kind: str, owner: User, shortname: str, **extra) -> None:
    ctx_of(request).audit.record(kind, account_id=owner.id, performer_id=identity.user_id, ip=client_ip(request),
                                 metadata={"robot": shortname, **extra})


# --- the operations, shared by the user and organization routes --------------------------------

async def _list(request: Request, owner: Owner, with_permissions: bool, with_token: bool, limit: int | None) -> dict:
    ctx = ctx_of(request)
    async with ctx.db.read() as session:
        found = await robots.list_robots(session, owner.namespace, limit)
        ids = [robot.id for robot, _ in found]
        show_permissions = with_permissions and owner.manager
        teams = await robots.teams_of_robots(session, ids) if show_permissions else {}
        grants = await robots.permissions_of_robots(session, ids) if show_permissions else {}
        repos = await namespace_repositories(session, owner.namespace) if any(grants.values()) else {}
    out = []
    for robot, row in found:
        token = robots.reveal_token(ctx.cipher, row) if with_token and owner.manager else None
        names = [repos[r].name for r, _ in grants.get(robot.id, []) if r in repos] if show_permissions else None
        out.append(_robot_view(robot, row, token=token, teams=teams.get(robot.id) if show_permissions else None,
                               repositories=names))
    return {"robots": out}


async def _get(request: Request, owner: Owner, shortname: str) -> dict:
    ctx = ctx_of(request)
    async with ctx.db.read() as session:
        robot = await robots.require_robot(session, owner.namespace, shortname)
        row = await robots.robot_token_row(session, robot)
    return _robot_view(robot, row, token=robots.reveal_token(ctx.cipher, row))


async def _create(request: Request, identity: Identity, owner: Owner, shortname: str,
                  details: RobotDetails | None) -> dict:
    ctx = ctx_of(request)
    details = details or RobotDetails()
    try:
        async with ctx.db.write() as session:
            robot, token = await robots.create_robot(session, ctx.cipher, owner.namespace, shortname,
                                                     details.description or "", details.unstructured_metadata)
            row = await robots.robot_token_row(session, robot)
    except (Conflict, IntegrityError) as err:  # IntegrityError: created concurrently
        raise ApiError(400, f"Existing robot with name: {owner.namespace.username}+{shortname}") from err
    _log(request, identity, "create_robot", owner.namespace, shortname, description=details.description,
         unstructured_metadata=details.unstructured_metadata)
    return _robot_view(robot, row, token=token)


async def _delete(request: Request, identity: Identity, owner: Owner, shortname: str) -> Response:
    async with ctx_of(request).db.write() as session:
        await robots.delete_robot(session, await robots.require_robot(session, owner.namespace, shortname))
    _log(request, identity, "delete_robot", owner.namespace, shortname)
    return Response(status_code=204)


async def _regenerate(request: Request, identity: Identity, owner: Owner, shortname: str) -> dict:
    ctx = ctx_of(request)
    async with ctx.db.write() as session:
        robot = await robots.require_robot(session, owner.namespace, shortname)
        token = await robots.regenerate_token(session, ctx.cipher, robot)
        row = await robots.robot_token_row(session, robot)
    _log(request, identity, "regenerate_robot_token", owner.namespace, shortname)
    return _robot_view(robot, row, token=token, metadata=False)


async def _permissions(request: Request, owner: Owner, shortname: str) -> dict:
    async with ctx_of(request).db.read() as session:
        robot = await robots.require_robot(session, owner.namespace, shortname)
        granted = await permissions.permissions_of_user(session, robot)
        repos = await namespace_repositories(session, owner.namespace) if granted else {}
    return {"permissions": [permission_view(repos[r], role) for r, role in granted if r in repos]}


# --- /user/robots ------------------------------------------------------------------------------

@router.get("/user/robots", summary="Your robot accounts")
async def list_user_robots(request: Request, with_permissions: bool = Query(default=False, alias="permissions"),
                           with_token: bool = Query(default=True, alias="token"),
                           limit: int | None = Query(default=None, ge=1, le=MAX_LIMIT),
                           identity: Identity = Depends(user_admin_scope)):
    return await _list(request, await _user_owner(request, identity), with_permissions, with_token, limit)


@router.get("/user/robots/{shortname}", summary="One of your robots, with its token")
async def get_user_robot(request: Request, shortname: str, identity: Identity = Depends(user_admin_scope)):
    return await _get(request, await _user_owner(request, identity), shortname)


@router.put("/user/robots/{shortname}", status_code=201, summary="Create a robot account")
async def create_user_robot(request: Request, shortname: str, body: RobotDetails | None = Body(default=None),
                            identity: Identity = Depends(user_admin_scope)):
    return await _create(request, identity, await _user_owner(request, identity), shortname, body)


@router.delete("/user/robots/{shortname}", status_code=204, summary="Delete a robot account")
async def delete_user_robot(request: Request, shortname: str, identity: Identity = Depends(user_admin_scope)):
    return await _delete(request, identity, await _user_owner(request, identity), shortname)


@router.post("/user/robots/{shortname}/regenerate", summary="Replace a robot's token")
async def regenerate_user_robot(request: Request, shortname: str, identity: Identity = Depends(user_admin_scope)):
    return await _regenerate(request, identity, await _user_owner(request, identity), shortname)


@router.get("/user/robots/{shortname}/permissions", summary="A robot's repository permissions")
async def user_robot_permissions(request: Request, shortname: str, identity: Identity = Depends(user_admin_scope)):
    return await _permissions(request, await _user_owner(request, identity), shortname)


# --- /organization/{org}/robots ----------------------------------------------------------------

@router.get("/organization/{orgname}/robots", summary="An organization's robots (tokens for admins only)")
async def list_org_robots(request: Request, orgname: str, with_permissions: bool = Query(default=False, alias="permissions"),
                           with_token: bool = Query(default=True, alias="token"),
                          limit: int | None = Query(default=None, ge=1, le=MAX_LIMIT),
                          identity: Identity = Depends(org_admin_scope)):
    owner = await _org_owner(request, identity, orgname, admin=False)
    return await _list(request, owner, with_permissions, with_token, limit)


@router.get("/organization/{orgname}/robots/{shortname}", summary="One organization robot, with its token")
async def get_org_robot(request: Request, orgname: str, shortname: str, identity: Identity = Depends(org_admin_scope)):
    return await _get(request, await _org_owner(request, identity, orgname), shortname)


@router.put("/organization/{orgname}/robots/{shortname}", status_code=201, summary="Create an organization robot")
async def create_org_robot(request: Request, orgname: str, shortname: str,
                           body: RobotDetails | None = Body(default=None),
                           identity: Identity = Depends(org_admin_scope)):
    return await _create(request, identity, await _org_owner(request, identity, orgname), shortname, body)


@router.delete("/organization/{orgname}/robots/{shortname}", status_code=204, summary="Delete an organization robot")
async def delete_org_robot(request: Request, orgname: str, shortname: str, identity: Identity = Depends(org_admin_scope)):
    return await _delete(request, identity, await _org_owner(request, identity, orgname), shortname)


@router.post("/organization/{orgname}/robots/{shortname}/regenerate", summary="Replace an organization robot's token")
async def regenerate_org_robot(request: Request, orgname: str, shortname: str,
                               identity: Identity = Depends(org_admin_scope)):
    return await _regenerate(request, identity, await _org_owner(request, identity, orgname), shortname)


@router.get("/organization/{orgname}/robots/{shortname}/permissions", summary="An organization robot's permissions")
async def org_robot_permissions(request: Request, orgname: str, shortname: str,
                                identity: Identity = Depends(org_admin_scope)):
    return await _permissions(request, await _org_owner(request, identity, orgname), shortname)
