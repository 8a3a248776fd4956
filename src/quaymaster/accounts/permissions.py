"""Who may do what: repository roles, namespace rights, and the writes that grant them.

Roles: read < write < admin on a repository. A user's own namespace gives admin on its
repositories; in an organization, a team with role `admin` gives admin on every repository and
`creator` lets members create them; otherwise explicit user/robot/team permissions apply.
Public repositories are readable by everyone. Token scopes cap all of it.
"""

from dataclasses import dataclass

from sqlalchemy import delete, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts.models import (
    PermissionPrototype,
    RepositoryPermission,
    Team,
    TeamMember,
    User,
)
from quaymaster.accounts.service import AccountError, Identity, NotFound

PULL, PUSH, ADMIN, CREATE = "pull", "push", "admin", "create"
ROLE_RANK = {"read": 1, "write": 2, "admin": 3}
ACTION_ROLE = {PULL: "read", PUSH: "write", ADMIN: "admin"}


@dataclass(frozen=True)
class RepoTarget:
    """What authorization needs to know of a repository."""

    repository_id: int | None
    namespace_id: int
    visibility: str = "private"


def _max_role(*roles: str | None) -> str | None:
    found = [r for r in roles if r]
    return max(found, key=ROLE_RANK.__getitem__) if found else None


def _scope_cap(identity: Identity) -> str | None:
    if identity.scopes is None:
        return "admin"
    for scope, role in (("repo:admin", "admin"), ("repo:write", "write"), ("repo:read", "read")):
        if scope in identity.scopes:
            return role
    return None


async def _team_role_in(session: AsyncSession, user_id: int, org_id: int) -> set[str]:
    return set((await session.scalars(
        select(Team.role).join(TeamMember, TeamMember.team_id == Team.id)
        .where(TeamMember.user_id == user_id, Team.organization_id == org_id))).all())


async def repo_role(session: AsyncSession, identity: Identity, target: RepoTarget, *,
                    anonymous_access: bool = True, superuser_full_access: bool = False) -> str | None:
    """The identity's effective role on a repository, or None."""
    public = "read" if target.visibility == "public" and (anonymous_access or not identity.anonymous) else None
    if identity.anonymous or identity.user_id is None:
        return public
    role: str | None = None
    if identity.superuser and superuser_full_access:
        role = "admin"
    elif identity.kind == "user" and identity.user_id == target.namespace_id:
        role = "admin"
    else:
        if "admin" in await _team_role_in(session, identity.user_id, target.namespace_id):
            role = "admin"
        elif target.repository_id is not None:
            direct = select(RepositoryPermission.role).where(
                RepositoryPermission.repository_id == target.repository_id,
                RepositoryPermission.user_id == identity.user_id)
            via_team = (select(RepositoryPermission.role)
                        .join(TeamMember, TeamMember.team_id == RepositoryPermission.team_id)
                        .where(RepositoryPermission.repository_id == target.repository_id,
                               TeamMember.user_id == identity.user_id))
            roles = (await session.scalars(union_all(direct, via_team))).all()
            role = _max_role(*roles)
    cap = _scope_cap(identity)
    if role and cap and ROLE_RANK[role] > ROLE_RANK[cap]:
        role = cap
    if cap is None:
        role = None
    return _max_role(role, public)


async def can(session: AsyncSession, identity: Identity, action: str, target: RepoTarget, **flags) -> bool:
    role = await repo_role(session, identity, target, **flags)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[ACTION_ROLE[action]]


async def can_create_in(session: AsyncSession, identity: Identity, namespace: User) -> bool:
    """May create repositories in this namespace (own user namespace; org admin or creator team)."""
    if identity.anonymous or identity.user_id is None or not identity.has_scope("repo:create"):
        return False
    if namespace.organization:
        roles = await _team_role_in(session, identity.user_id, namespace.id)
        return bool(roles & {"admin", "creator"})
    return identity.kind == "user" and identity.user_id == namespace.id


