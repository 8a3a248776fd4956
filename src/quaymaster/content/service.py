"""Content operations: the only code that writes repositories, blobs, manifests and tags.

Every function takes the caller's session, so a request composes them inside one transaction.
"""

import uuid as uuidlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, delete, exists, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts import permissions
from quaymaster.accounts.models import User
from quaymaster.content import labels
from quaymaster.content.errors import ContentError
from quaymaster.content.models import (
    Blob,
    BlobDeletion,
    BlobPlacement,
    BlobUpload,
    Manifest,
    ManifestBlob,
    ManifestChild,
    Repository,
    RepositoryState,
    Tag,
    UploadedBlob,
)
from quaymaster.db.base import now_ms, utcnow
from quaymaster.db.engine import Database
from quaymaster.oci.manifest import ParsedManifest

TEMP_TAG_PREFIX = "$temp-"


@dataclass(frozen=True)
class RepoRef:
    """A repository with the namespace facts authorization and the protocol need."""

    id: int
    namespace: str
    name: str
    namespace_id: int
    visibility: str
    state: int

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def target(self) -> permissions.RepoTarget:
        return permissions.RepoTarget(self.id, self.namespace_id, self.visibility)


def _alive(now: int):
    return or_(Tag.lifetime_end_ms.is_(None), Tag.lifetime_end_ms > now)


# --- repositories ------------------------------------------------------------------------------

async def get_repository(session: AsyncSession, namespace: str, name: str) -> RepoRef | None:
    row = (await session.execute(
        select(Repository.id, User.username, Repository.name, User.id, Repository.visibility,
               Repository.state)
        .join(User, User.id == Repository.namespace_user_id)
        .where(User.username == namespace, Repository.name == name,
               Repository.state != RepositoryState.MARKED_FOR_DELETION)
    )).first()
    return RepoRef(*row) if row else None


async def create_repository(session: AsyncSession, namespace: User, name: str,
                            visibility: str = "private", description: str | None = None,
                            creator_id: int | None = None, kind: str = "image") -> RepoRef:
    """A new repository; in an organization its default permissions apply and the creator gets admin."""
    repo = Repository(namespace_user_id=namespace.id, name=name, visibility=visibility,
                      description=description, kind=kind)
    session.add(repo)
    await session.flush()
    if namespace.organization:
        await permissions.apply_prototypes(session, namespace, repo.id, creator_id)
        creator = await session.get(User, creator_id) if creator_id else None
        if creator is not None:
            await permissions.set_permission(session, repo.id, "admin", user=creator)
    return RepoRef(repo.id, namespace.username, name, namespace.id, visibility, repo.state)


def check_writable(repo: RepoRef, *, mirror_robot: bool = False) -> None:
    """`mirror_robot`: the caller is the repository's mirror robot (mirroring.service decides)."""
    if repo.state == RepositoryState.READ_ONLY:
        raise ContentError("DENIED", "repository is read-only")
    if repo.state == RepositoryState.MIRROR and not mirror_robot:
        raise ContentError("DENIED", "repository is a mirror; only the mirror robot may write")


async def list_repositories(session: AsyncSession, *, owner_id: int | None, include_public: bool,
                            last: tuple[str, str] | None, limit: int) -> list[str]:
    """`ns/name` paths the caller may see, in order, after `last` (catalog pagination)."""
    visible = []
    if owner_id is not None:
        visible.append(Repository.namespace_user_id == owner_id)
    if include_public:
        visible.append(Repository.visibility == "public")
    if not visible:
        return []
    q = (select(User.username, Repository.name)
         .join(User, User.id == Repository.namespace_user_id)
         .where(or_(*visible), Repository.state != RepositoryState.MARKED_FOR_DELETION,
                Repository.kind == "image")
         .order_by(User.username, Repository.name).limit(limit))
    if last is not None:
        q = q.where(tuple_(User.username, Repository.name) > tuple_(*last))
    return [f"{ns}/{name}" for ns, name in (await session.execute(q)).all()]


# --- blobs -------------------------------------------------------------------------------------

async def linked_blob(session: AsyncSession, repo_id: int, digest: str) -> tuple[Blob, list[str]] | None:
    """The blob if this repository may see it (referenced by a manifest or freshly claimed)."""
    blob = await session.scalar(select(Blob).where(Blob.digest == digest))
    if blob is None:
        return None
    linked = await session.scalar(select(
        exists().where(ManifestBlob.repository_id == repo_id, ManifestBlob.blob_id == blob.id)
        | exists().where(UploadedBlob.repository_id == repo_id, UploadedBlob.blob_id == blob.id,
                         UploadedBlob.expires_at > utcnow())
    ))
    if not linked:
        return None
    placements = (await session.scalars(
        select(BlobPlacement.location).where(BlobPlacement.blob_id == blob.id))).all()
    return blob, list(placements)


