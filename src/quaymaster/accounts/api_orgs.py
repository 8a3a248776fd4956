"""/api/v1 routes for organizations: the org itself, members, collaborators, teams and default
permissions, in Quay's paths and JSON shapes.

Reads of an organization are open (as in Quay, anyone may see its name); everything else needs
org admin rights and, for tokens, the `org:admin` scope. Writes that fail a rule answer 400,
missing things 404, signed-in callers without the right 403.
"""

from typing import Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts import orgs, permissions
from quaymaster.accounts import service as users
from quaymaster.accounts.models import PermissionPrototype, Team, User
from quaymaster.accounts.service import Conflict, Identity
from quaymaster.api.access import org_access
from quaymaster.api.auth import ctx_of, current_identity, require_fresh_login, scoped
from quaymaster.api.errors import ApiError, forbidden, not_found
from quaymaster.api.format import client_ip
from quaymaster.content import quota
from quaymaster.content import service as content
from quaymaster.content.service import RepoRef
from quaymaster.settings.units import parse_duration
from quaymaster.superuser import service as superuser_service

router = APIRouter(tags=["organization"])

org_admin_scope = scoped("org:admin")


class NewOrg(BaseModel):
    name: str
    email: str | None = Field(default=None, max_length=255)


class OrgUpdate(BaseModel):
    email: str | None = Field(default=None, max_length=255)
    tag_expiration_s: int | None = Field(default=None, ge=0)


class TeamUpdate(BaseModel):
    role: Literal["member", "creator", "admin"]
    description: str | None = None


class Delegate(BaseModel):
    kind: Literal["user", "team"]
    name: str


class ActivatingUser(BaseModel):
    name: str


class NewPrototype(BaseModel):
    role: Literal["read", "write", "admin"]
    delegate: Delegate
    activating_user: ActivatingUser | None = None


class PrototypeUpdate(BaseModel):
    role: Literal["read", "write", "admin"]


# --- shared helpers (also used by the robot routes) ---------------------------------------------

def avatar(name: str, kind: str) -> dict:
    return {"name": name, "kind": kind}


def permission_view(repo: RepoRef, role: str) -> dict:
    return {"repository": {"name": repo.name, "is_public": repo.visibility == "public"}, "role": role}


PAGE = 500


async def namespace_repositories(session: AsyncSession, namespace: User) -> dict[int, RepoRef]:
    """Every live repository of a namespace by id, to name the repositories permissions point at.

    Content looks repositories up by name, so this pages through its listing and resolves each:
    fine for the admin views that need it, and the one place to change once content offers a
    lookup by id."""
    found: dict[int, RepoRef] = {}
    last: tuple[str, str] | None = None
    while True:
        page = await content.list_repositories(session, owner_id=namespace.id, include_public=False,
                                               last=last, limit=PAGE)
        for path in page:
            ns, name = path.split("/", 1)
            repo = await content.get_repository(session, ns, name)
            if repo is not None:
                found[repo.id] = repo
        if len(page) < PAGE:
            return found
        ns, name = page[-1].split("/", 1)
        last = (ns, name)


def _log(request: Request, identity: Identity, kind: str, org: User, **metadata) -> None:
    ctx_of(request).audit.record(kind, account_id=org.id, performer_id=identity.user_id, ip=client_ip(request),
                                 metadata={"namespace": org.username, **metadata})


def _taken(err: Conflict) -> ApiError:
    """Quay answers a name or email already in use with a plain 400."""
    return ApiError(400, str(err))


def _raced() -> ApiError:
    """Two requests created the same thing at once; the loser may simply retry."""
    return ApiError(409, "changed by a concurrent request; try again", "conflict")


# --- organizations -----------------------------------------------------------------------------

@router.post("/organization/", status_code=201, summary="Create an organization")
async def create_org(request: Request, body: NewOrg, identity: Identity = Depends(scoped("user:admin"))):
    if identity.kind != "user":
        raise forbidden("only users can create organizations")
    ctx = ctx_of(request)
    try:
        async with ctx.db.write() as session:
            creator = await users.require_user(session, identity.username)
            org = await orgs.create_org(session, body.name, body.email, creator)
    except Conflict as err:
        raise ApiError(400, "A user or organization with this name already exists") from err
    except IntegrityError as err:
        raise ApiError(400, "A user or organization with this name already exists") from err
    _log(request, identity, "org_create", org, email=body.email)
    return "Created"


