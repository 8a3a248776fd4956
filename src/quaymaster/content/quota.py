"""Storage quotas per namespace (Quay's FEATURE_QUOTA_MANAGEMENT): usage, limits, push checks.

Usage is never stored. It is one query over the blob links of the namespace's live repositories,
so it is exact right after a push, a tag deletion or a garbage collection, with no totals to
backfill or let drift. A blob counts once per namespace, however many manifests and
repositories share it; blobs only claimed by an upload (no manifest yet) do not count.

A quota has a size and limits: a Warning or Reject threshold at a percentage of the size. With no
quota, `DEFAULT_SYSTEM_REJECT_QUOTA_BYTES` (when not 0) acts as a Reject limit at 100%.
"""

from dataclasses import dataclass, field

from sqlalchemy import delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts.models import User
from quaymaster.content.errors import ContentError
from quaymaster.content.models import (
    Blob,
    ManifestBlob,
    Quota,
    QuotaLimit,
    Repository,
    RepositoryState,
)

WARNING = "Warning"
REJECT = "Reject"
LIMIT_KINDS = (WARNING, REJECT)


class QuotaError(Exception):
    """A quota or limit change the rules refuse (the API answers 400)."""


class QuotaExceeded(ContentError):
    """A push that would take the namespace over its Reject limit (the registry answers 403 DENIED)."""

    def __init__(self, namespace: str | None, detail: dict | None = None):
        where = f" {namespace}" if namespace else ""
        super().__init__("DENIED", f"Quota has been exceeded on namespace{where}", detail)


def enforced(settings) -> bool:
    """Whether pushes are checked against quotas."""
    return bool(settings.FEATURE_QUOTA_MANAGEMENT and settings.FEATURE_VERIFY_QUOTA)


# --- usage ------------------------------------------------------------------------------------

def _namespace_blob_ids(namespace_id: int):
    """Ids of the blobs the namespace's live repositories reference (repository index, then the
    covering (repository_id, blob_id) index of manifestblob)."""
    return (select(ManifestBlob.blob_id)
            .join(Repository, Repository.id == ManifestBlob.repository_id)
            .where(Repository.namespace_user_id == namespace_id,
                   Repository.state != RepositoryState.MARKED_FOR_DELETION))


async def namespace_usage(session: AsyncSession, namespace_id: int) -> int:
    """Bytes of the distinct blobs referenced by manifests in the namespace's live repositories."""
    total = await session.scalar(select(func.coalesce(func.sum(Blob.size), 0))
                                 .where(Blob.id.in_(_namespace_blob_ids(namespace_id))))
    return int(total or 0)


async def repository_usage(session: AsyncSession, repository_id: int) -> int:
    """Bytes of the distinct blobs referenced by manifests in one repository."""
    blob_ids = select(ManifestBlob.blob_id).where(ManifestBlob.repository_id == repository_id)
    total = await session.scalar(select(func.coalesce(func.sum(Blob.size), 0)).where(Blob.id.in_(blob_ids)))
    return int(total or 0)


async def _uncounted_bytes(session: AsyncSession, namespace_id: int, blob_ids: list[int]) -> int:
    """Bytes of those blobs the namespace does not reference yet (each blob once)."""
    if not blob_ids:
        return 0
    counted = exists().where(
        ManifestBlob.blob_id == Blob.id, Repository.id == ManifestBlob.repository_id,
        Repository.namespace_user_id == namespace_id,
        Repository.state != RepositoryState.MARKED_FOR_DELETION)
    total = await session.scalar(select(func.coalesce(func.sum(Blob.size), 0))
                                 .where(Blob.id.in_(sorted(set(blob_ids))), ~counted))
    return int(total or 0)


# --- quotas and limits ------------------------------------------------------------------------

MAX_LIMIT_BYTES = 2**63 - 1  # the column is a signed 64-bit integer