async def claim_blob(session: AsyncSession, repo_id: int, blob: Blob, claim_s: int) -> None:
    """Link a blob to a repository for `claim_s` seconds so a manifest can reference it."""
    session.add(UploadedBlob(repository_id=repo_id, blob_id=blob.id,
                             expires_at=utcnow() + timedelta(seconds=claim_s)))


class BlobBeingDeleted(ContentError):
    """Garbage collection is deleting these bytes right now; the client should try again."""

    def __init__(self, digest: str):
        super().__init__("BLOB_UPLOAD_INVALID", f"blob {digest} is being garbage collected; retry the upload",
                         {"digest": digest})


async def record_blob(session: AsyncSession, digest: str, size: int, location: str) -> tuple[Blob, bool]:
    """Create the blob row (or reuse it, locked) and its placement, after its bytes are verified
    and stored; returns the row and whether it is new. A new row is refused while garbage
    collection deletes the same digest (its bytes may be going away under us)."""
    blob = await session.scalar(select(Blob).where(Blob.digest == digest).with_for_update())
    created = blob is None
    if created:
        if await session.scalar(select(exists().where(BlobDeletion.digest == digest))):
            raise BlobBeingDeleted(digest)
        blob = Blob(digest=digest, size=size)
        session.add(blob)
        await session.flush()
    has_placement = await session.scalar(select(exists().where(
        BlobPlacement.blob_id == blob.id, BlobPlacement.location == location)))
    if not has_placement:
        session.add(BlobPlacement(blob_id=blob.id, location=location))
    return blob, created


async def create_upload(session: AsyncSession, repo_id: int, location: str, metadata: dict) -> BlobUpload:
    upload = BlobUpload(repository_id=repo_id, uuid=str(uuidlib.uuid4()), location=location,
                        storage_metadata=metadata)
    session.add(upload)
    await session.flush()
    return upload


async def get_upload(session: AsyncSession, repo_id: int, upload_uuid: str) -> BlobUpload | None:
    return await session.scalar(
        select(BlobUpload).where(BlobUpload.uuid == upload_uuid, BlobUpload.repository_id == repo_id))


async def advance_upload(session: AsyncSession, upload_id: int, expected: int, new_count: int,
                         metadata: dict) -> bool:
    """Move byte_count forward only if nobody else did meanwhile (optimistic concurrency)."""
    result = await session.execute(
        update(BlobUpload).where(BlobUpload.id == upload_id, BlobUpload.byte_count == expected)
        .values(byte_count=new_count, chunk_count=BlobUpload.chunk_count + 1,
                storage_metadata=metadata))
    return result.rowcount == 1


async def delete_upload(session: AsyncSession, upload_id: int) -> None:
    await session.execute(delete(BlobUpload).where(BlobUpload.id == upload_id))


# --- manifests ---------------------------------------------------------------------------------

def _live_manifest(now: int):
    """A manifest is live while an alive tag (hidden ones included) or a live parent holds it."""
    tagged = exists().where(Tag.manifest_id == Manifest.id, _alive(now))
    parent = Manifest.__table__.alias("parent")
    parent_tag = Tag.__table__.alias("parent_tag")
    held_by_parent = exists().where(
        ManifestChild.child_manifest_id == Manifest.id,
        parent.c.id == ManifestChild.manifest_id,
        exists().where(parent_tag.c.manifest_id == parent.c.id,
                       or_(parent_tag.c.lifetime_end_ms.is_(None), parent_tag.c.lifetime_end_ms > now)),
    )
    return or_(tagged, held_by_parent)


async def manifest_by_digest(session: AsyncSession, repo_id: int, digest: str) -> Manifest | None:
    return await session.scalar(select(Manifest).where(
        Manifest.repository_id == repo_id, Manifest.digest == digest, _live_manifest(now_ms())))


async def manifest_by_tag(session: AsyncSession, repo_id: int, tag: str) -> Manifest | None:
    """The manifest an alive, visible tag points at; TAG_EXPIRED if only its history remains."""
    now = now_ms()
    manifest = await session.scalar(
        select(Manifest).join(Tag, Tag.manifest_id == Manifest.id)
        .where(Tag.repository_id == repo_id, Tag.name == tag, Tag.hidden.is_(False), _alive(now)))
    if manifest is None and await session.scalar(select(exists().where(
            Tag.repository_id == repo_id, Tag.name == tag, Tag.hidden.is_(False)))):
        raise ContentError("TAG_EXPIRED", f"tag {tag!r} has expired", {"tag": tag})
    return manifest


