"""Tag history, expiration and the time machine, for the REST API (the /v2 side is content.service).

A tag's history is its series of rows. Rows that ended longer ago than the namespace's time-machine
window (`removed_tag_expiration_s`) are what garbage collection purges, so they are neither listed
nor restorable here.
"""

from dataclasses import dataclass

from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.content.errors import ContentError
from quaymaster.content.models import Manifest, Tag
from quaymaster.content.service import manifest_by_digest
from quaymaster.db.base import now_ms
from quaymaster.oci import mediatypes as mt


@dataclass(frozen=True)
class TagView:
    name: str
    reversion: bool
    start_ms: int
    end_ms: int | None
    manifest_digest: str
    is_manifest_list: bool
    size: int | None


def _alive(now: int):
    return or_(Tag.lifetime_end_ms.is_(None), Tag.lifetime_end_ms > now)


HISTORY_ORDERS = {
    "recent": (Tag.lifetime_start_ms.desc(), Tag.id.desc()),
    "oldest": (Tag.lifetime_start_ms.asc(), Tag.id.asc()),
    "name": (Tag.name.asc(), Tag.lifetime_start_ms.desc(), Tag.id.desc()),
    "-name": (Tag.name.desc(), Tag.lifetime_start_ms.desc(), Tag.id.desc()),
}


async def history(session: AsyncSession, repo_id: int, *, window_s: int, active_only: bool = False,
                  name: str | None = None, name_contains: str | None = None, offset: int = 0,
                  limit: int = 50, order: str = "recent") -> list[TagView]:
    """Visible tag rows, newest first (or by `order`, see HISTORY_ORDERS): alive ones and,
    unless `active_only`, those still restorable."""
    now = now_ms()
    keep = _alive(now) if active_only else or_(_alive(now), Tag.lifetime_end_ms > now - window_s * 1000)
    q = (select(Tag.name, Tag.reversion, Tag.lifetime_start_ms, Tag.lifetime_end_ms, Manifest.digest,
                Manifest.media_type, Manifest.layers_compressed_size)
         .join(Manifest, Manifest.id == Tag.manifest_id)
         .where(Tag.repository_id == repo_id, Tag.hidden.is_(False), keep)
         .order_by(*HISTORY_ORDERS[order]).offset(offset).limit(limit))
    if name is not None:
        q = q.where(Tag.name == name)
    if name_contains is not None:
        q = q.where(Tag.name.icontains(name_contains, autoescape=True))
    return [TagView(n, bool(rev), start, end, digest, media_type in mt.INDEX_TYPES, size)
            for n, rev, start, end, digest, media_type, size in (await session.execute(q)).all()]


async def alive_tag(session: AsyncSession, repo_id: int, name: str) -> Tag | None:
    return await session.scalar(select(Tag).where(
        Tag.repository_id == repo_id, Tag.name == name, Tag.hidden.is_(False), _alive(now_ms())))


async def alive_digest(session: AsyncSession, repo_id: int, name: str) -> str | None:
    """The digest the alive tag points at, if the tag is alive."""
    return await session.scalar(select(Manifest.digest).join(Tag, Tag.manifest_id == Manifest.id).where(
        Tag.repository_id == repo_id, Tag.name == name, Tag.hidden.is_(False), _alive(now_ms())))


async def set_expiration(session: AsyncSession, repo_id: int, name: str,
                         end_ms: int | None) -> tuple[Tag, int | None] | None:
    """End the alive tag at `end_ms` (None: never); returns the tag and its previous end, or None."""
    tag = await alive_tag(session, repo_id, name)
    if tag is None:
        return None
    if tag.immutable:
        raise ContentError("TAG_IMMUTABLE", f"tag {name!r} is immutable")
    previous = tag.lifetime_end_ms
    if end_ms is not None:
        # (repository, name, lifetime_end_ms) is unique across the history.
        while await session.scalar(select(exists().where(
                Tag.repository_id == repo_id, Tag.name == name, Tag.lifetime_end_ms == end_ms, Tag.id != tag.id))):
            end_ms += 1
    tag.lifetime_end_ms = end_ms
    await session.flush()
    return tag, previous


async def restorable_manifest(session: AsyncSession, repo_id: int, digest: str, window_s: int) -> Manifest | None:
    """The manifest if it is live, or a tag on it ended within the time-machine window."""
    live = await manifest_by_digest(session, repo_id, digest)
    if live is not None:
        return live
    since = now_ms() - window_s * 1000
    return await session.scalar(select(Manifest).where(
        Manifest.repository_id == repo_id, Manifest.digest == digest,
        exists().where(Tag.manifest_id == Manifest.id, Tag.lifetime_end_ms.is_not(None), Tag.lifetime_end_ms > since)))
