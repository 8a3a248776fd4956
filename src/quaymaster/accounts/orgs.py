"""Organizations, their teams and members, and default permissions (prototypes)."""

import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import case, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts import robots
from quaymaster.accounts import service as accounts
from quaymaster.accounts.models import (
    PermissionPrototype,
    RepositoryPermission,
    Team,
    TeamMember,
    User,
)
from quaymaster.accounts.service import (
    EMAIL_RE,
    AccountError,
    Conflict,
    NotFound,
    get_namespace,
    set_email,
    validate_username,
)

TEAM_ROLES = ("admin", "creator", "member")
REPO_ROLES = ("read", "write", "admin")
OWNERS_TEAM = "owners"


async def create_org(session: AsyncSession, name: str, email: str | None, creator: User) -> User:
    """A new organization with an `owners` team (role admin) holding its creator, as in Quay."""
    validate_username(name)
    if await get_namespace(session, name) is not None:
        raise Conflict(f"the name {name!r} is already taken")
    if email is not None and email != "" and not EMAIL_RE.match(email):
        raise AccountError(f"invalid email address {email!r}")
    org = User(uuid=str(uuidlib.uuid4()), username=name, email=email or None, organization=True,
               removed_tag_expiration_s=accounts.DEFAULT_TAG_EXPIRATION_S)
    session.add(org)
    await session.flush()
    owners = Team(name=OWNERS_TEAM, organization_id=org.id, role="admin", description="")
    session.add(owners)
    await session.flush()
    session.add(TeamMember(user_id=creator.id, team_id=owners.id))
    return org


async def get_org(session: AsyncSession, name: str) -> User | None:
    return await session.scalar(select(User).where(User.username == name, User.organization.is_(True)))


async def require_org(session: AsyncSession, name: str) -> User:
    org = await get_org(session, name)
    if org is None:
        raise NotFound(f"organization {name!r} does not exist")
    return org


async def list_orgs(session: AsyncSession) -> list[User]:
    return list((await session.scalars(
        select(User).where(User.organization.is_(True)).order_by(User.username))).all())


async def orgs_of(session: AsyncSession, user_id: int) -> list[tuple[User, bool]]:
    """Organizations the user belongs to, with whether they administer it."""
    rows = (await session.execute(
        select(User, func.max(case((Team.role == "admin", 1), else_=0)))
        .join(Team, Team.organization_id == User.id)
        .join(TeamMember, TeamMember.team_id == Team.id)
        .where(TeamMember.user_id == user_id)
        .group_by(User.id).order_by(User.username))).all()
    return [(org, bool(admin)) for org, admin in rows]


async def delete_org(session: AsyncSession, org: User) -> None:
    """Remove the organization with its teams, robots and default permissions.

    Its repositories must be gone first (content owns them); the namespace row's foreign keys
    make the database refuse otherwise."""
    from quaymaster.content import quota

    await clear_org(session, org)
    await quota.forget_namespace(session, org.id)
    await session.delete(org)


async def clear_org(session: AsyncSession, org: User) -> None:
    """Remove the organization's robots, teams and default permissions, keeping its row."""
    for robot, _ in await robots.list_robots(session, org):
        await robots.delete_robot(session, robot)
    teams = select(Team.id).where(Team.organization_id == org.id)
    await session.execute(delete(TeamMember).where(TeamMember.team_id.in_(teams)))
    await session.execute(delete(RepositoryPermission).where(RepositoryPermission.team_id.in_(teams)))
    await session.execute(delete(PermissionPrototype).where(PermissionPrototype.org_id == org.id))
    await session.execute(delete(Team).where(Team.organization_id == org.id))


async def set_org_email(session: AsyncSession, org: User, email: str) -> str | None:
    """Change the contact email (unique among accounts, as in Quay); returns the old one."""
    old = org.email
    if email != old:
        await set_email(session, org, email)
    return old


def set_tag_expiration(org: User, seconds: int, allowed: list[int]) -> None:
    """The time-machine window must be one the administrator offered (TAG_EXPIRATION_OPTIONS)."""
    if seconds not in allowed:
        choices = ", ".join(str(s) for s in sorted(allowed))
        raise AccountError(f"tag_expiration_s must be one of {choices}")
    org.removed_tag_expiration_s = seconds


# --- teams -------------------------------------------------------------------------------------

async def get_team(session: AsyncSession, org: User, name: str) -> Team | None:
    return await session.scalar(select(Team).where(Team.organization_id == org.id, Team.name == name))