def _pull_statement(by_digest: bool):
    """Built once: the statement for one manifest by tag or digest, with bound parameters."""
    now = bindparam("now")
    q = (select(Repository.id, Repository.namespace_user_id, Manifest.digest, Manifest.media_type,
                Manifest.manifest_bytes)
         .join(User, User.id == Repository.namespace_user_id)
         .join(Manifest, Manifest.repository_id == Repository.id)
         .where(User.username == bindparam("namespace"), Repository.name == bindparam("name"),
                Repository.state != RepositoryState.MARKED_FOR_DELETION))
    if by_digest:
        q = q.where(Manifest.digest == bindparam("reference"), _live_manifest(now))
    else:
        q = q.join(Tag, Tag.manifest_id == Manifest.id).where(
            Tag.repository_id == Repository.id, Tag.name == bindparam("reference"),
            Tag.hidden.is_(False), _alive(now))
    return q.limit(1)


@dataclass(frozen=True)
class PulledManifest:
    repository_id: int
    namespace_id: int
    digest: str
    media_type: str
    manifest_bytes: bytes


_PULL_BY_TAG = _pull_statement(by_digest=False)
_PULL_BY_DIGEST = _pull_statement(by_digest=True)


async def pull_manifest(db: Database, namespace: str, name: str, reference: str,
                        by_digest: bool) -> PulledManifest | None:
    """The hot path: one prepared read outside a transaction for a manifest by tag or digest."""
    row = await db.fetch_one(_PULL_BY_DIGEST if by_digest else _PULL_BY_TAG,
                             {"namespace": namespace, "name": name, "reference": reference,
                              "now": now_ms()})
    return PulledManifest(*row) if row else None


async def manifest_exists(session: AsyncSession, repo_id: int, digest: str) -> bool:
    """Whether the repository holds this manifest row, live or not."""
    return bool(await session.scalar(select(exists().where(
        Manifest.repository_id == repo_id, Manifest.digest == digest))))


async def store_manifest(session: AsyncSession, repo: RepoRef, parsed: ParsedManifest,
                         config: dict | None = None) -> Manifest:
    """Validate references and store the manifest with its blob and child links (idempotent).

    `config` is the image config read beforehand (content.imageconfig); its labels become the
    manifest's labels."""
    existing = await session.scalar(select(Manifest).where(
        Manifest.repository_id == repo.id, Manifest.digest == parsed.digest))
    if existing is not None:
        return existing

    blob_ids: list[int] = []
    for digest in parsed.blob_digests:
        found = await linked_blob(session, repo.id, digest)
        if found is None:
            raise ContentError("MANIFEST_BLOB_UNKNOWN", f"blob {digest} is not known to this repository",
                               {"digest": digest})
        blob_ids.append(found[0].id)

    child_ids: list[int] = []
    for digest in dict.fromkeys(parsed.child_digests):
        child = await session.scalar(select(Manifest.id).where(
            Manifest.repository_id == repo.id, Manifest.digest == digest))
        if child is None:
            raise ContentError("MANIFEST_BLOB_UNKNOWN",
                               f"manifest {digest} referenced by the index is not in this repository",
                               {"digest": digest})
        child_ids.append(child)

    manifest = Manifest(
        repository_id=repo.id, digest=parsed.digest, media_type=parsed.media_type,
        manifest_bytes=parsed.raw,
        config_media_type=parsed.config.media_type if parsed.config else None,
        artifact_type=parsed.effective_artifact_type,
        subject=parsed.subject.digest if parsed.subject else None,
        annotations=parsed.annotations or None,
        # Quay's meaning: the layers' compressed sizes as the manifest states them, config excluded.
        layers_compressed_size=sum(d.size for d in parsed.layers) if not parsed.is_index else None,
    )
    session.add(manifest)
    await session.flush()
    for blob_id in blob_ids:
        session.add(ManifestBlob(repository_id=repo.id, manifest_id=manifest.id, blob_id=blob_id))
    if blob_ids:  # the manifest holds them now: their upload claims would only delay reclaiming space
        await session.execute(delete(UploadedBlob).where(
            UploadedBlob.repository_id == repo.id, UploadedBlob.blob_id.in_(blob_ids)))
    for child_id in child_ids:
        session.add(ManifestChild(repository_id=repo.id, manifest_id=manifest.id,
                                  child_manifest_id=child_id))
    if config is not None:
        await labels.add_image_labels(session, repo.id, manifest.id, labels.config_labels(config))
    return manifest


