"""Operations on the secscan tables (the only code that writes them), the scanner client a
process shares, and the on-demand, briefly cached vulnerability reports pages and the API show.

Reads join the content tables (manifest, repository) directly: choosing what to index is one
query over both, as in Quay; nothing here writes them."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts.models import User
from quaymaster.content.models import Manifest, Repository, RepositoryState
from quaymaster.db.base import utcnow
from quaymaster.secscan import report as reports
from quaymaster.secscan.client import ClairClient, NotReady, ScannerError
from quaymaster.secscan.models import IndexStatus, ManifestSecurityStatus, SecscanIndexDeletion
from quaymaster.settings import Settings

log = logging.getLogger(__name__)

REPORT_CACHE_S = 30.0  # a vulnerability report is reused this long (pages, API, tags column)
UNAVAILABLE_CACHE_S = 10.0  # a scanner that failed is not asked again for this long, per manifest
PAGE_TIMEOUT_S = 2.0  # pages never wait longer than this on the scanner
API_TIMEOUT_S = 20.0

# Quay's API words for each stored status.
API_STATUS = {
    IndexStatus.COMPLETED: "scanned",
    IndexStatus.IN_PROGRESS: "queued",
    IndexStatus.FAILED: "failed",
    IndexStatus.SCAN_RETRIES_EXHAUSTED: "failed",
    IndexStatus.MANIFEST_UNSUPPORTED: "unsupported",
    IndexStatus.MANIFEST_LAYER_TOO_LARGE: "manifest_layer_too_large",
}


def enabled(settings: Settings) -> bool:
    return bool(settings.FEATURE_SECURITY_SCANNER and settings.SECURITY_SCANNER_V4_ENDPOINT)


# --- the shared client -------------------------------------------------------------------------

_clients: dict[tuple, ClairClient] = {}


def _verify(settings: Settings):
    """System CAs, the environment's bundles, and the config dir's extra_ca_certs/."""
    from quaymaster.settings.tls import client_ssl_context, read_extra_ca_certs

    config_dir = settings.__dict__.get("config_dir")
    extra = read_extra_ca_certs(config_dir) if config_dir else []
    return client_ssl_context(extra)


def new_client(settings: Settings, **kwargs: Any) -> ClairClient:
    endpoint = settings.SECURITY_SCANNER_V4_ENDPOINT or ""
    verify = _verify(settings) if endpoint.startswith("https:") else True
    return ClairClient(endpoint, settings.SECURITY_SCANNER_V4_PSK, verify=verify, **kwargs)


def shared_client(settings: Settings) -> ClairClient:
    """One client (one connection pool) per event loop and scanner configuration."""
    loop = asyncio.get_running_loop()
    for key in [k for k in _clients if k[0].is_closed()]:
        _clients.pop(key, None)  # a finished loop's pool cannot be used again
    key = (loop, settings.SECURITY_SCANNER_V4_ENDPOINT, settings.SECURITY_SCANNER_V4_PSK)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = new_client(settings, timeout=API_TIMEOUT_S)
    return client


# --- status rows -----------------------------------------------------------------------------

async def status_of(session: AsyncSession, manifest_id: int) -> ManifestSecurityStatus | None:
    return await session.scalar(select(ManifestSecurityStatus).where(ManifestSecurityStatus.manifest_id == manifest_id))


async def statuses_for(session: AsyncSession, manifest_ids: list[int]) -> dict[int, ManifestSecurityStatus]:
    if not manifest_ids:
        return {}
    rows = await session.scalars(select(ManifestSecurityStatus).where(
        ManifestSecurityStatus.manifest_id.in_(manifest_ids)))
    return {row.manifest_id: row for row in rows}


@dataclass(frozen=True)
class Candidate:
    manifest_id: int
    repository_id: int
    digest: str
    media_type: str
    manifest_bytes: bytes
    namespace: str
    repository: str
    status: ManifestSecurityStatus | None


async def candidates(session: AsyncSession, current_hash: str, reindex_threshold_s: int, limit: int,
                     now: datetime | None = None) -> list[Candidate]:
    """Manifests to index now: never seen (newest first, so a push is indexed promptly), then
    FAILED ones and ones indexed by an older scanner set, once older than the threshold."""
    cutoff = (now or utcnow()) - timedelta(seconds=reindex_threshold_s)
    base = (select(Manifest.id, Manifest.repository_id, Manifest.digest, Manifest.media_type,
                   Manifest.manifest_bytes, User.username, Repository.name)
            .join(Repository, Repository.id == Manifest.repository_id)
            .join(User, User.id == Repository.namespace_user_id)
            .where(Repository.state != int(RepositoryState.MARKED_FOR_DELETION)))
    fresh = await session.execute(base.where(~exists().where(ManifestSecurityStatus.manifest_id == Manifest.id))
                                  .order_by(Manifest.id.desc()).limit(limit))
    found = [Candidate(*row, None) for row in fresh]
    if len(found) < limit:
        S = ManifestSecurityStatus
        stale = or_(
            S.index_status == int(IndexStatus.FAILED),
            and_(S.index_status.in_([int(IndexStatus.COMPLETED), int(IndexStatus.SCAN_RETRIES_EXHAUSTED),
                                     int(IndexStatus.IN_PROGRESS)]),
                 S.indexer_hash != current_hash),
        )
        rows = await session.execute(
            base.add_columns(S).join(S, S.manifest_id == Manifest.id)
            .where(stale, S.last_indexed <= cutoff).order_by(S.last_indexed).limit(limit - len(found)))
        found += [Candidate(*row) for row in rows]
    return found


async def record(session: AsyncSession, manifest_id: int, repository_id: int, status: IndexStatus, *,
                 indexer_hash: str = "", error: dict | None = None, metadata: dict | None = None) -> None:
    row = await status_of(session, manifest_id)
    if row is None:
        if not await session.scalar(select(exists().where(Manifest.id == manifest_id))):
            return  # collected while the scanner worked on it
        row = ManifestSecurityStatus(manifest_id=manifest_id, repository_id=repository_id)
        session.add(row)
    row.index_status = int(status)
    row.indexer_hash = indexer_hash
    row.error_json = error
    row.metadata_json = metadata
    row.last_indexed = utcnow()
    row.indexer_version = 4
    await session.flush()


async def reset(session: AsyncSession, manifest_id: int) -> None:
    """Forget a status so the worker indexes the manifest again (the scanner lost its report)."""
    await session.execute(delete(ManifestSecurityStatus).where(ManifestSecurityStatus.manifest_id == manifest_id))


async def forget_manifests(session: AsyncSession, manifest_ids: list[int]) -> None:
    """Garbage collection is deleting these manifests (in this transaction): drop their status rows
    and queue the digests the scanner indexed, so it can forget them too."""
    if not manifest_ids:
        return
    digests = (await session.scalars(
        select(Manifest.digest).join(ManifestSecurityStatus, ManifestSecurityStatus.manifest_id == Manifest.id)
        .where(Manifest.id.in_(manifest_ids),
               ManifestSecurityStatus.index_status.in_([int(IndexStatus.COMPLETED), int(IndexStatus.FAILED),
                                                        int(IndexStatus.SCAN_RETRIES_EXHAUSTED),
                                                        int(IndexStatus.IN_PROGRESS)])))).all()
    for digest in set(digests):
        session.add(SecscanIndexDeletion(digest=digest))
    await session.execute(delete(ManifestSecurityStatus).where(ManifestSecurityStatus.manifest_id.in_(manifest_ids)))


async def queued_deletions(session: AsyncSession, limit: int) -> list[tuple[int, str, bool]]:
    """(row id, digest, still held by some manifest) for queued index-report deletions."""
    held = exists().where(Manifest.digest == SecscanIndexDeletion.digest)
    rows = await session.execute(select(SecscanIndexDeletion.id, SecscanIndexDeletion.digest, held)
                                 .order_by(SecscanIndexDeletion.id).limit(limit))
    return [(r[0], r[1], bool(r[2])) for r in rows]


async def drop_deletions(session: AsyncSession, digest: str) -> None:
    await session.execute(delete(SecscanIndexDeletion).where(SecscanIndexDeletion.digest == digest))


# --- vulnerability reports, on demand ---------------------------------------------------------

@dataclass
class SecurityInfo:
    """What the API and pages show for one manifest: Quay's status word and, once scanned, the
    translated report. `unavailable` is set when the scanner could not be asked just now."""

    status: str
    layer: dict | None = None
    unavailable: str | None = None


_report_cache: dict[tuple[str, str], tuple[float, Any]] = {}
REPORT_CACHE_MAX = 512


def _cache_get(key: tuple[str, str]) -> Any:
    hit = _report_cache.get(key)
    if hit is None or hit[0] < time.monotonic():
        _report_cache.pop(key, None)
        return None
    return hit[1]


def _cache_put(key: tuple[str, str], value: Any, ttl: float) -> None:
    if len(_report_cache) >= REPORT_CACHE_MAX:
        now = time.monotonic()
        for stale in [k for k, v in _report_cache.items() if v[0] < now] or list(_report_cache)[:64]:
            _report_cache.pop(stale, None)
    _report_cache[key] = (time.monotonic() + ttl, value)


def clear_cache() -> None:
    _report_cache.clear()


async def security_info(ctx, manifest: Manifest, *, timeout: float = API_TIMEOUT_S) -> SecurityInfo:
    """The security information of a manifest: from its status row, and for scanned ones the
    scanner's current vulnerability report (cached briefly, per process)."""
    async with ctx.db.read() as session:
        row = await status_of(session, manifest.id)
    if row is None:
        return SecurityInfo("queued")
    status = API_STATUS.get(row.index_status, "failed")
    if status != "scanned":
        return SecurityInfo(status)
    key = (ctx.settings.SECURITY_SCANNER_V4_ENDPOINT or "", manifest.digest)
    cached = _cache_get(key)
    if cached is None:
        cached = await _fetch_report(ctx, manifest, timeout)
        ttl = UNAVAILABLE_CACHE_S if isinstance(cached, Exception) else REPORT_CACHE_S
        _cache_put(key, cached, ttl)
    if isinstance(cached, ScannerError):
        return SecurityInfo("scanned", unavailable=str(cached))
    if isinstance(cached, (NotReady, LookupError)):
        return SecurityInfo("queued")
    return SecurityInfo("scanned", layer=cached)


async def _fetch_report(ctx, manifest: Manifest, timeout: float) -> Any:
    """The translated report, or the exception that explains why there is none."""
    client = shared_client(ctx.settings)
    try:
        body = await asyncio.wait_for(client.vulnerability_report(manifest.digest, timeout=timeout), timeout)
    except NotReady as exc:
        return exc
    except TimeoutError:
        return ScannerError("server_error", f"the scanner did not answer within {timeout:.0f}s")
    except ScannerError as exc:
        log.warning("vulnerability report for %s: %s", manifest.digest, exc)
        return exc
    if body is None:
        # The scanner lost the index (a reset, or another registry's cleanup): index again.
        async with ctx.db.write() as session:
            await reset(session, manifest.id)
        return LookupError(manifest.digest)
    try:
        return reports.features_for(body)
    except (KeyError, IndexError, TypeError, ValueError) as exc:  # checked already; belt and braces
        return ScannerError("api_failure", f"unusable vulnerability report: {exc}")
