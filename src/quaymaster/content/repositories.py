"""Repository settings, deletion and listing for the REST API (creation lives in content.service).

Listing decides visibility in SQL, with the same rules as accounts.permissions.repo_role, so a
page never holds a repository the caller may not read.
"""

import uuid as uuidlib
from dataclasses import dataclass

from sqlalchemy import false, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts import permissions
from quaymaster.accounts.models import (
    RepositoryPermission,
    Star,
    Team,
    TeamMember,
    User,
)
from quaymaster.content import stars
from quaymaster.content.models import Repository, RepositoryState, Tag


@dataclass(frozen=True)
class RepoSummary:
    id: int
    namespace: str
    name: str
    description: str | None
    visibility: str
    kind: str
    state: int


@dataclass(frozen=True)
class Viewer:
    """Who lists repositories: a user or robot id (None for anonymous) and what it may see."""

    user_id: int | None
    is_user: bool = True
    sees_everything: bool = False


async def details(session: AsyncSession, repo_id: int) -> tuple[Repository, User]:
    """The repository row with its namespace (user or organization)."""
    row = (await session.execute(select(Repository, User).join(User, User.id == Repository.namespace_user_id)
                                 .where(Repository.id == repo_id))).one()
    return row[0], row[1]


async def set_description(session: AsyncSession, repo_id: int, description: str) -> None:
    await session.execute(update(Repository).where(Repository.id == repo_id).values(description=description))


async def set_visibility(session: AsyncSession, repo_id: int, visibility: str) -> None:
    await session.execute(update(Repository).where(Repository.id == repo_id).values(visibility=visibility))


# Quay's rule: only a registry that mirrors lets a repository become a mirror.
MIRROR_DISABLED = "Unable to set the repository to MIRROR state: repository mirroring is not enabled (FEATURE_REPO_MIRROR)"


async def set_state(session: AsyncSession, repo_id: int, state: RepositoryState) -> None:
    await session.execute(update(Repository).where(Repository.id == repo_id).values(state=int(state)))


async def mark_for_deletion(session: AsyncSession, repo_id: int) -> str:
    """Free the name at once: rename to a random uuid and leave the data to garbage collection."""
    hidden_name = str(uuidlib.uuid4())
    await stars.clear_repository(session, repo_id)
    await permissions.clear_repository(session, repo_id)
    await session.execute(update(Repository).where(Repository.id == repo_id).values(
        name=hidden_name, state=int(RepositoryState.MARKED_FOR_DELETION)))
    return hidden_name


def _readable(viewer: Viewer, include_public: bool):
    """A SQL condition: the viewer may read the repository."""
    conditions = [Repository.visibility == "public"] if include_public else []
    if viewer.sees_everything:
        conditions.append(true())
    elif viewer.user_id is not None:
        uid = viewer.user_id
        if viewer.is_user:
            conditions.append(Repository.namespace_user_id == uid)
        conditions += [
            Repository.namespace_user_id.in_(
                select(Team.organization_id).join(TeamMember, TeamMember.team_id == Team.id)
                .where(TeamMember.user_id == uid, Team.role == "admin")),
            Repository.id.in_(select(RepositoryPermission.repository_id).where(RepositoryPermission.user_id == uid)),
            Repository.id.in_(
                select(RepositoryPermission.repository_id)
                .join(TeamMember, TeamMember.team_id == RepositoryPermission.team_id)
                .where(TeamMember.user_id == uid)),
        ]
    return or_(*conditions) if conditions else false()


async def visible(session: AsyncSession, viewer: Viewer, *, include_public: bool, namespace: str | None = None,
                  starred_by: int | None = None, kind: str | None = "image", after_id: int | None = None,
                  limit: int = 100) -> list[RepoSummary]:
    """Repositories the viewer may read, by id, after `after_id` (the page token)."""
    q = (select(Repository.id, User.username, Repository.name, Repository.description, Repository.visibility,
                Repository.kind, Repository.state)
         .join(User, User.id == Repository.namespace_user_id)
         .where(_readable(viewer, include_public), Repository.state != RepositoryState.MARKED_FOR_DELETION)
         .order_by(Repository.id).limit(limit))
    if kind:
        q = q.where(Repository.kind == kind)
    if namespace is not None:
        q = q.where(User.username == namespace)
    if starred_by is not None:
        q = q.where(Repository.id.in_(select(Star.repository_id).where(Star.user_id == starred_by)))
    if after_id is not None:
        q = q.where(Repository.id > after_id)
    return [RepoSummary(*row) for row in (await session.execute(q)).all()]


async def last_modified(session: AsyncSession, repo_ids: list[int]) -> dict[int, int]:
    """Unix seconds of the newest tag change per repository (hidden tags do not count)."""
    if not repo_ids:
        return {}
    rows = await session.execute(
        select(Tag.repository_id, func.max(Tag.lifetime_start_ms))
        .where(Tag.repository_id.in_(repo_ids), Tag.hidden.is_(False)).group_by(Tag.repository_id))
    return {repo_id: ms // 1000 for repo_id, ms in rows.all() if ms is not None}