def _team_view(team: Team, counts: dict[int, tuple[int, int]], can_view: bool) -> dict:
    members, repos = counts.get(team.id, (0, 0))
    return {"name": team.name, "description": team.description, "role": team.role,
            "avatar": avatar(team.name, "team"), "can_view": can_view, "repo_count": repos,
            "member_count": members, "is_synced": False}


async def _org_view(request: Request, identity: Identity, orgname: str) -> dict:
    """Quay's organization view: teams for members, contact and settings for admins."""
    async with ctx_of(request).db.read() as session:
        org = await orgs.get_org(session, orgname)
        if org is None:
            raise not_found(f"organization {orgname} not found")
        is_admin = await permissions.is_org_admin(session, identity, org)
        is_member = await permissions.is_org_member(session, identity, org)
        view = {"name": org.username, "email": (org.email or "") if is_admin else "",
                "avatar": avatar(org.username, "org"), "is_admin": is_admin, "is_member": is_member,
                "can_create_repo": await permissions.can_create_in(session, identity, org)}
        if is_member:
            teams = sorted(await orgs.list_teams(session, org), key=lambda t: t.id)
            counts = await orgs.team_counts(session, org)
            mine = {t.id for t in await orgs.member_teams(session, org, identity.user_id)}
            view["teams"] = {t.name: _team_view(t, counts, is_admin or t.id in mine) for t in teams}
            view["ordered_teams"] = [t.name for t in teams]
        if is_admin:
            view["tag_expiration_s"] = org.removed_tag_expiration_s
            view["is_free_account"] = True
        if is_member or identity.superuser:
            report = await quota.view_report(session, ctx_of(request).settings, org.id)
            if report is not None:
                view["quota_report"] = report
    return view


@router.get("/organization/{orgname}", summary="An organization")
async def get_org(request: Request, orgname: str, identity: Identity = Depends(current_identity)):
    return await _org_view(request, identity, orgname)


@router.put("/organization/{orgname}", summary="Change an organization's email or tag expiration")
async def update_org(request: Request, orgname: str, body: OrgUpdate, identity: Identity = Depends(org_admin_scope)):
    await org_access(request, identity, orgname)
    ctx = ctx_of(request)
    fields = body.model_fields_set
    logs: list[tuple[str, dict]] = []
    try:
        async with ctx.db.write() as session:
            org = await orgs.require_org(session, orgname)
            if "email" in fields and body.email is not None and body.email != org.email:
                old = await orgs.set_org_email(session, org, body.email)
                logs.append(("org_change_email", {"email": body.email, "old_email": old}))
            if ("tag_expiration_s" in fields and body.tag_expiration_s is not None
                    and ctx.settings.FEATURE_CHANGE_TAG_EXPIRATION):
                allowed = [parse_duration(o) for o in ctx.settings.TAG_EXPIRATION_OPTIONS]
                orgs.set_tag_expiration(org, body.tag_expiration_s, allowed)
                logs.append(("org_change_tag_expiration", {"tag_expiration": body.tag_expiration_s}))
    except Conflict as err:
        raise _taken(err) from err
    for kind, metadata in logs:
        _log(request, identity, kind, org, **metadata)
    return await _org_view(request, identity, orgname)


@router.delete("/organization/{orgname}", status_code=204, summary="Delete an organization")
async def delete_org(request: Request, orgname: str, identity: Identity = Depends(org_admin_scope)):
    """Its repositories are deleted by garbage collection, then the organization; the name is
    free at once, as in Quay."""
    org = await org_access(request, identity, orgname)
    require_fresh_login(request, identity)
    ctx = ctx_of(request)
    async with ctx.db.write() as session:
        org = await orgs.require_org(session, orgname)
        await superuser_service.delete_org(session, org)
    _log(request, identity, "org_delete", org, namespace=orgname)
    return Response(status_code=204)


@router.get("/organization/{orgname}/applications", summary="OAuth applications (not supported: always empty)")
async def list_applications(request: Request, orgname: str, identity: Identity = Depends(org_admin_scope)):
    await org_access(request, identity, orgname)
    return {"applications": []}


