"""Garbage collection while pushes and pulls go on.

One pass: finish queued namespace and repository deletes, purge tag history older than the
namespace's time-machine window, delete manifests nothing holds any more, then delete blobs no
manifest or fresh upload claims, from every storage location. Each step is its own small
transaction, so a pass never blocks traffic for long.

Safety against a racing push rests on three rules (see docs/ARCHITECTURE.md):
- tags and manifests of a repository change only under its row lock (`lock_repository`), which
  pushes take too;
- a blob row is deleted only under its row lock, after re-checking that no manifest link and no
  upload claim references it; pushes add those references in the same way;
- between deleting a blob row and deleting its bytes a `BlobDeletion` marker exists, and no
  push records that digest while it does (the push gets a retryable error instead).
"""

import asyncio
import logging
import uuid as uuidlib
from dataclasses import dataclass, fields
from datetime import timedelta

from sqlalchemy import BigInteger, and_, cast, delete, exists, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts.models import User
from quaymaster.content.models import (
    Blob,
    BlobDeletion,
    BlobPlacement,
    BlobUpload,
    DeletedNamespace,
    Label,
    Manifest,
    ManifestBlob,
    ManifestChild,
    ManifestLabel,
    Repository,
    RepositoryState,
    Tag,
    UploadedBlob,
)
from quaymaster.db.base import now_ms, utcnow
from quaymaster.secscan import service as secscan

log = logging.getLogger(__name__)

BATCH = 200  # rows one transaction touches at most
STALE_DELETION_S = 60  # a deletion marker this old belongs to a pass that died; finish it


@dataclass
class GcReport:
    tags: int = 0
    manifests: int = 0
    blobs: int = 0
    bytes: int = 0
    uploads: int = 0
    repositories: int = 0
    namespaces: int = 0
    multipart_aborted: int = 0
    failed: int = 0  # repositories, namespaces or blobs this pass could not finish (logged)

    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def add(self, other: "GcReport") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


async def collect_garbage(ctx, *, full: bool = False) -> GcReport:
    """One pass. `full` also sweeps for orphans a crashed pass may have left, and aborts stale
    driver-side uploads (worth doing hourly, not every few seconds)."""
    report = GcReport()
    candidates: set[int] = set()
    await _finish_stale_deletions(ctx)
    await _advance_namespace_deletions(ctx, report)
    await _purge_deleted_repositories(ctx, report, candidates)
    now = now_ms()
    for repo_id in await _repositories_with_garbage(ctx, now, full=full):
        await _isolated(report, f"repository {repo_id}",
                        collect_repository(ctx, repo_id, report, candidates, now=now))
    await _purge_expired_claims(ctx, candidates)
    if full:
        candidates |= await _orphan_blobs(ctx)
    for blob_id in sorted(candidates):
        await _isolated(report, f"blob {blob_id}", _delete_blob(ctx, blob_id, report))
    await _clean_stale_uploads(ctx, report)
    if full and ctx.settings.FEATURE_ENABLE_STALE_MPU_CLEANUP:
        for store in ctx.storage.stores.values():
            report.multipart_aborted += await store.abort_stale_uploads(24 * 3600)
    await _advance_namespace_deletions(ctx, report)
    return report


async def _isolated(report: GcReport, what: str, step) -> None:
    """Run one item's step; a failure (a storage outage, a row something unexpected still
    references) is logged and counted, and the pass goes on with the other items."""
    try:
        await step
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - one bad item must not stop collection everywhere
        report.failed += 1
        log.exception("garbage collection could not finish %s; the next pass tries again", what)


# --- tags and manifests, per repository ------------------------------------------------------

def _expired_history(now: int):
    """Tag rows past recovery: hidden ones once ended, visible ones once out of the time machine."""
    window_ms = (select(cast(User.removed_tag_expiration_s, BigInteger) * 1000)
                 .join(Repository, Repository.namespace_user_id == User.id)
                 .where(Repository.id == Tag.repository_id).scalar_subquery())
    return and_(Tag.lifetime_end_ms.is_not(None), Tag.lifetime_end_ms <= now,
                or_(Tag.hidden.is_(True), Tag.lifetime_end_ms <= literal(now, BigInteger) - window_ms))


async def _repositories_with_garbage(ctx, now: int, *, full: bool) -> list[int]:
    async with ctx.db.read() as session:
        ids = set((await session.scalars(select(Tag.repository_id).where(_expired_history(now)).distinct())).all())
        if full:
            untagged = select(Manifest.repository_id).where(
                ~exists().where(Tag.manifest_id == Manifest.id),
                ~exists().where(ManifestChild.child_manifest_id == Manifest.id)).distinct()
            ids |= set((await session.scalars(untagged)).all())
    return sorted(ids)