async def _end_time(session: AsyncSession, repo_id: int, name: str, now: int) -> int:
    """An end time unique for (repository, name), as the tag history index requires."""
    latest = await session.scalar(select(func.max(Tag.lifetime_end_ms)).where(
        Tag.repository_id == repo_id, Tag.name == name, Tag.lifetime_end_ms <= now + 1000))
    return now if latest is None or latest < now else latest + 1


async def set_tag(session: AsyncSession, repo_id: int, name: str, manifest_id: int, *,
                  reversion: bool = False) -> Tag | None:
    """Point a tag at a manifest, ending the previous lifetime; returns the tag it replaced.

    A `quay.expires-after` label on the manifest gives the new lifetime an end, except when
    the tag is being restored (a reversion), as in Quay."""
    now = now_ms()
    current = await session.scalar(select(Tag).where(
        Tag.repository_id == repo_id, Tag.name == name, Tag.hidden.is_(False), _alive(now)))
    if current is not None:
        if current.manifest_id == manifest_id and current.lifetime_end_ms is None:
            return None
        if current.immutable:
            raise ContentError("TAG_IMMUTABLE", f"tag {name!r} is immutable")
        current.lifetime_end_ms = await _end_time(session, repo_id, name, now)
        await session.flush()
    expires_s = None if reversion else await labels.expiration_s(session, manifest_id)
    session.add(Tag(repository_id=repo_id, name=name, manifest_id=manifest_id, reversion=reversion,
                    lifetime_start_ms=now, lifetime_end_ms=now + expires_s * 1000 if expires_s else None))
    await session.flush()
    return current


async def hold_untagged(session: AsyncSession, repo_id: int, manifest_id: int, expire_s: int | None) -> None:
    """A hidden tag keeps a manifest pushed by digest alive (for `expire_s`, or forever if None)."""
    now = now_ms()
    session.add(Tag(repository_id=repo_id, name=f"{TEMP_TAG_PREFIX}{uuidlib.uuid4()}",
                    manifest_id=manifest_id, lifetime_start_ms=now, hidden=True,
                    lifetime_end_ms=None if expire_s is None else now + expire_s * 1000))


async def delete_tag(session: AsyncSession, repo_id: int, name: str) -> Tag | None:
    now = now_ms()
    tag = await session.scalar(select(Tag).where(
        Tag.repository_id == repo_id, Tag.name == name, Tag.hidden.is_(False), _alive(now)))
    if tag is None:
        return None
    if tag.immutable:
        raise ContentError("TAG_IMMUTABLE", f"tag {name!r} is immutable")
    tag.lifetime_end_ms = await _end_time(session, repo_id, name, now)
    return tag


async def delete_manifest(session: AsyncSession, repo_id: int, digest: str) -> list[str]:
    """End every alive tag (hidden ones too) on the manifest; returns visible tag names ended."""
    now = now_ms()
    manifest = await session.scalar(select(Manifest).where(
        Manifest.repository_id == repo_id, Manifest.digest == digest, _live_manifest(now)))
    if manifest is None:
        raise ContentError("MANIFEST_UNKNOWN", f"manifest {digest} is not in this repository")
    tags = (await session.scalars(select(Tag).where(
        Tag.repository_id == repo_id, Tag.manifest_id == manifest.id, _alive(now)))).all()
    ended = []
    for tag in tags:
        if tag.immutable:
            raise ContentError("TAG_IMMUTABLE", f"tag {tag.name!r} is immutable")
        tag.lifetime_end_ms = await _end_time(session, repo_id, tag.name, now)
        if not tag.hidden:
            ended.append(tag.name)
    return ended


async def list_tags(session: AsyncSession, repo_id: int, *, last: str | None, limit: int) -> list[str]:
    q = (select(Tag.name).where(Tag.repository_id == repo_id, Tag.hidden.is_(False), _alive(now_ms()))
         .order_by(Tag.name).limit(limit))
    if last:
        q = q.where(Tag.name > last)
    return list((await session.scalars(q)).all())