# --- members and collaborators -----------------------------------------------------------------

def _member_view(user: User, teams: list[str], repositories: list[str]) -> dict:
    return {"name": user.username, "kind": "robot" if user.robot else "user",
            "avatar": avatar(user.username, "robot" if user.robot else "user"),
            "teams": [{"name": t, "avatar": avatar(t, "team")} for t in teams], "repositories": repositories}


async def _direct_repos(session: AsyncSession, org: User) -> dict[int, list[str]]:
    """Per user id, the names of the organization's repositories they hold a direct permission on."""
    repos = await namespace_repositories(session, org)
    out: dict[int, list[str]] = {}
    for user, repo_id, _ in await orgs.direct_permissions(session, repos):
        out.setdefault(user.id, []).append(repos[repo_id].name)
    return out


@router.get("/organization/{orgname}/members", summary="The human members of an organization")
async def list_members(request: Request, orgname: str, identity: Identity = Depends(org_admin_scope)):
    org = await org_access(request, identity, orgname)
    async with ctx_of(request).db.read() as session:
        direct = await _direct_repos(session, org)
        members = await orgs.org_members(session, org)
    # As in Quay, robots are listed with the robots, not here.
    return {"members": [_member_view(user, teams, direct.get(user.id, []))
                        for user, teams in members if not user.robot]}


@router.get("/organization/{orgname}/members/{membername}", summary="One member: teams and repositories")
async def get_member(request: Request, orgname: str, membername: str, identity: Identity = Depends(org_admin_scope)):
    org = await org_access(request, identity, orgname)
    async with ctx_of(request).db.read() as session:
        member = await users.get_namespace(session, membername)
        if member is None or member.organization:
            raise not_found(f"{membername} is not a member of {orgname}")
        teams = [t.name for t in await orgs.member_teams(session, org, member.id)]
        own_robot = member.robot and member.username.startswith(org.username + "+")
        if not teams and not own_robot:
            raise not_found(f"{membername} is not a member of {orgname}")
        direct = await _direct_repos(session, org)
    return _member_view(member, teams, direct.get(member.id, []))


@router.delete("/organization/{orgname}/members/{membername}", status_code=204,
               summary="Remove a user from every team and repository of the organization")
async def remove_member(request: Request, orgname: str, membername: str,
                        identity: Identity = Depends(org_admin_scope)):
    await org_access(request, identity, orgname)
    async with ctx_of(request).db.write() as session:
        org = await orgs.require_org(session, orgname)
        member = await users.get_user(session, membername)
        if member is None:
            raise not_found(f"user {membername} not found")
        left = await orgs.remove_org_member(session, org, member, await namespace_repositories(session, org))
    for team in left:
        _log(request, identity, "org_remove_team_member", org, member=membername, team=team)
    return Response(status_code=204)


@router.get("/organization/{orgname}/collaborators",
            summary="Users with repository permissions in the organization but in none of its teams")
async def list_collaborators(request: Request, orgname: str, identity: Identity = Depends(org_admin_scope)):
    org = await org_access(request, identity, orgname)
    async with ctx_of(request).db.read() as session:
        repos = await namespace_repositories(session, org)
        members = await orgs.member_ids(session, org)
        found: dict[str, dict] = {}
        for user, repo_id, _ in await orgs.direct_permissions(session, repos):
            if user.id in members or user.robot:
                continue
            entry = found.setdefault(user.username, {"kind": "user", "name": user.username,
                                                     "avatar": avatar(user.username, "user"), "repositories": []})
            entry["repositories"].append(repos[repo_id].name)
    return {"collaborators": list(found.values())}


# --- teams -------------------------------------------------------------------------------------

def _team_member_view(user: User) -> dict:
    return {"name": user.username, "kind": "user", "is_robot": user.robot,
            "avatar": avatar(user.username, "robot" if user.robot else "user"), "invited": False}


