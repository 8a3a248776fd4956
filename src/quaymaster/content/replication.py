"""Storage replication: copy every referenced blob to each of DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS.

Pushes write to the preferred location only. With FEATURE_STORAGE_REPLICATION a worker calls
`replicate_pending()` in a loop; each call walks the blobs a manifest or a live upload claim
references that lack a placement in some default location, copies each from the nearest
location holding it, and records the new placement. There is no queue table: the blob and
placement tables are the queue, so a copy that failed is simply found again on the next pass,
and a crash at any point loses nothing.

Safety:
- Bytes are streamed, never held whole in memory (small blobs excepted), and the digest and
  size are checked while copying. A copy that does not match is thrown away, never recorded;
  the next location holding the blob is tried instead.
- The copy lands on the content-addressed key atomically (the driver's commit), and the
  placement is recorded afterwards, under the blob's row lock. Garbage collection takes the
  same lock to delete the row, so either it sees our placement, or we see the row gone and
  remove our copy (through `gc.delete_orphan_object`, which guards against a push recording
  that digest meanwhile).
- Two workers may copy the same blob at once: both copies hold the same verified bytes under
  the same key, and the second placement insert is ignored.
"""

import asyncio
import logging
import uuid as uuidlib
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from quaymaster.content.gc import delete_orphan_object
from quaymaster.content.models import (
    Blob,
    BlobDeletion,
    BlobPlacement,
    ManifestBlob,
    UploadedBlob,
)
from quaymaster.db.base import utcnow
from quaymaster.oci.digest import new_hasher, parse_digest
from quaymaster.oci.errors import OCIError
from quaymaster.storage.base import BlobNotFound, BlobStore, StorageError

log = logging.getLogger(__name__)

SMALL_BLOB = 1024 * 1024  # copied with one put(); larger blobs stream through an upload session
COPIES_IN_FLIGHT = 4  # blobs copied at once within a batch

_warned_no_targets = False


class _Mismatch(Exception):
    """The bytes read from a source location are not the blob's (corrupt or truncated copy)."""


@dataclass(frozen=True)
class _Pending:
    id: int
    digest: str
    size: int
    placements: tuple[str, ...]


def _referenced(now: datetime):
    """A manifest links the blob, or a repository's upload claim on it is still fresh."""
    return or_(
        exists().where(ManifestBlob.blob_id == Blob.id),
        exists().where(UploadedBlob.blob_id == Blob.id, UploadedBlob.expires_at > now),
    )


def _missing_somewhere(targets: list[str]):
    """Anti-join on blobplacement's (blob_id, location) unique index, one probe per target."""
    return or_(*(~exists().where(BlobPlacement.blob_id == Blob.id, BlobPlacement.location == t) for t in targets))


async def _pending_batch(ctx, targets: list[str], after: int, limit: int) -> list[_Pending]:
    """The next `limit` blobs after id `after` that need a copy somewhere, with their placements."""
    async with ctx.db.read() as session:
        rows = (await session.execute(
            select(Blob.id, Blob.digest, Blob.size)
            .where(Blob.id > after, _referenced(utcnow()), _missing_somewhere(targets),
                   exists().where(BlobPlacement.blob_id == Blob.id))  # nothing to copy from otherwise
            .order_by(Blob.id).limit(limit)
        )).all()
        if not rows:
            return []
        placed: dict[int, list[str]] = {}
        for blob_id, location in (await session.execute(
                select(BlobPlacement.blob_id, BlobPlacement.location)
                .where(BlobPlacement.blob_id.in_([r.id for r in rows])))).all():
            placed.setdefault(blob_id, []).append(location)
    return [_Pending(r.id, r.digest, r.size, tuple(placed.get(r.id, ()))) for r in rows]


async def replicate_pending(ctx, *, limit: int = 100) -> int:
    """One replication pass over every blob that lacks a copy in a default location, `limit`
    blobs per database query. Returns how many copies it made and recorded (a copy another
    worker recorded first is not counted). Failed copies are logged and retried next pass."""
    settings = ctx.settings
    if not settings.FEATURE_STORAGE_REPLICATION:
        return 0
    targets = list(settings.DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS)
    if not targets:
        global _warned_no_targets
        if not _warned_no_targets:
            _warned_no_targets = True
            log.warning("FEATURE_STORAGE_REPLICATION is on but DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS is empty:"
                        " nothing to replicate")
        return 0
    copies = 0
    after = 0
    gate = asyncio.Semaphore(COPIES_IN_FLIGHT)

    async def one(blob: _Pending) -> int:
        async with gate:
            return await _replicate_blob(ctx, blob, targets)

    while True:
        batch = await _pending_batch(ctx, targets, after, limit)
        if not batch:
            return copies
        copies += sum(await asyncio.gather(*(one(blob) for blob in batch)))
        after = batch[-1].id
        if len(batch) < limit:
            return copies


async def _replicate_blob(ctx, blob: _Pending, targets: list[str]) -> int:
    """Copy one blob to each target that lacks it; returns how many placements were added.
    Failures are logged, never raised: the blob stays pending and the next pass retries it."""
    made = 0
    for target_name in targets:
        if target_name in blob.placements:
            continue
        target = ctx.storage.location(target_name)
        try:
            if await _copy(ctx, blob, target) and await _record(ctx, blob, target):
                made += 1
        except Exception:
            log.exception("replicating blob %s to %s failed; will retry", blob.digest, target_name)
    return made