async def require_team(session: AsyncSession, org: User, name: str) -> Team:
    team = await get_team(session, org, name)
    if team is None:
        raise NotFound(f"team {name!r} does not exist in {org.username}")
    return team


async def list_teams(session: AsyncSession, org: User) -> list[Team]:
    return list((await session.scalars(
        select(Team).where(Team.organization_id == org.id).order_by(Team.name))).all())


async def upsert_team(session: AsyncSession, org: User, name: str, role: str,
                      description: str | None = None) -> tuple[Team, bool]:
    """Create or update a team; returns (team, created)."""
    if role not in TEAM_ROLES:
        raise AccountError(f"invalid team role {role!r}; use one of {', '.join(TEAM_ROLES)}")
    validate_username(name)
    team = await get_team(session, org, name)
    created = team is None
    if created:
        team = Team(name=name, organization_id=org.id, role=role, description=description or "")
        session.add(team)
        await session.flush()
        return team, True
    if team.name == OWNERS_TEAM and role != "admin":
        raise AccountError("the owners team must keep the admin role")
    team.role = role
    if description is not None:
        team.description = description
    return team, created


async def delete_team(session: AsyncSession, team: Team) -> None:
    if team.name == OWNERS_TEAM:
        raise AccountError("the owners team cannot be deleted")
    await session.execute(delete(TeamMember).where(TeamMember.team_id == team.id))
    await session.execute(delete(RepositoryPermission).where(RepositoryPermission.team_id == team.id))
    await session.execute(delete(PermissionPrototype).where(PermissionPrototype.delegate_team_id == team.id))
    await session.delete(team)


async def team_members(session: AsyncSession, team: Team) -> list[User]:
    return list((await session.scalars(
        select(User).join(TeamMember, TeamMember.user_id == User.id)
        .where(TeamMember.team_id == team.id).order_by(User.username))).all())


async def add_team_member(session: AsyncSession, org: User, team: Team, member: User) -> bool:
    """Add a user or one of the organization's robots; False if already there."""
    if member.organization:
        raise AccountError("an organization cannot be a team member")
    if member.robot and not member.username.startswith(org.username + "+"):
        raise AccountError("only the organization's own robots can join its teams")
    exists = await session.scalar(select(TeamMember.id).where(
        TeamMember.team_id == team.id, TeamMember.user_id == member.id))
    if exists:
        return False
    session.add(TeamMember(user_id=member.id, team_id=team.id))
    return True


async def remove_team_member(session: AsyncSession, team: Team, member: User) -> None:
    if team.name == OWNERS_TEAM:
        remaining = await session.scalar(select(func.count()).select_from(TeamMember).where(
            TeamMember.team_id == team.id, TeamMember.user_id != member.id))
        if not remaining:
            raise AccountError("an organization must keep at least one owner")
    result = await session.execute(delete(TeamMember).where(
        TeamMember.team_id == team.id, TeamMember.user_id == member.id))
    if result.rowcount == 0:
        raise NotFound(f"{member.username} is not a member of team {team.name}")


async def org_members(session: AsyncSession, org: User) -> list[tuple[User, list[str]]]:
    """Every member of any team, with the names of their teams."""
    rows = (await session.execute(
        select(User, Team.name).join(TeamMember, TeamMember.user_id == User.id)
        .join(Team, Team.id == TeamMember.team_id)
        .where(Team.organization_id == org.id).order_by(User.username, Team.name))).all()
    members: dict[int, tuple[User, list[str]]] = {}
    for user, team in rows:
        members.setdefault(user.id, (user, []))[1].append(team)
    return list(members.values())


async def remove_org_member(session: AsyncSession, org: User, member: User,
                            repository_ids: Iterable[int] = ()) -> list[str]:
    """Take the member out of every team and drop their direct permissions on `repository_ids`
    (the organization's repositories, which content knows); returns the teams left."""
    left = []
    for team in await member_teams(session, org, member.id):
        await remove_team_member(session, team, member)
        left.append(team.name)
    ids = list(repository_ids)
    if ids:
        await session.execute(delete(RepositoryPermission).where(
            RepositoryPermission.user_id == member.id, RepositoryPermission.repository_id.in_(ids)))
    return left


async def member_teams(session: AsyncSession, org: User, member_id: int) -> list[Team]:
    """The organization's teams the user or robot belongs to."""
    return list((await session.scalars(
        select(Team).join(TeamMember, TeamMember.team_id == Team.id)
        .where(Team.organization_id == org.id, TeamMember.user_id == member_id)
        .order_by(Team.name))).all())