@router.put("/organization/{orgname}/team/{teamname}", summary="Create a team or change its role and description")
async def put_team(request: Request, orgname: str, teamname: str, body: TeamUpdate,
                   identity: Identity = Depends(org_admin_scope)):
    await org_access(request, identity, orgname)
    try:
        async with ctx_of(request).db.write() as session:
            org = await orgs.require_org(session, orgname)
            existing = await orgs.get_team(session, org, teamname)
            before = (existing.role, existing.description) if existing else None
            team, created = await orgs.upsert_team(session, org, teamname, body.role, body.description)
            view = {"name": team.name, "description": team.description, "can_view": True, "role": team.role,
                    "avatar": avatar(team.name, "team"), "new_team": created}
    except IntegrityError as err:
        raise _raced() from err
    if created:
        _log(request, identity, "org_create_team", org, team=teamname)
    else:
        if body.description is not None and body.description != before[1]:
            _log(request, identity, "org_set_team_description", org, team=teamname, description=body.description)
        if body.role != before[0]:
            _log(request, identity, "org_set_team_role", org, team=teamname, role=body.role)
    return view


@router.delete("/organization/{orgname}/team/{teamname}", status_code=204, summary="Delete a team")
async def delete_team(request: Request, orgname: str, teamname: str, identity: Identity = Depends(org_admin_scope)):
    await org_access(request, identity, orgname)
    async with ctx_of(request).db.write() as session:
        org = await orgs.require_org(session, orgname)
        await orgs.delete_team(session, await orgs.require_team(session, org, teamname))
    _log(request, identity, "org_delete_team", org, team=teamname)
    return Response(status_code=204)


@router.get("/organization/{orgname}/team/{teamname}/members", summary="A team's members")
async def team_members(request: Request, orgname: str, teamname: str, identity: Identity = Depends(org_admin_scope)):
    """Org admins see every team; other members see the teams they are in."""
    org = await org_access(request, identity, orgname, admin=False)
    async with ctx_of(request).db.read() as session:
        is_admin = await permissions.is_org_admin(session, identity, org)
        team = await orgs.require_team(session, org, teamname)
        members = await orgs.team_members(session, team)
    if not is_admin and identity.user_id not in {m.id for m in members}:
        raise forbidden(f"requires admin rights on {orgname} or membership of team {teamname}")
    return {"name": team.name, "members": [_team_member_view(m) for m in members], "can_edit": is_admin}


@router.put("/organization/{orgname}/team/{teamname}/members/{membername}", summary="Add a user or robot to a team")
async def add_team_member(request: Request, orgname: str, teamname: str, membername: str,
                          identity: Identity = Depends(org_admin_scope)):
    await org_access(request, identity, orgname)
    try:
        async with ctx_of(request).db.write() as session:
            org = await orgs.require_org(session, orgname)
            team = await orgs.require_team(session, org, teamname)
            member = await users.get_namespace(session, membername)
            if member is None:
                raise ApiError(400, f"Unknown user {membername!r}")
            added = await orgs.add_team_member(session, org, team, member)
    except IntegrityError as err:
        raise _raced() from err
    if added:
        _log(request, identity, "org_add_team_member", org, member=membername, team=teamname)
    return _team_member_view(member)


@router.delete("/organization/{orgname}/team/{teamname}/members/{membername}", status_code=204,
               summary="Remove a user or robot from a team")
async def remove_team_member(request: Request, orgname: str, teamname: str, membername: str,
                             identity: Identity = Depends(org_admin_scope)):
    await org_access(request, identity, orgname)
    async with ctx_of(request).db.write() as session:
        org = await orgs.require_org(session, orgname)
        team = await orgs.require_team(session, org, teamname)
        member = await users.get_namespace(session, membername)
        if member is None or member.organization:
            raise not_found(f"user {membername} not found")
        await orgs.remove_team_member(session, team, member)
    _log(request, identity, "org_remove_team_member", org, member=membername, team=teamname)
    return Response(status_code=204)


@router.get("/organization/{orgname}/team/{teamname}/permissions", summary="A team's repository permissions")
async def team_permissions(request: Request, orgname: str, teamname: str, identity: Identity = Depends(org_admin_scope)):
    org = await org_access(request, identity, orgname)
    async with ctx_of(request).db.read() as session:
        team = await orgs.require_team(session, org, teamname)
        granted = await permissions.permissions_of_team(session, team)
        repos = await namespace_repositories(session, org) if granted else {}
    return {"permissions": [permission_view(repos[repo_id], role)
                            for repo_id, role in granted if repo_id in repos]}


# --- default permissions (prototypes) ----------------------------------------------------------

