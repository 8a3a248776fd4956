"""The securityworker: hands new manifests to the scanner, as Quay's does.

A pass asks the indexer for its state (and does nothing when it cannot), picks candidates
(`service.candidates`), and POSTs each image manifest with its layers as URLs the scanner can
fetch: our own /v2 blob URL with a short-lived pull token for that repository (or a foreign
layer's own URL). Manifest lists are not indexed (their children are). The result is stored as
the manifest's status; failures are retried after SECURITY_SCANNER_V4_REINDEX_THRESHOLD, up to
SECURITY_SCANNER_MAX_SCAN_RETRIES times per scanner state. Then it asks the scanner to forget
manifests garbage collection removed."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from quaymaster.accounts.tokens import ANONYMOUS_SUBJECT
from quaymaster.oci import mediatypes as mt
from quaymaster.oci.errors import OCIError
from quaymaster.oci.manifest import parse_manifest
from quaymaster.secscan import service
from quaymaster.secscan.client import ClairClient, LayerRef, ScannerError
from quaymaster.secscan.models import IndexStatus

log = logging.getLogger(__name__)

LOCK = "securityworker"
LOCK_TTL_S = 3600.0  # one pass may index a batch of large images (the lock only saves duplicate work)
LAYER_TOKEN_LIFETIME_S = 300  # the scanner fetches layers at once; keep the pull token short
DELETION_BATCH = 50
DELETE_TIMEOUT_S = 10.0
SUPPORTED_LAYER_TYPES = frozenset({
    mt.DOCKER_LAYER, mt.OCI_LAYER_TAR, mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD,
    "application/vnd.docker.image.rootfs.diff.tar",
}) | mt.FOREIGN_LAYER_TYPES


@dataclass
class PassReport:
    state: str | None = None
    indexed: int = 0
    failed: int = 0
    unsupported: int = 0
    too_large: int = 0
    exhausted: int = 0
    forgotten: int = 0
    skipped: str | None = None  # why the pass did nothing
    errors: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.indexed + self.failed + self.unsupported + self.too_large + self.exhausted

    def describe(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        return (f"{self.indexed} indexed, {self.failed} failed, {self.exhausted} out of retries, "
                f"{self.unsupported} unsupported, {self.too_large} with a layer too large, "
                f"{self.forgotten} index reports deleted")


class SigningKey:
    """A standalone worker process registers its instance key itself, so the registry accepts the
    layer tokens it mints; refreshed like the server's."""

    def __init__(self) -> None:
        self.checked_at: float | None = None

    async def ensure(self, ctx) -> None:
        every = ctx.settings.INSTANCE_SERVICE_KEY_REFRESH * 60
        if self.checked_at is not None and time.monotonic() - self.checked_at < every:
            return
        from quaymaster.accounts.service import AccountError
        from quaymaster.superuser import service as superuser

        async with ctx.db.read() as session:
            try:
                await superuser.require_key(session, ctx.keys.kid)
                present = True
            except AccountError:
                present = False
        if present:
            await ctx.keys.refresh()
        else:
            await ctx.keys.register()
        self.checked_at = time.monotonic()


def _layers(ctx, candidate: service.Candidate, parsed) -> list[LayerRef]:
    settings = ctx.settings
    repo_path = f"{candidate.namespace}/{candidate.repository}"
    token = ctx.keys.issue(ANONYMOUS_SUBJECT, [{"type": "repository", "name": repo_path, "actions": ["pull"]}],
                           {"version": 2, "kind": "secscan", "entity_kind": "secscan"},
                           lifetime_s=LAYER_TOKEN_LIFETIME_S)
    layers = []
    for layer in parsed.layers:
        if mt.is_foreign_layer(layer.media_type) and layer.urls:
            layers.append(LayerRef(layer.digest, layer.urls[0], {}, layer.media_type))
            continue
        uri = f"{settings.base_url}/v2/{repo_path}/blobs/{layer.digest}"
        layers.append(LayerRef(layer.digest, uri, {"Authorization": [f"Bearer {token}"],
                                                   "Accept": ["application/gzip"]}, layer.media_type))
    return layers


def _unsupported(candidate: service.Candidate):
    """The parsed manifest if the scanner can read it, else why not."""
    if candidate.media_type in mt.INDEX_TYPES:
        return None, "manifest list"
    try:
        parsed = parse_manifest(candidate.manifest_bytes, candidate.media_type, len(candidate.manifest_bytes))
    except OCIError as exc:
        return None, f"unparsable manifest: {exc}"
    if parsed.is_index:
        return None, "manifest list"
    if parsed.config is None or parsed.config.media_type not in mt.IMAGE_CONFIG_TYPES:
        return None, "not a container image (artifact)"
    if not parsed.layers or any(layer.media_type not in SUPPORTED_LAYER_TYPES for layer in parsed.layers):
        return None, "no container layers"
    return parsed, None