async def is_org_admin(session: AsyncSession, identity: Identity, org: User) -> bool:
    if identity.anonymous or identity.user_id is None or not identity.has_scope("org:admin"):
        return False
    return "admin" in await _team_role_in(session, identity.user_id, org.id)


async def is_org_member(session: AsyncSession, identity: Identity, org: User) -> bool:
    if identity.anonymous or identity.user_id is None:
        return False
    return bool(await _team_role_in(session, identity.user_id, org.id))


# --- granting ----------------------------------------------------------------------------------

def _check_role(role: str) -> None:
    if role not in ROLE_RANK:
        raise AccountError(f"invalid role {role!r}; use read, write or admin")


async def set_permission(session: AsyncSession, repository_id: int, role: str, *, user: User | None = None,
                         team: Team | None = None) -> RepositoryPermission:
    _check_role(role)
    column = RepositoryPermission.user_id if user is not None else RepositoryPermission.team_id
    subject_id = user.id if user is not None else team.id
    perm = await session.scalar(select(RepositoryPermission).where(
        RepositoryPermission.repository_id == repository_id, column == subject_id))
    if perm is None:
        perm = RepositoryPermission(repository_id=repository_id, role=role,
                                    user_id=user.id if user else None, team_id=team.id if team else None)
        session.add(perm)
    else:
        perm.role = role
    await session.flush()
    return perm


async def delete_permission(session: AsyncSession, repository_id: int, *, user: User | None = None,
                            team: Team | None = None) -> None:
    column = RepositoryPermission.user_id if user is not None else RepositoryPermission.team_id
    subject_id = user.id if user is not None else team.id
    result = await session.execute(delete(RepositoryPermission).where(
        RepositoryPermission.repository_id == repository_id, column == subject_id))
    if result.rowcount == 0:
        raise NotFound("no such permission on this repository")


async def user_permissions(session: AsyncSession, repository_id: int) -> list[tuple[User, str]]:
    rows = (await session.execute(
        select(User, RepositoryPermission.role).join(RepositoryPermission, RepositoryPermission.user_id == User.id)
        .where(RepositoryPermission.repository_id == repository_id).order_by(User.username))).all()
    return [(u, r) for u, r in rows]


async def team_permissions(session: AsyncSession, repository_id: int) -> list[tuple[Team, str]]:
    rows = (await session.execute(
        select(Team, RepositoryPermission.role).join(RepositoryPermission, RepositoryPermission.team_id == Team.id)
        .where(RepositoryPermission.repository_id == repository_id).order_by(Team.name))).all()
    return [(t, r) for t, r in rows]


async def permissions_of_team(session: AsyncSession, team: Team) -> list[tuple[int, str]]:
    """(repository id, role) pairs granted to a team."""
    rows = (await session.execute(select(RepositoryPermission.repository_id, RepositoryPermission.role)
                                  .where(RepositoryPermission.team_id == team.id))).all()
    return [(r, role) for r, role in rows]


async def permissions_of_user(session: AsyncSession, user: User) -> list[tuple[int, str]]:
    rows = (await session.execute(select(RepositoryPermission.repository_id, RepositoryPermission.role)
                                  .where(RepositoryPermission.user_id == user.id))).all()
    return [(r, role) for r, role in rows]


async def apply_prototypes(session: AsyncSession, org: User, repository_id: int, creator_id: int | None) -> None:
    """Grant the organization's default permissions on a newly created repository."""
    protos = (await session.scalars(select(PermissionPrototype).where(PermissionPrototype.org_id == org.id))).all()
    for proto in protos:
        if proto.activating_user_id is not None and proto.activating_user_id != creator_id:
            continue
        if proto.delegate_user_id is not None:
            user = await session.get(User, proto.delegate_user_id)
            if user is not None:
                await set_permission(session, repository_id, proto.role, user=user)
        elif proto.delegate_team_id is not None:
            team = await session.get(Team, proto.delegate_team_id)
            if team is not None:
                await set_permission(session, repository_id, proto.role, team=team)


async def clear_repository(session: AsyncSession, repository_id: int) -> None:
    await session.execute(delete(RepositoryPermission).where(RepositoryPermission.repository_id == repository_id))