async def team_counts(session: AsyncSession, org: User) -> dict[int, tuple[int, int]]:
    """Per team id: (members, repositories it has a permission on), for the team listing."""
    members = dict((await session.execute(
        select(Team.id, func.count(TeamMember.id)).join(TeamMember, TeamMember.team_id == Team.id)
        .where(Team.organization_id == org.id).group_by(Team.id))).all())
    repos = dict((await session.execute(
        select(Team.id, func.count(RepositoryPermission.id))
        .join(RepositoryPermission, RepositoryPermission.team_id == Team.id)
        .where(Team.organization_id == org.id).group_by(Team.id))).all())
    return {tid: (members.get(tid, 0), repos.get(tid, 0)) for tid in set(members) | set(repos)}


async def member_ids(session: AsyncSession, org: User) -> set[int]:
    """Ids of every user or robot in any of the organization's teams."""
    return set((await session.scalars(
        select(TeamMember.user_id).join(Team, Team.id == TeamMember.team_id)
        .where(Team.organization_id == org.id))).all())


async def direct_permissions(session: AsyncSession,
                             repository_ids: Iterable[int]) -> list[tuple[User, int, str]]:
    """(user or robot, repository id, role) for every per-user permission on these repositories."""
    ids = list(repository_ids)
    if not ids:
        return []
    rows = (await session.execute(
        select(User, RepositoryPermission.repository_id, RepositoryPermission.role)
        .join(RepositoryPermission, RepositoryPermission.user_id == User.id)
        .where(RepositoryPermission.repository_id.in_(ids))
        .order_by(User.username, RepositoryPermission.repository_id))).all()
    return [(user, repo_id, role) for user, repo_id, role in rows]


# --- default permissions (prototypes) ----------------------------------------------------------

async def list_prototypes(session: AsyncSession, org: User) -> list[PermissionPrototype]:
    return list((await session.scalars(
        select(PermissionPrototype).where(PermissionPrototype.org_id == org.id)
        .order_by(PermissionPrototype.id))).all())


async def create_prototype(session: AsyncSession, org: User, role: str, *, delegate_user: User | None = None,
                           delegate_team: Team | None = None,
                           activating_user: User | None = None) -> PermissionPrototype:
    if role not in REPO_ROLES:
        raise AccountError(f"invalid role {role!r}; use one of {', '.join(REPO_ROLES)}")
    if (delegate_user is None) == (delegate_team is None):
        raise AccountError("a default permission needs exactly one delegate: a user, robot or team")
    proto = PermissionPrototype(
        uuid=str(uuidlib.uuid4()), org_id=org.id, role=role,
        delegate_user_id=delegate_user.id if delegate_user else None,
        delegate_team_id=delegate_team.id if delegate_team else None,
        activating_user_id=activating_user.id if activating_user else None)
    session.add(proto)
    await session.flush()
    return proto


async def require_prototype(session: AsyncSession, org: User, proto_uuid: str) -> PermissionPrototype:
    proto = await session.scalar(select(PermissionPrototype).where(
        PermissionPrototype.org_id == org.id, PermissionPrototype.uuid == proto_uuid))
    if proto is None:
        raise NotFound("default permission does not exist")
    return proto


async def delete_prototype(session: AsyncSession, proto: PermissionPrototype) -> None:
    await session.delete(proto)


def set_prototype_role(proto: PermissionPrototype, role: str) -> str:
    """Change the role a default permission grants; returns the previous role."""
    if role not in REPO_ROLES:
        raise AccountError(f"invalid role {role!r}; use one of {', '.join(REPO_ROLES)}")
    old, proto.role = proto.role, role
    return old


@dataclass(frozen=True)
class PrototypeParties:
    """Who a default permission names: the repository creator it waits for and who it grants."""

    activating_user: User | None
    delegate_user: User | None
    delegate_team: Team | None


async def prototype_parties(session: AsyncSession, proto: PermissionPrototype) -> PrototypeParties:
    async def user(user_id: int | None) -> User | None:
        return await session.get(User, user_id) if user_id is not None else None

    team = await session.get(Team, proto.delegate_team_id) if proto.delegate_team_id is not None else None
    return PrototypeParties(await user(proto.activating_user_id), await user(proto.delegate_user_id), team)


async def prototype_delegate_user(session: AsyncSession, org: User, name: str) -> User:
    """A user, or one of this organization's robots, that a default permission may grant to."""
    found = await get_namespace(session, name)
    if found is None or found.organization or (
            found.robot and not found.username.startswith(org.username + "+")):
        raise AccountError(f"unknown user {name!r}")
    return found