async def collect_repository(ctx, repo_id: int, report: GcReport, candidates: set[int], *,
                             now: int | None = None) -> None:
    """Purge one repository's expired history and the manifests it leaves unreferenced."""
    from quaymaster.content.service import lock_repository

    now = now_ms() if now is None else now
    while True:
        async with ctx.db.write() as session:
            await lock_repository(session, repo_id)
            tags = await session.scalars(select(Tag.id).where(
                Tag.repository_id == repo_id, _expired_history(now)).limit(BATCH))
            tag_ids = list(tags.all())
            if tag_ids:
                await session.execute(delete(Tag).where(Tag.id.in_(tag_ids)))
                report.tags += len(tag_ids)
            released = await _release_orphaned_referrers(ctx, session, repo_id, now)
            removed = await _delete_unreferenced_manifests(session, repo_id, candidates)
            report.manifests += removed
        if not (tag_ids or released or removed):
            return


async def _release_orphaned_referrers(ctx, session: AsyncSession, repo_id: int, now: int) -> int:
    """A referrer (a signature, an SBOM) lives as long as its subject: once no manifest with the
    subject's digest is left in the repository, end the hidden tag that kept it. A referrer
    pushed before its subject gets the push grace period to wait for it."""
    subject = Manifest.__table__.alias("subject_manifest")
    grace_ms = ctx.settings.PUSH_TEMP_TAG_EXPIRATION_SEC * 1000
    held = select(Tag.id).join(Manifest, Manifest.id == Tag.manifest_id).where(
        Tag.repository_id == repo_id, Tag.hidden.is_(True), Tag.lifetime_end_ms.is_(None),
        Tag.lifetime_start_ms <= now - grace_ms, Manifest.subject.is_not(None),
        ~exists().where(subject.c.repository_id == repo_id, subject.c.digest == Manifest.subject))
    ids = list((await session.scalars(held.limit(BATCH))).all())
    if ids:
        await session.execute(update(Tag).where(Tag.id.in_(ids)).values(lifetime_end_ms=now))
    return len(ids)


async def _delete_unreferenced_manifests(session: AsyncSession, repo_id: int, candidates: set[int]) -> int:
    """Delete manifests no tag row (alive or restorable) and no index in the repository holds."""
    rows = await session.scalars(select(Manifest.id).where(
        Manifest.repository_id == repo_id,
        ~exists().where(Tag.manifest_id == Manifest.id),
        ~exists().where(ManifestChild.child_manifest_id == Manifest.id),
    ).limit(BATCH))
    ids = list(rows.all())
    if ids:
        await _delete_manifests(session, ids, candidates)
    return len(ids)


async def _delete_manifests(session: AsyncSession, ids: list[int], candidates: set[int]) -> None:
    """Remove manifest rows with their links; their blobs become candidates for deletion."""
    blob_ids = await session.scalars(select(ManifestBlob.blob_id).where(ManifestBlob.manifest_id.in_(ids)))
    candidates.update(blob_ids.all())
    label_ids = list((await session.scalars(
        select(ManifestLabel.label_id).where(ManifestLabel.manifest_id.in_(ids)))).all())
    await session.execute(delete(ManifestLabel).where(ManifestLabel.manifest_id.in_(ids)))
    if label_ids:
        await session.execute(delete(Label).where(Label.id.in_(label_ids)))
    await session.execute(delete(ManifestBlob).where(ManifestBlob.manifest_id.in_(ids)))
    await session.execute(delete(ManifestChild).where(ManifestChild.manifest_id.in_(ids)))
    await secscan.forget_manifests(session, ids)  # status rows go; the scanner is told later
    await session.execute(delete(Manifest).where(Manifest.id.in_(ids)))


# --- deleted repositories and namespaces -----------------------------------------------------

async def _purge_deleted_repositories(ctx, report: GcReport, candidates: set[int]) -> None:
    if not ctx.settings.FEATURE_REPOSITORY_GARBAGE_COLLECTION:
        return
    async with ctx.db.read() as session:
        ids = list((await session.scalars(select(Repository.id).where(
            Repository.state == int(RepositoryState.MARKED_FOR_DELETION)))).all())
    for repo_id in ids:
        await _isolated(report, f"deleted repository {repo_id}", purge_repository(ctx, repo_id, report, candidates))