async def index_one(ctx, client: ClairClient, candidate: service.Candidate, state: str,
                    report: PassReport) -> None:
    settings = ctx.settings
    parsed, reason = _unsupported(candidate)

    async def save(status: IndexStatus, **kwargs) -> None:
        async with ctx.db.write() as session:
            await service.record(session, candidate.manifest_id, candidate.repository_id, status, **kwargs)

    if parsed is None:
        await save(IndexStatus.MANIFEST_UNSUPPORTED, indexer_hash=state, metadata={"reason": reason})
        report.unsupported += 1
        return
    limit = settings.scanner_max_layer_bytes
    if limit is not None and any(layer.size > limit for layer in parsed.layers):
        await save(IndexStatus.MANIFEST_LAYER_TOO_LARGE, indexer_hash=state)
        report.too_large += 1
        return
    # Failures count per scanner state: a new scanner set gets fresh retries.
    previous = candidate.status.metadata_json if candidate.status is not None else None
    failures = 0
    if isinstance(previous, dict) and previous.get("state") == state:
        failures = int(previous.get("failures", 0))
    error: dict | None = None
    etag = state
    try:
        index_report, etag = await client.index(candidate.digest, _layers(ctx, candidate, parsed))
    except ScannerError as exc:
        error = {"reason": exc.kind, "message": str(exc)[:1000]}
    else:
        if index_report["state"] == "IndexFinished" and index_report["success"] is not False:
            await save(IndexStatus.COMPLETED, indexer_hash=etag)
            report.indexed += 1
            log.info("securityworker: indexed %s (%s/%s)", candidate.digest, candidate.namespace,
                     candidate.repository)
            return
        reason = "index_error" if index_report["state"] == "IndexError" else "unknown_state"
        error = {"reason": reason, "message": (index_report.get("err") or index_report["state"])[:1000]}
    failures += 1
    exhausted = failures >= settings.SECURITY_SCANNER_MAX_SCAN_RETRIES
    await save(IndexStatus.SCAN_RETRIES_EXHAUSTED if exhausted else IndexStatus.FAILED, indexer_hash=etag,
               error=error, metadata={"state": state, "failures": failures})
    if exhausted:
        report.exhausted += 1
    else:
        report.failed += 1
    report.errors.append(f"{candidate.digest}: {error['message']}")
    log.warning("securityworker: indexing %s failed (%d/%d): %s", candidate.digest, failures,
                settings.SECURITY_SCANNER_MAX_SCAN_RETRIES, error["message"])


async def forget_deleted(ctx, client: ClairClient, report: PassReport) -> None:
    """Ask the scanner to delete index reports of manifests garbage collection removed."""
    async with ctx.db.read() as session:
        queued = await service.queued_deletions(session, DELETION_BATCH)
    done: set[str] = set()
    for _, digest, held in queued:
        if digest in done:
            continue
        if not held and ctx.settings.SECURITY_SCANNER_V4_MANIFEST_CLEANUP:
            try:
                await client.delete_index_report(digest, timeout=DELETE_TIMEOUT_S)
            except ScannerError as exc:
                log.warning("securityworker: could not delete the index report of %s: %s; will retry",
                            digest, exc)
                return  # the scanner is struggling: try the rest next pass
            report.forgotten += 1
        async with ctx.db.write() as session:
            await service.drop_deletions(session, digest)
        done.add(digest)


async def index_pass(ctx, client: ClairClient, signing_key: SigningKey | None = None,
                     limit: int | None = None) -> PassReport:
    """One pass; never raises for scanner trouble (that is reported and retried)."""
    settings = ctx.settings
    report = PassReport()
    try:
        report.state = await client.index_state(timeout=30.0)
    except ScannerError as exc:
        report.skipped = f"the scanner's index_state is unavailable ({exc})"
        log.warning("securityworker: %s; skipping this pass", report.skipped)
        return report
    limit = limit or settings.SECURITY_SCANNER_V4_BATCH_SIZE
    async with ctx.db.read() as session:
        found = await service.candidates(session, report.state, settings.SECURITY_SCANNER_V4_REINDEX_THRESHOLD,
                                         limit)
    if found and signing_key is not None:
        await signing_key.ensure(ctx)
    for candidate in found:
        await index_one(ctx, client, candidate, report.state, report)
    await forget_deleted(ctx, client, report)
    return report


def build(ctx):
    """The Worker for workers.py: one client for the worker's life, woken by pushes."""
    from quaymaster.workers import Worker

    client = service.new_client(ctx.settings)
    signing_key = SigningKey()
    batch = ctx.settings.SECURITY_SCANNER_V4_BATCH_SIZE

    async def run_once() -> bool:
        report = await index_pass(ctx, client, signing_key, batch)
        if report.handled or report.forgotten:
            log.info("securityworker: %s", report.describe())
        # A full batch means more may be waiting; failures wait for the threshold anyway.
        return report.skipped is None and report.handled >= batch

    return Worker("securityworker", run_once, float(ctx.settings.SECURITY_SCANNER_INDEXING_INTERVAL), LOCK,
                  LOCK_TTL_S, wake_channel="manifests")


async def run_once_cli(ctx) -> PassReport:
    """`quaymaster worker securityworker --once`: one pass with a client of its own."""
    async with service.new_client(ctx.settings) as client:
        return await index_pass(ctx, client, SigningKey())