def _proto_user_view(user: User, member_ids: set[int]) -> dict:
    return {"name": user.username, "is_robot": user.robot, "kind": "user",
            "is_org_member": user.robot or user.id in member_ids,
            "avatar": avatar(user.username, "robot" if user.robot else "user")}


async def _proto_view(session: AsyncSession, proto: PermissionPrototype, member_ids: set[int]) -> dict:
    parties = await orgs.prototype_parties(session, proto)
    if parties.delegate_user is not None:
        delegate = _proto_user_view(parties.delegate_user, member_ids)
    else:
        delegate = {"name": parties.delegate_team.name, "kind": "team", "avatar": avatar(parties.delegate_team.name, "team")}
    activating = parties.activating_user
    return {"activating_user": _proto_user_view(activating, member_ids) if activating else None,
            "delegate": delegate, "role": proto.role, "id": proto.uuid}


def _proto_log(request: Request, identity: Identity, kind: str, org: User, view: dict, **extra) -> None:
    delegate = view["delegate"]
    metadata = {"prototypeid": view["id"], "username": identity.username, "role": view["role"],
                "activating_username": view["activating_user"]["name"] if view["activating_user"] else None,
                ("delegate_team" if delegate["kind"] == "team" else "delegate_user"): delegate["name"], **extra}
    _log(request, identity, kind, org, **metadata)


@router.get("/organization/{orgname}/prototypes", summary="An organization's default permissions")
async def list_prototypes(request: Request, orgname: str, identity: Identity = Depends(org_admin_scope)):
    org = await org_access(request, identity, orgname)
    async with ctx_of(request).db.read() as session:
        members = await orgs.member_ids(session, org)
        return {"prototypes": [await _proto_view(session, p, members) for p in await orgs.list_prototypes(session, org)]}


@router.post("/organization/{orgname}/prototypes", summary="Add a default permission")
async def create_prototype(request: Request, orgname: str, body: NewPrototype,
                           identity: Identity = Depends(org_admin_scope)):
    await org_access(request, identity, orgname)
    async with ctx_of(request).db.write() as session:
        org = await orgs.require_org(session, orgname)
        activating = None
        if body.activating_user is not None:
            activating = await users.get_user(session, body.activating_user.name)
            if activating is None:
                raise ApiError(400, "Unknown activating user")
        delegate_user = delegate_team = None
        if body.delegate.kind == "user":
            delegate_user = await orgs.prototype_delegate_user(session, org, body.delegate.name)
        else:
            delegate_team = await orgs.get_team(session, org, body.delegate.name)
            if delegate_team is None:
                raise ApiError(400, f"Unknown team {body.delegate.name!r}")
        proto = await orgs.create_prototype(session, org, body.role, delegate_user=delegate_user,
                                            delegate_team=delegate_team, activating_user=activating)
        view = await _proto_view(session, proto, await orgs.member_ids(session, org))
    _proto_log(request, identity, "create_prototype_permission", org, view)
    return view


@router.put("/organization/{orgname}/prototypes/{prototypeid}", summary="Change a default permission's role")
async def update_prototype(request: Request, orgname: str, prototypeid: str, body: PrototypeUpdate,
                           identity: Identity = Depends(org_admin_scope)):
    await org_access(request, identity, orgname)
    async with ctx_of(request).db.write() as session:
        org = await orgs.require_org(session, orgname)
        proto = await orgs.require_prototype(session, org, prototypeid)
        original = orgs.set_prototype_role(proto, body.role)
        view = await _proto_view(session, proto, await orgs.member_ids(session, org))
    _proto_log(request, identity, "modify_prototype_permission", org, view, original_role=original)
    return view


@router.delete("/organization/{orgname}/prototypes/{prototypeid}", status_code=204,
               summary="Remove a default permission")
async def delete_prototype(request: Request, orgname: str, prototypeid: str,
                           identity: Identity = Depends(org_admin_scope)):
    await org_access(request, identity, orgname)
    async with ctx_of(request).db.write() as session:
        org = await orgs.require_org(session, orgname)
        proto = await orgs.require_prototype(session, org, prototypeid)
        view = await _proto_view(session, proto, await orgs.member_ids(session, org))
        await orgs.delete_prototype(session, proto)
    _proto_log(request, identity, "delete_prototype_permission", org, view)
    return Response(status_code=204)