async def purge_repository(ctx, repo_id: int, report: GcReport, candidates: set[int]) -> None:
    """Everything of a repository marked for deletion, in batches, then its row."""
    from quaymaster.content.service import lock_repository

    while True:  # tags first: without them every manifest becomes unreferenced
        async with ctx.db.write() as session:
            await lock_repository(session, repo_id)
            ids = list((await session.scalars(select(Tag.id).where(Tag.repository_id == repo_id).limit(BATCH))).all())
            await session.execute(delete(Tag).where(Tag.id.in_(ids)))
            report.tags += len(ids)
        if not ids:
            break
    while True:
        async with ctx.db.write() as session:
            ids = list((await session.scalars(
                select(Manifest.id).where(Manifest.repository_id == repo_id).limit(BATCH))).all())
            if ids:
                await session.execute(delete(ManifestChild).where(
                    or_(ManifestChild.manifest_id.in_(ids), ManifestChild.child_manifest_id.in_(ids))))
                await _delete_manifests(session, ids, candidates)
                report.manifests += len(ids)
        if not ids:
            break
    async with ctx.db.write() as session:
        claimed = await session.scalars(select(UploadedBlob.blob_id).where(UploadedBlob.repository_id == repo_id))
        candidates.update(claimed.all())
        await session.execute(delete(UploadedBlob).where(UploadedBlob.repository_id == repo_id))
        uploads = list((await session.scalars(select(BlobUpload).where(BlobUpload.repository_id == repo_id))).all())
        await session.execute(delete(BlobUpload).where(BlobUpload.repository_id == repo_id))
        await session.execute(delete(Repository).where(Repository.id == repo_id))
    for upload in uploads:
        await _cancel_upload_data(ctx, upload)
    report.uploads += len(uploads)
    report.repositories += 1


async def queue_namespace_deletion(session: AsyncSession, namespace: User) -> None:
    """Retire a namespace that still owns repositories: free its name at once, disable it, mark
    its repositories for deletion; the collector removes the account once they are gone."""
    from quaymaster.content.repositories import mark_for_deletion

    session.add(DeletedNamespace(namespace_id=namespace.id, original_name=namespace.username))
    repo_ids = (await session.scalars(select(Repository.id).where(
        Repository.namespace_user_id == namespace.id,
        Repository.state != int(RepositoryState.MARKED_FOR_DELETION)))).all()
    for repo_id in repo_ids:
        await mark_for_deletion(session, repo_id)
    namespace.username = f"deleted-{uuidlib.uuid4().hex}"
    namespace.email = None
    namespace.enabled = False
    await session.flush()


async def _advance_namespace_deletions(ctx, report: GcReport) -> None:
    if not ctx.settings.FEATURE_NAMESPACE_GARBAGE_COLLECTION:
        return
    async with ctx.db.read() as session:
        queued = list((await session.scalars(select(DeletedNamespace))).all())
    for item in queued:
        await _isolated(report, f"namespace {item.original_name}", _advance_namespace_deletion(ctx, item, report))


async def _advance_namespace_deletion(ctx, item: DeletedNamespace, report: GcReport) -> None:
    """Delete the account once its repositories are gone; until then keep marking them."""
    from quaymaster.accounts import orgs
    from quaymaster.accounts import service as accounts
    from quaymaster.content.repositories import mark_for_deletion

    async with ctx.db.write() as session:
        repos = (await session.execute(select(Repository.id, Repository.state).where(
            Repository.namespace_user_id == item.namespace_id))).all()
        if repos:  # not yet; a repository created meanwhile goes the same way
            for repo in repos:
                if repo.state != int(RepositoryState.MARKED_FOR_DELETION):
                    await mark_for_deletion(session, repo.id)
            return
        namespace = await session.get(User, item.namespace_id)
        await session.execute(delete(DeletedNamespace).where(DeletedNamespace.id == item.id))
        if namespace is not None:
            if namespace.organization:
                await orgs.delete_org(session, namespace)
            else:
                await accounts.delete_user(session, namespace)
    report.namespaces += 1
    log.info("deleted namespace %s", item.original_name)


# --- blobs and uploads -----------------------------------------------------------------------

async def _purge_expired_claims(ctx, candidates: set[int]) -> None:
    while True:
        async with ctx.db.write() as session:
            rows = (await session.execute(select(UploadedBlob.id, UploadedBlob.blob_id).where(
                UploadedBlob.expires_at <= utcnow()).limit(BATCH))).all()
            if rows:
                await session.execute(delete(UploadedBlob).where(UploadedBlob.id.in_([r.id for r in rows])))
        candidates.update(r.blob_id for r in rows)
        if len(rows) < BATCH:
            return