async def referrers(session: AsyncSession, repo_id: int, subject: str,
                    artifact_type: str | None) -> list[Manifest]:
    q = (select(Manifest).where(Manifest.repository_id == repo_id, Manifest.subject == subject,
                                _live_manifest(now_ms()))
         .order_by(Manifest.created, Manifest.id))
    if artifact_type:
        q = q.where(Manifest.artifact_type == artifact_type)
    return list((await session.scalars(q)).all())


async def lock_repository(session: AsyncSession, repo_id: int) -> None:
    """Serialize tag changes per repository (row lock on PostgreSQL; SQLite writers are serial)."""
    await session.execute(select(Repository.id).where(Repository.id == repo_id).with_for_update())


# =================================================================================================
# Repository search and namespace ownership (used by /find/repositories and the superuser panel).
# Kept together at the end of the module so concurrent edits above stay independent.
# =================================================================================================

@dataclass(frozen=True)
class RepoSearchHit:
    """A repository as search results show it."""

    id: int
    namespace: str
    namespace_is_org: bool
    name: str
    description: str | None
    visibility: str
    kind: str
    last_modified_ms: int | None
    stars: int


def _readable_by(user_id: int, *, own_namespace: bool):
    """SQL: repositories this user (or robot) may read, mirroring permissions.repo_role."""
    from quaymaster.accounts.models import RepositoryPermission, Team, TeamMember

    direct = exists().where(RepositoryPermission.repository_id == Repository.id,
                            RepositoryPermission.user_id == user_id)
    via_team = exists().where(RepositoryPermission.repository_id == Repository.id,
                              TeamMember.team_id == RepositoryPermission.team_id,
                              TeamMember.user_id == user_id)
    org_admin = exists().where(Team.organization_id == Repository.namespace_user_id, Team.role == "admin",
                               TeamMember.team_id == Team.id, TeamMember.user_id == user_id)
    clauses = [Repository.visibility == "public", direct, via_team, org_admin]
    if own_namespace:
        clauses.append(Repository.namespace_user_id == user_id)
    return or_(*clauses)


async def search_repositories(session: AsyncSession, query: str, *, user_id: int | None, user_is_robot: bool = False,
                              include_public: bool = True, see_all: bool = False, offset: int = 0,
                              limit: int = 10) -> list[RepoSearchHit]:
    """Repositories matching `query` (in the name or description; `ns/name` narrows to one
    namespace) that the caller may read: with `user_id` what that account may read, else public
    ones when `include_public`; `see_all` lifts the filter (superusers with full access)."""
    from quaymaster.accounts.models import Star

    if see_all:
        visible = None
    elif user_id is not None:
        visible = _readable_by(user_id, own_namespace=not user_is_robot)
    elif include_public:
        visible = Repository.visibility == "public"
    else:
        return []
    text = query.strip().lower()
    if "/" in text:
        ns, _, name = text.partition("/")
        match = (User.username == ns) & Repository.name.icontains(name, autoescape=True)
    else:
        match = or_(Repository.name.icontains(text, autoescape=True),
                    Repository.description.icontains(text, autoescape=True))
    last_modified = (select(func.max(Tag.lifetime_start_ms))
                     .where(Tag.repository_id == Repository.id, Tag.hidden.is_(False), _alive(now_ms()))
                     .scalar_subquery())
    stars = select(func.count(Star.id)).where(Star.repository_id == Repository.id).scalar_subquery()
    q = (select(Repository.id, User.username, User.organization, Repository.name, Repository.description,
                Repository.visibility, Repository.kind, last_modified, stars)
         .join(User, User.id == Repository.namespace_user_id)
         .where(match, Repository.state != RepositoryState.MARKED_FOR_DELETION)
         .order_by((func.lower(Repository.name) == text).desc(), User.username, Repository.name)
         .offset(offset).limit(limit))
    if visible is not None:
        q = q.where(visible)
    return [RepoSearchHit(r_id, ns, bool(is_org), name, desc, vis, kind, lm, int(st or 0))
            for r_id, ns, is_org, name, desc, vis, kind, lm, st in (await session.execute(q)).all()]


async def namespace_repository_counts(session: AsyncSession, namespace_id: int) -> tuple[int, int]:
    """(live, awaiting deletion) repository rows of a namespace: while either is non-zero the
    namespace row is still referenced, so a user or organization cannot be deleted."""
    pending = Repository.state == RepositoryState.MARKED_FOR_DELETION
    counts = select(func.count(Repository.id).filter(~pending), func.count(Repository.id).filter(pending))
    row = (await session.execute(counts.where(Repository.namespace_user_id == namespace_id))).one()
    return int(row[0] or 0), int(row[1] or 0)