def _check_limit_bytes(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_LIMIT_BYTES:
        raise QuotaError(f"Invalid quota size limit value: '{value}'")
    return value


def _check_kind(value) -> str:
    for kind in LIMIT_KINDS:
        if isinstance(value, str) and value.lower() == kind.lower():
            return kind
    raise QuotaError(f"Invalid quota limit type '{value}': use Warning or Reject")


def _check_percent(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise QuotaError(f"Invalid quota limit percentage '{value}': use a whole number from 1 to 100")
    return value


async def get_quota(session: AsyncSession, namespace_id: int) -> Quota | None:
    """The namespace's quota (Quay allows one per namespace)."""
    return await session.scalar(select(Quota).where(Quota.namespace_id == namespace_id))


async def quota_by_id(session: AsyncSession, namespace_id: int, quota_id: int) -> Quota | None:
    return await session.scalar(select(Quota).where(Quota.id == quota_id, Quota.namespace_id == namespace_id))


async def create_quota(session: AsyncSession, namespace: User, limit_bytes: int) -> Quota:
    _check_limit_bytes(limit_bytes)
    if await get_quota(session, namespace.id) is not None:
        raise QuotaError(f"Quota for '{namespace.username}' already exists")
    quota = Quota(namespace_id=namespace.id, limit_bytes=limit_bytes)
    session.add(quota)
    await session.flush()
    return quota


async def set_limit_bytes(session: AsyncSession, quota: Quota, limit_bytes: int) -> None:
    quota.limit_bytes = _check_limit_bytes(limit_bytes)
    await session.flush()


async def delete_quota(session: AsyncSession, quota: Quota) -> None:
    await session.execute(delete(QuotaLimit).where(QuotaLimit.quota_id == quota.id))
    await session.delete(quota)
    await session.flush()


async def forget_namespace(session: AsyncSession, namespace_id: int) -> None:
    """Drop the namespace's quota and limits (before the namespace row itself is deleted)."""
    quota = await get_quota(session, namespace_id)
    if quota is not None:
        await delete_quota(session, quota)


async def list_limits(session: AsyncSession, quota_id: int) -> list[QuotaLimit]:
    return list((await session.scalars(
        select(QuotaLimit).where(QuotaLimit.quota_id == quota_id).order_by(QuotaLimit.id))).all())


async def limit_by_id(session: AsyncSession, quota_id: int, limit_id: int) -> QuotaLimit | None:
    return await session.scalar(select(QuotaLimit).where(QuotaLimit.id == limit_id, QuotaLimit.quota_id == quota_id))


async def _check_limit_fits(session: AsyncSession, quota_id: int, kind: str, percent: int,
                            replacing: int | None = None) -> None:
    """No two limits of the same kind and percentage, and at most one Reject limit."""
    for other in await list_limits(session, quota_id):
        if other.id == replacing:
            continue
        if other.kind == kind and other.percent == percent:
            raise QuotaError("Quota limit already exists")
        if kind == REJECT and other.kind == REJECT:
            raise QuotaError("Only one quota limit of type 'Reject' allowed.")


async def add_limit(session: AsyncSession, quota: Quota, kind: str, percent: int) -> QuotaLimit:
    kind, percent = _check_kind(kind), _check_percent(percent)
    await _check_limit_fits(session, quota.id, kind, percent)
    limit = QuotaLimit(quota_id=quota.id, kind=kind, percent=percent)
    session.add(limit)
    await session.flush()
    return limit


async def change_limit(session: AsyncSession, limit: QuotaLimit, kind: str | None = None,
                       percent: int | None = None) -> None:
    new_kind = limit.kind if kind is None else _check_kind(kind)
    new_percent = limit.percent if percent is None else _check_percent(percent)
    await _check_limit_fits(session, limit.quota_id, new_kind, new_percent, replacing=limit.id)
    limit.kind, limit.percent = new_kind, new_percent
    await session.flush()


async def delete_limit(session: AsyncSession, limit: QuotaLimit) -> None:
    await session.delete(limit)
    await session.flush()


# --- thresholds and checks --------------------------------------------------------------------

@dataclass(frozen=True)
class Thresholds:
    """What applies to a namespace: its quota size (or the system default) and the limits on it."""

    limit_bytes: int | None = None
    reject_percent: int | None = None
    warning_percents: tuple[int, ...] = ()
    system_default: bool = False

    @property
    def reject_bytes(self) -> int | None:
        if self.limit_bytes is None or self.reject_percent is None:
            return None
        return self.limit_bytes * self.reject_percent // 100

    def over(self, usage: int, percent: int) -> bool:
        """usage > percent% of the quota, in exact integer arithmetic."""
        return self.limit_bytes is not None and usage * 100 > self.limit_bytes * percent

    def rejects(self, usage: int) -> bool:
        return self.reject_percent is not None and self.over(usage, self.reject_percent)


async def thresholds(session: AsyncSession, namespace_id: int, default_reject_bytes: int = 0) -> Thresholds:
    quota = await get_quota(session, namespace_id)
    if quota is None:
        if default_reject_bytes > 0:
            return Thresholds(default_reject_bytes, 100, (), system_default=True)
        return Thresholds()
    limits = await list_limits(session, quota.id)
    rejects = [limit.percent for limit in limits if limit.kind == REJECT]
    warnings = sorted({limit.percent for limit in limits if limit.kind == WARNING})
    return Thresholds(quota.limit_bytes, min(rejects) if rejects else None, tuple(warnings))


@dataclass(frozen=True)
class PushCheck:
    """The outcome of an accepted push: usage before and after, and Warning limits it crossed."""

    namespace_id: int
    usage_before: int = 0
    usage_after: int = 0
    limit_bytes: int | None = None
    warnings_crossed: tuple[int, ...] = field(default_factory=tuple)


async def _lock_namespace(session: AsyncSession, namespace_id: int) -> None:
    """Serialize quota checks of one namespace (PostgreSQL row lock that still lets rows pointing
    at the namespace be inserted; SQLite writers are serial anyway)."""
    await session.execute(select(User.id).where(User.id == namespace_id).with_for_update(key_share=True))


async def check_push(session: AsyncSession, namespace_id: int, new_blob_ids: list[int], *,
                     default_reject_bytes: int = 0, namespace: str | None = None) -> PushCheck:
    """Refuse (QuotaExceeded) a manifest whose blobs would take the namespace over its Reject limit.

    Call it in the transaction that stores the manifest: it locks the namespace so concurrent
    pushes into several of its repositories cannot each pass on their own and together exceed."""
    limits = await thresholds(session, namespace_id, default_reject_bytes)
    if limits.limit_bytes is None or (limits.reject_percent is None and not limits.warning_percents):
        return PushCheck(namespace_id)
    await _lock_namespace(session, namespace_id)
    before = await namespace_usage(session, namespace_id)
    after = before + await _uncounted_bytes(session, namespace_id, new_blob_ids)
    if limits.rejects(after):
        raise QuotaExceeded(namespace, {"quota_bytes": limits.reject_bytes, "usage_bytes": before,
                                        "push_bytes": after - before})
    crossed = tuple(p for p in limits.warning_percents if not limits.over(before, p) and limits.over(after, p))
    return PushCheck(namespace_id, before, after, limits.limit_bytes, crossed)


async def check_upload(session: AsyncSession, namespace_id: int, *, default_reject_bytes: int = 0,
                       namespace: str | None = None) -> None:
    """Refuse a new blob upload while the namespace is at or over its Reject limit."""
    limits = await thresholds(session, namespace_id, default_reject_bytes)
    reject = limits.reject_bytes
    if reject is None:
        return
    usage = await namespace_usage(session, namespace_id)
    if usage * 100 >= limits.limit_bytes * limits.reject_percent:
        raise QuotaExceeded(namespace, {"quota_bytes": reject, "usage_bytes": usage})


async def guard_manifest(session: AsyncSession, settings, repo, blob_digests: list[str]) -> PushCheck | None:
    """The registry's check before storing a manifest in `repo` (None while quotas are not enforced).

    Digests that are not blobs are left for store_manifest to refuse."""
    if not enforced(settings):
        return None
    digests = sorted(set(blob_digests))
    ids = list(await session.scalars(select(Blob.id).where(Blob.digest.in_(digests)))) if digests else []
    return await check_push(session, repo.namespace_id, ids, namespace=repo.namespace,
                            default_reject_bytes=settings.DEFAULT_SYSTEM_REJECT_QUOTA_BYTES)


async def guard_upload(db, settings, repo) -> None:
    """The registry's check before a blob upload starts in `repo`."""
    if not enforced(settings):
        return
    async with db.read() as session:
        await check_upload(session, repo.namespace_id, namespace=repo.namespace,
                           default_reject_bytes=settings.DEFAULT_SYSTEM_REJECT_QUOTA_BYTES)


def record_warnings(audit, check: PushCheck | None, repo, *, performer_id: int | None, ip: str | None) -> None:
    """One action log entry per Warning limit a push crossed."""
    if check is None:
        return
    for percent in check.warnings_crossed:
        audit.record("quota_warning", account_id=check.namespace_id, performer_id=performer_id,
                     repository_id=repo.id, ip=ip,
                     metadata={"namespace": repo.namespace, "repo": repo.name, "threshold_percent": percent,
                               "limit_bytes": check.limit_bytes, "usage_bytes": check.usage_after})


async def quota_report(session: AsyncSession, namespace_id: int, default_reject_bytes: int = 0,
                       repository_id: int | None = None) -> dict:
    """Usage for API views: the namespace's (or one repository's) bytes against the namespace quota
    (the system default when no quota is set)."""
    usage = (await repository_usage(session, repository_id) if repository_id is not None
             else await namespace_usage(session, namespace_id))
    quota = await get_quota(session, namespace_id)
    configured = quota.limit_bytes if quota is not None else (default_reject_bytes or None)
    percent = round(usage * 100 / configured, 2) if configured else None
    return {"quota_bytes": usage, "configured_quota": configured, "percent_consumed": percent}


async def view_report(session: AsyncSession, settings, namespace_id: int,
                      repository_id: int | None = None) -> dict | None:
    """`quota_report` for the organization and repository API views; None while quotas are off."""
    if not settings.FEATURE_QUOTA_MANAGEMENT:
        return None
    return await quota_report(session, namespace_id, settings.DEFAULT_SYSTEM_REJECT_QUOTA_BYTES, repository_id)
