"""/api/v1 repository permission routes for users, robots and teams (repository admins only).

Grants are written by accounts.permissions; this module checks who may be granted: not the owner
of the namespace (always admin), not an organization, only the namespace's own robots, and teams
only on organization repositories.
"""

from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel

from quaymaster.accounts import orgs, permissions
from quaymaster.accounts import service as accounts
from quaymaster.accounts.models import Team, User
from quaymaster.accounts.service import Identity
from quaymaster.api.access import repo_access
from quaymaster.api.auth import ctx_of, signed_in
from quaymaster.api.errors import ApiError, not_found
from quaymaster.content.api_support import audit
from quaymaster.content.service import RepoRef

router = APIRouter(tags=["permission"])

BASE = "/repository/{namespace}/{name}/permissions"


class RoleBody(BaseModel):
    role: Literal["read", "write", "admin"]


def _user_view(user: User, role: str, org_members: set[int] | None) -> dict:
    view = {"role": role, "name": user.username, "is_robot": user.robot,
            "avatar": {"name": user.username, "kind": "robot" if user.robot else "user"}}
    if org_members is not None:
        view["is_org_member"] = user.id in org_members
    return view


def _team_view(team: Team, role: str) -> dict:
    return {"role": role, "name": team.name, "avatar": {"name": team.name, "kind": "team"}}


async def _admin(request: Request, identity: Identity, namespace: str, name: str) -> tuple[RepoRef, User]:
    """The repository (caller must administer it) and its namespace."""
    repo, _ = await repo_access(request, identity, namespace, name, "admin")
    async with ctx_of(request).db.read() as session:
        owner = await accounts.get_namespace(session, repo.namespace)
    return repo, owner


async def _member_ids(session, owner: User) -> set[int] | None:
    if not owner.organization:
        return None
    return {member.id for member, _ in await orgs.org_members(session, owner)}


async def _grantee(session, repo: RepoRef, username: str) -> User:
    """A user or robot that may hold a permission on the repository (400 otherwise, as in Quay)."""
    if username == repo.namespace:
        raise ApiError(400, "Namespace owner must always be admin.")
    user = await accounts.get_namespace(session, username)
    if user is None or user.organization:
        raise ApiError(400, f"Invalid username: {username}")
    if user.robot and not username.startswith(repo.namespace + "+"):
        raise ApiError(400, f"Cannot add robot {username} under namespace {repo.namespace}")
    return user


async def _team(session, owner: User, teamname: str, *, missing_status: int = 404) -> Team:
    team = await orgs.get_team(session, owner, teamname) if owner.organization else None
    if team is None:
        raise ApiError(missing_status, f"No team {teamname} in organization {owner.username}")
    return team


@router.get(BASE + "/user/", summary="Users and robots with a permission on the repository")
async def list_user_permissions(request: Request, namespace: str, name: str, identity: Identity = Depends(signed_in)):
    repo, owner = await _admin(request, identity, namespace, name)
    async with ctx_of(request).db.read() as session:
        granted = await permissions.user_permissions(session, repo.id)
        members = await _member_ids(session, owner)
    return {"permissions": {u.username: _user_view(u, role, members) for u, role in granted}}


@router.get(BASE + "/team/", summary="Teams with a permission on the repository")
async def list_team_permissions(request: Request, namespace: str, name: str, identity: Identity = Depends(signed_in)):
    repo, _ = await _admin(request, identity, namespace, name)
    async with ctx_of(request).db.read() as session:
        granted = await permissions.team_permissions(session, repo.id)
    return {"permissions": {t.name: _team_view(t, role) for t, role in granted}}


@router.get(BASE + "/user/{username}/transitive", summary="A user's roles, directly and through teams")
async def transitive_permission(request: Request, namespace: str, name: str, username: str,
                                identity: Identity = Depends(signed_in)):
    repo, _ = await _admin(request, identity, namespace, name)
    async with ctx_of(request).db.read() as session:
        user = await accounts.get_namespace(session, username)
        roles = []
        if user is not None:
            roles = [role for u, role in await permissions.user_permissions(session, repo.id) if u.id == user.id]
            for team, role in await permissions.team_permissions(session, repo.id):
                if any(m.id == user.id for m in await orgs.team_members(session, team)):
                    roles.append(role)
    if not roles:
        raise not_found(f"{username} has no permission on {repo.path}")
    return {"permissions": [{"role": role} for role in roles]}


