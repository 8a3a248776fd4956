"""Stars: a user's bookmarks on repositories (the table lives with the accounts models)."""

from sqlalchemy import delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts.models import Star


async def star(session: AsyncSession, user_id: int, repo_id: int) -> None:
    """Idempotent: starring twice keeps one star."""
    if not await is_starred(session, user_id, repo_id):
        session.add(Star(user_id=user_id, repository_id=repo_id))
        await session.flush()


async def unstar(session: AsyncSession, user_id: int, repo_id: int) -> None:
    await session.execute(delete(Star).where(Star.user_id == user_id, Star.repository_id == repo_id))


async def is_starred(session: AsyncSession, user_id: int | None, repo_id: int) -> bool:
    if user_id is None:
        return False
    return bool(await session.scalar(select(exists().where(Star.user_id == user_id, Star.repository_id == repo_id))))


async def starred_among(session: AsyncSession, user_id: int | None, repo_ids: list[int]) -> set[int]:
    if user_id is None or not repo_ids:
        return set()
    rows = await session.scalars(select(Star.repository_id).where(
        Star.user_id == user_id, Star.repository_id.in_(repo_ids)))
    return set(rows.all())


async def clear_repository(session: AsyncSession, repo_id: int) -> None:
    await session.execute(delete(Star).where(Star.repository_id == repo_id))