async def _copy(ctx, blob: _Pending, target: BlobStore) -> bool:
    """Put a verified copy of the blob into `target`, reading from the nearest location that
    holds it and falling back to the next one; False if no location yielded the right bytes."""
    try:
        algorithm, _ = parse_digest(blob.digest)
    except OCIError:
        log.error("blob %s has a malformed digest; not replicated", blob.digest)
        return False
    if await target.size(blob.digest) == blob.size:
        # Already there (a copy whose recording was lost, or one another worker just made). Only
        # verified bytes are ever committed under a digest, so it can be recorded as it is.
        return True
    sources = [s for s in ctx.storage.holders(list(blob.placements)) if s is not target]
    if not sources:
        log.warning("blob %s has no copy in a configured location (placements: %s); not replicated",
                    blob.digest, ", ".join(blob.placements))
    for source in sources:
        try:
            if blob.size <= SMALL_BLOB:
                await _copy_small(source, target, blob, algorithm)
            else:
                await _copy_streamed(source, target, blob, algorithm)
            return True
        except BlobNotFound:
            log.error("blob %s is recorded in %s but missing there; trying another location",
                      blob.digest, source.name)
        except _Mismatch as err:
            log.error("blob %s in %s is corrupt (%s); not copied to %s", blob.digest, source.name, err, target.name)
        except StorageError as err:
            log.warning("copying blob %s from %s to %s failed: %s", blob.digest, source.name, target.name, err)
    return False


async def _copy_small(source: BlobStore, target: BlobStore, blob: _Pending, algorithm: str) -> None:
    hasher = new_hasher(algorithm)
    parts, count = [], 0
    async with aclosing(source.stream(blob.digest)) as chunks:
        async for chunk in chunks:
            hasher.update(chunk)
            parts.append(chunk)
            count += len(chunk)
            if count > blob.size:
                break
    data = b"".join(parts)
    _check(blob, algorithm, hasher, len(data))
    await target.put(blob.digest, data)


async def _copy_streamed(source: BlobStore, target: BlobStore, blob: _Pending, algorithm: str) -> None:
    """Through an upload session on the target: bytes go to its upload area as they arrive and
    become the blob only after the digest matched."""
    upload_id = str(uuidlib.uuid4())
    metadata = await target.start_upload(upload_id)
    try:
        writer = await target.open_writer(upload_id, metadata, 0)
        hasher = new_hasher(algorithm)
        count = 0
        try:
            async with aclosing(source.stream(blob.digest)) as chunks:
                async for chunk in chunks:
                    hasher.update(chunk)
                    count += len(chunk)
                    if count > blob.size:
                        break  # longer than recorded: no need to read the rest
                    await writer.write(chunk)
            _check(blob, algorithm, hasher, count)
        except BaseException:
            await writer.abort()
            raise
        metadata = await writer.close()
        await target.commit_upload(upload_id, metadata, blob.digest, count)
    except BaseException:
        try:
            await target.cancel_upload(upload_id, metadata)
        except Exception:
            log.warning("could not clean up replication upload %s in %s", upload_id, target.name, exc_info=True)
        raise


def _check(blob: _Pending, algorithm: str, hasher, count: int) -> None:
    if count > blob.size:
        raise _Mismatch(f"longer than the {blob.size} bytes recorded")
    if count < blob.size:
        raise _Mismatch(f"{count} bytes where {blob.size} are recorded")
    actual = f"{algorithm}:{hasher.hexdigest()}"
    if actual != blob.digest:
        raise _Mismatch(f"content hashes to {actual}")


def _insert_ignoring_duplicate(ctx, blob_id: int, location: str):
    dialect = sqlite if ctx.db.is_sqlite else postgresql
    return (dialect.insert(BlobPlacement).values(blob_id=blob_id, location=location)
            .on_conflict_do_nothing(index_elements=[BlobPlacement.blob_id, BlobPlacement.location]))


async def _record(ctx, blob: _Pending, target: BlobStore) -> bool:
    """Record the copy under the blob's row lock; if garbage collection removed the blob while
    we copied, remove the copy instead. True if the placement is (now) recorded by us."""
    async with ctx.db.write() as session:
        alive = await session.scalar(select(Blob.id).where(Blob.id == blob.id).with_for_update())
        if alive is not None:
            if await session.scalar(select(exists().where(BlobDeletion.digest == blob.digest))):
                return False  # an orphan cleanup owns this digest right now: retry next pass
            result = await session.execute(_insert_ignoring_duplicate(ctx, blob.id, target.name))
            return result.rowcount == 1
    # Gone: our copy is an orphan unless the digest was pushed again meanwhile, in which case
    # delete_orphan_object leaves it (it may be that row's bytes already).
    try:
        if await delete_orphan_object(ctx, target.name, blob.digest):
            log.info("blob %s was garbage collected while being copied to %s; copy removed",
                     blob.digest, target.name)
    except StorageError as err:
        log.warning("could not remove orphan copy of %s from %s: %s", blob.digest, target.name, err)
    return False