@router.get(BASE + "/user/{username}", summary="A user's direct permission")
async def get_user_permission(request: Request, namespace: str, name: str, username: str,
                              identity: Identity = Depends(signed_in)):
    repo, owner = await _admin(request, identity, namespace, name)
    async with ctx_of(request).db.read() as session:
        found = [(u, role) for u, role in await permissions.user_permissions(session, repo.id) if u.username == username]
        members = await _member_ids(session, owner)
    if not found:
        raise not_found(f"{username} has no permission on {repo.path}")
    return _user_view(found[0][0], found[0][1], members)


@router.put(BASE + "/user/{username}", summary="Grant or change a user's or robot's role")
async def set_user_permission(request: Request, namespace: str, name: str, username: str, body: RoleBody,
                              identity: Identity = Depends(signed_in)):
    repo, owner = await _admin(request, identity, namespace, name)
    async with ctx_of(request).db.write() as session:
        user = await _grantee(session, repo, username)
        had = any(u.id == user.id for u, _ in await permissions.user_permissions(session, repo.id))
        await permissions.set_permission(session, repo.id, body.role, user=user)
        members = await _member_ids(session, owner)
    audit(request, "change_repo_permission" if had else "add_repo_permission", repo, identity,
          username=username, role=body.role)
    return _user_view(user, body.role, members)


@router.delete(BASE + "/user/{username}", status_code=204, summary="Remove a user's direct permission")
async def delete_user_permission(request: Request, namespace: str, name: str, username: str,
                                 identity: Identity = Depends(signed_in)):
    repo, _ = await _admin(request, identity, namespace, name)
    async with ctx_of(request).db.write() as session:
        user = await accounts.get_namespace(session, username)
        if user is None:
            raise not_found(f"{username} has no permission on {repo.path}")
        await permissions.delete_permission(session, repo.id, user=user)
    audit(request, "delete_repo_permission", repo, identity, username=username)
    return Response(status_code=204)


@router.get(BASE + "/team/{teamname}", summary="A team's permission")
async def get_team_permission(request: Request, namespace: str, name: str, teamname: str,
                              identity: Identity = Depends(signed_in)):
    repo, owner = await _admin(request, identity, namespace, name)
    async with ctx_of(request).db.read() as session:
        team = await _team(session, owner, teamname)
        found = [role for t, role in await permissions.team_permissions(session, repo.id) if t.id == team.id]
    if not found:
        raise not_found(f"team {teamname} has no permission on {repo.path}")
    return _team_view(team, found[0])


@router.put(BASE + "/team/{teamname}", summary="Grant or change a team's role (organization repositories)")
async def set_team_permission(request: Request, namespace: str, name: str, teamname: str, body: RoleBody,
                              identity: Identity = Depends(signed_in)):
    repo, owner = await _admin(request, identity, namespace, name)
    async with ctx_of(request).db.write() as session:
        team = await _team(session, owner, teamname, missing_status=400)
        had = any(t.id == team.id for t, _ in await permissions.team_permissions(session, repo.id))
        await permissions.set_permission(session, repo.id, body.role, team=team)
    audit(request, "change_repo_permission" if had else "add_repo_permission", repo, identity,
          team=teamname, role=body.role)
    return _team_view(team, body.role)


@router.delete(BASE + "/team/{teamname}", status_code=204, summary="Remove a team's permission")
async def delete_team_permission(request: Request, namespace: str, name: str, teamname: str,
                                 identity: Identity = Depends(signed_in)):
    repo, owner = await _admin(request, identity, namespace, name)
    async with ctx_of(request).db.write() as session:
        team = await _team(session, owner, teamname)
        await permissions.delete_permission(session, repo.id, team=team)
    audit(request, "delete_repo_permission", repo, identity, team=teamname)
    return Response(status_code=204)