def _referenced(blob_id):
    return or_(exists().where(ManifestBlob.blob_id == blob_id), exists().where(UploadedBlob.blob_id == blob_id))


async def _orphan_blobs(ctx) -> set[int]:
    async with ctx.db.read() as session:
        return set((await session.scalars(select(Blob.id).where(~_referenced(Blob.id)))).all())


async def _delete_blob(ctx, blob_id: int, report: GcReport) -> None:
    """Delete one unreferenced blob: row (re-checked under its lock) first, bytes second."""
    async with ctx.db.write() as session:
        blob = await session.scalar(select(Blob).where(Blob.id == blob_id).with_for_update())
        if blob is None or await session.scalar(select(_referenced(blob.id))):
            return
        digest, size = blob.digest, blob.size
        session.add(BlobDeletion(digest=digest))
        await session.execute(delete(BlobPlacement).where(BlobPlacement.blob_id == blob.id))
        await session.execute(delete(Blob).where(Blob.id == blob.id))
    await _delete_bytes(ctx, digest)
    report.blobs += 1
    report.bytes += size


async def _delete_bytes(ctx, digest: str) -> None:
    """Remove a digest from every location (a replica may exist unrecorded), then the marker.
    A failure leaves the marker: the next pass finishes the job."""
    for store in ctx.storage.stores.values():
        await store.delete(digest)
    async with ctx.db.write() as session:
        await session.execute(delete(BlobDeletion).where(BlobDeletion.digest == digest))


async def _finish_stale_deletions(ctx) -> None:
    cutoff = utcnow() - timedelta(seconds=STALE_DELETION_S)
    async with ctx.db.read() as session:
        digests = list((await session.scalars(select(BlobDeletion.digest).where(BlobDeletion.started < cutoff))).all())
    for digest in digests:
        try:
            await _delete_bytes(ctx, digest)
        except Exception:  # noqa: BLE001 - storage down: the marker stays, pushes of it retry
            log.warning("could not finish deleting %s; will retry", digest, exc_info=True)


async def delete_orphan_object(ctx, location: str, digest: str) -> bool:
    """Delete a stored object no blob row describes (fsck --repair), safe against a push that is
    recording that very digest right now. False (nothing deleted) if a row exists."""
    async with ctx.db.write() as session:
        if await session.scalar(select(exists().where(Blob.digest == digest))):
            return False
        if await session.scalar(select(exists().where(BlobDeletion.digest == digest))):
            return False  # a collection pass is deleting it already
        session.add(BlobDeletion(digest=digest))
    try:
        await ctx.storage.location(location).delete(digest)
    finally:
        async with ctx.db.write() as session:
            await session.execute(delete(BlobDeletion).where(BlobDeletion.digest == digest))
    return True


async def _cancel_upload_data(ctx, upload: BlobUpload) -> None:
    try:
        await ctx.storage.location(upload.location).cancel_upload(upload.uuid, upload.storage_metadata)
    except Exception:  # noqa: BLE001 - an unknown location or a storage hiccup: the data is orphaned
        log.warning("could not remove data of upload %s", upload.uuid, exc_info=True)


async def _clean_stale_uploads(ctx, report: GcReport) -> None:
    """Upload sessions idle past BLOBUPLOAD_DELETION_DATE_THRESHOLD minutes are abandoned."""
    cutoff = utcnow() - timedelta(minutes=ctx.settings.BLOBUPLOAD_DELETION_DATE_THRESHOLD)
    while True:
        async with ctx.db.write() as session:
            uploads = list((await session.scalars(
                select(BlobUpload).where(BlobUpload.created < cutoff).limit(BATCH))).all())
            if uploads:
                await session.execute(delete(BlobUpload).where(BlobUpload.id.in_([u.id for u in uploads])))
        for upload in uploads:
            ctx.hashes.drop(upload.uuid)
            await _cancel_upload_data(ctx, upload)
        report.uploads += len(uploads)
        if len(uploads) < BATCH:
            return


async def blobs_total(ctx) -> tuple[int, int]:
    """How many blobs the registry holds and their bytes (for reports and tests)."""
    async with ctx.db.read() as session:
        row = (await session.execute(select(func.count(Blob.id), func.coalesce(func.sum(Blob.size), 0)))).one()
    return int(row[0]), int(row[1])
