"""The mirror worker: claim each due configuration, sync it with skopeo, release it.

One sync: `skopeo list-tags` on the source, keep the tags matching any glob, `skopeo copy --all`
each of them into this registry as the mirror robot (through /v2, like any client, so pushes
take the normal path: verification, quotas, events), then end the local tags that are not in the
matched set. Between tags the worker renews its lease, which is also how it learns that the
sync was cancelled. With an architecture filter, an index whose platforms are not all wanted is
copied child by child (by digest) and a filtered index listing only the wanted platforms is
pushed in its place, so its digest differs from the source's; an index where every platform is
wanted, and every single-platform image, keeps its digest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from quaymaster.content import service as content
from quaymaster.content import tags as content_tags
from quaymaster.content.errors import ContentError
from quaymaster.mirroring import service
from quaymaster.mirroring.client import RegistryClientError, push_manifest
from quaymaster.mirroring.models import MirrorStatus
from quaymaster.mirroring.service import SyncJob
from quaymaster.mirroring.skopeo import Skopeo, SkopeoError, find_skopeo, subprocess_env, workspace
from quaymaster.oci import mediatypes as mt
from quaymaster.oci.digest import is_digest

if TYPE_CHECKING:
    from quaymaster.context import AppContext

log = logging.getLogger(__name__)

DUE_BATCH = 20
LOCAL_TAG_PAGE = 500


@dataclass
class SyncResult:
    """What one sync did, for the log and `quaymaster repomirror --once`."""

    path: str
    status: MirrorStatus
    synced: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    message: str = ""

    def line(self) -> str:
        parts = [f"{len(self.synced)} tag(s) synced", f"{len(self.deleted)} deleted"]
        if self.failed:
            parts.append(f"failed: {', '.join(self.failed)}")
        text = f"{self.path}: {self.status.name} ({'; '.join(parts)})"
        return f"{text}: {self.message}" if self.message and self.status != MirrorStatus.SUCCESS else text


@dataclass(frozen=True)
class Destination:
    """Where the robot pushes: this registry as REPO_MIRROR_SERVER_HOSTNAME or SERVER_HOSTNAME."""

    host: str
    scheme: str
    verify_tls: bool

    @property
    def skopeo_verify(self) -> bool:
        # Over plain HTTP skopeo must be told not to insist on TLS (it then falls back to HTTP).
        return self.verify_tls and self.scheme == "https"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"


def destination(ctx: AppContext) -> Destination:
    s = ctx.settings
    return Destination(s.REPO_MIRROR_SERVER_HOSTNAME or s.SERVER_HOSTNAME, s.PREFERRED_URL_SCHEME,
                       s.REPO_MIRROR_TLS_VERIFY)


def _extra_ca_certs(ctx: AppContext) -> list[bytes]:
    from quaymaster.settings.tls import read_extra_ca_certs

    config_dir = getattr(ctx.settings, "config_dir", None)
    return read_extra_ca_certs(config_dir) if config_dir else []


def _audit(ctx: AppContext, kind: str, job: SyncJob, **metadata) -> None:
    ctx.audit.record(kind, account_id=job.namespace_id, performer_id=job.robot_id, repository_id=job.repository_id,
                     metadata={"namespace": job.namespace, "repo": job.repository, **metadata})


class Cancelled(Exception):
    """The sync was cancelled through the API (or the lease was taken over) mid-way."""


async def _still_ours(ctx: AppContext, job: SyncJob) -> None:
    async with ctx.db.write() as session:
        if not await service.renew_lease(session, job.config_id, job.transaction_id, job.timeout_s):
            raise Cancelled()


def _is_index(doc: dict) -> bool:
    return doc.get("mediaType") in mt.INDEX_TYPES or ("manifests" in doc and "layers" not in doc)


async def _copy_tag(ctx: AppContext, job: SyncJob, skopeo: Skopeo, tag: str, dest: Destination,
                    src_auth, dest_auth) -> None:
    src = f"{job.external_reference}:{tag}"
    target = f"{dest.host}/{job.path}"
    if job.architectures:
        raw = await skopeo.inspect_raw(src, src_auth, job.verify_tls)
        try:
            doc = json.loads(raw)
        except ValueError:
            raise SkopeoError(f"the source's manifest for {tag} is not JSON") from None
        if isinstance(doc, dict) and _is_index(doc):
            children = [m for m in doc.get("manifests") or [] if isinstance(m, dict)]
            if not all(isinstance(m.get("digest"), str) and is_digest(m["digest"]) for m in children):
                raise SkopeoError(f"the source's index for {tag} lists an invalid digest")
            wanted = [m for m in children if (m.get("platform") or {}).get("architecture") in job.architectures]
            if not wanted:
                raise SkopeoError(f"the index has no image for {', '.join(job.architectures)}")
            if len(wanted) < len(children):
                for child in wanted:
                    digest = child["digest"]
                    await skopeo.copy(f"{job.external_reference}@{digest}", f"{target}@{digest}",
                                      src_authfile=src_auth, dest_authfile=dest_auth, src_verify=job.verify_tls,
                                      dest_verify=dest.skopeo_verify, all_images=False)
                filtered = {**doc, "manifests": wanted}
                media_type = doc.get("mediaType") or mt.OCI_INDEX
                verify: bool | ssl.SSLContext = dest.skopeo_verify
                if verify and skopeo.cert_dir is not None:
                    from quaymaster.settings.tls import client_ssl_context

                    verify = client_ssl_context(_extra_ca_certs(ctx))
                try:
                    await push_manifest(dest.base_url, job.path, tag, json.dumps(filtered).encode(), media_type,
                                        username=job.robot_username or "", password=job.robot_token or "",
                                        verify=verify)
                except (RegistryClientError, httpx.HTTPError) as exc:
                    raise SkopeoError(str(exc)) from None
                return
    await skopeo.copy(src, f"{target}:{tag}", src_authfile=src_auth, dest_authfile=dest_auth,
                      src_verify=job.verify_tls, dest_verify=dest.skopeo_verify, all_images=True)


async def _local_tags(ctx: AppContext, repository_id: int) -> list[str]:
    names: list[str] = []
    last = None
    async with ctx.db.read() as session:
        while True:
            page = await content.list_tags(session, repository_id, last=last, limit=LOCAL_TAG_PAGE)
            names += page
            if len(page) < LOCAL_TAG_PAGE:
                return names
            last = page[-1]


async def _delete_obsolete(ctx: AppContext, job: SyncJob, keep: set[str]) -> tuple[list[str], list[str]]:
    """End the local tags the source no longer offers; returns (deleted, refused)."""
    deleted, refused = [], []
    for name in await _local_tags(ctx, job.repository_id):
        if name in keep:
            continue
        try:
            async with ctx.db.write() as session:
                await content.lock_repository(session, job.repository_id)
                ended = await content.delete_tag(session, job.repository_id, name)
        except ContentError as exc:  # an immutable tag stays
            log.warning("mirror %s: cannot delete tag %s: %s", job.path, name, exc.message)
            refused.append(name)
            continue
        if ended is not None:
            deleted.append(name)
            _audit(ctx, "delete_tag", job, tag=name, username=job.robot_username, via="mirror")
    return deleted, refused


async def _digest_of(ctx: AppContext, repository_id: int, tag: str) -> str | None:
    async with ctx.db.read() as session:
        return await content_tags.alive_digest(session, repository_id, tag)


async def run_sync(ctx: AppContext, job: SyncJob) -> SyncResult:
    """Sync one claimed configuration; never raises for a sync problem (it becomes FAIL)."""
    result = SyncResult(job.path, MirrorStatus.FAIL)
    patterns = ",".join(job.globs)
    _audit(ctx, "repo_mirror_sync_started", job, message=f"'{job.external_reference}' with tag pattern "
           f"'{patterns}'", external_reference=job.external_reference, tags=patterns)
    if job.problem:
        result.message = job.problem
        _audit(ctx, "repo_mirror_sync_failed", job, message=job.problem, tags=patterns)
        return result
    dest = destination(ctx)
    try:
        binary = find_skopeo()
        with workspace(_extra_ca_certs(ctx)) as (workdir, cert_dir):
            env = subprocess_env(job.proxy, workdir, extra_no_proxy=[dest.host, dest.host.rsplit(":", 1)[0]])
            skopeo = Skopeo(binary, workdir, job.timeout_s, env, secrets=job.secrets(),
                            insecure_policy=job.unsigned_images, cert_dir=cert_dir)
            registry = job.external_reference.split("/", 1)[0]
            src_auth = skopeo.authfile("src", registry, job.username, job.password)
            dest_auth = skopeo.authfile("dest", dest.host, job.robot_username, job.robot_token)
            remote = await skopeo.list_tags(job.external_reference, src_auth, job.verify_tls)
            matched = service.matching_tags(remote, job.globs)
            first_error = ""
            log.info("mirror %s: %d of %d tag(s) at %s match %s", job.path, len(matched), len(remote),
                     job.external_reference, patterns)
            for tag in matched:
                await _still_ours(ctx, job)
                try:
                    await _copy_tag(ctx, job, skopeo, tag, dest, src_auth, dest_auth)
                except SkopeoError as exc:
                    first_error = first_error or f"{tag}: {exc}"
                    result.failed.append(tag)
                    log.warning("mirror %s: tag %s failed: %s", job.path, tag, exc)
                    _audit(ctx, "repo_mirror_sync_tag_failed", job, tag=tag, message=str(exc))
                    continue
                result.synced.append(tag)
                _audit(ctx, "repo_mirror_sync_tag_success", job, tag=tag,
                       manifest_digest=await _digest_of(ctx, job.repository_id, tag))
            await _still_ours(ctx, job)
            result.deleted, refused = await _delete_obsolete(ctx, job, set(matched))
    except Cancelled:
        result.status = MirrorStatus.CANCEL
        result.message = "the sync was cancelled"
        _audit(ctx, "repo_mirror_sync_failed", job, message="sync cancelled", tags=patterns)
        return result
    except SkopeoError as exc:
        result.message = str(exc)
    else:
        if result.failed:
            result.message = f"{len(result.failed)} of {len(matched)} tag(s) failed; first {first_error}"
        elif refused:
            result.message = f"could not delete immutable tag(s): {', '.join(refused)}"
        else:
            result.status = MirrorStatus.SUCCESS
    if result.status == MirrorStatus.SUCCESS:
        _audit(ctx, "repo_mirror_sync_success", job, message=f"'{job.external_reference}' with tag pattern "
               f"'{patterns}'", tags=",".join(result.synced), deleted=",".join(result.deleted))
    else:
        _audit(ctx, "repo_mirror_sync_failed", job, message=result.message, tags=patterns,
               failed=",".join(result.failed))
    return result


async def sync_claimed(ctx: AppContext, config_id: int, transaction_id: str) -> SyncResult:
    """Run a sync this worker claimed and release it with the outcome."""
    async with ctx.db.read() as session:
        job = await service.sync_job(session, ctx.cipher, config_id, transaction_id)
    try:
        result = await run_sync(ctx, job)
    except asyncio.CancelledError:
        # The process is stopping: end the lease now so the next worker pass takes the sync over.
        async with ctx.db.write() as session:
            await service.abandon(session, config_id, transaction_id)
        raise
    except Exception as exc:
        log.exception("mirror %s: sync failed unexpectedly", job.path)
        result = SyncResult(job.path, MirrorStatus.FAIL, message=f"internal error: {exc.__class__.__name__}")
        _audit(ctx, "repo_mirror_sync_failed", job, message=result.message)
    async with ctx.db.write() as session:
        released = await service.release(session, config_id, transaction_id, result.status)
    if not released and result.status != MirrorStatus.CANCEL:
        log.info("mirror %s: the sync's state changed meanwhile (cancelled or taken over)", job.path)
    level = logging.INFO if result.status == MirrorStatus.SUCCESS else logging.WARNING
    log.log(level, "mirror %s", result.line())
    # A standalone worker has no periodic flusher (the registry's lifespan runs that one).
    await ctx.audit.flush()
    return result


async def mirror_pass(ctx: AppContext) -> list[SyncResult]:
    """Sync every configuration due now, one at a time; a configuration is tried once per pass
    (one that failed with retries left waits for the next pass)."""
    results: list[SyncResult] = []
    tried: set[int] = set()
    while True:
        async with ctx.db.read() as session:
            due = await service.due_configs(session, limit=DUE_BATCH, exclude=tried)
        if not due:
            return results
        for config_id, txn in due:
            tried.add(config_id)
            async with ctx.db.write() as session:
                claimed = await service.claim(session, config_id, txn)
            if claimed is None:
                continue  # another worker took it
            results.append(await sync_claimed(ctx, config_id, claimed))


# Claims in the database keep two workers off one repository; the worker lock only caps how many
# processes of a deployment mirror at once. Each process takes one of a few lock slots (by pid),
# so several `quaymaster repomirror` processes share the work instead of waiting for one another.
LOCK_SLOTS = 8
LOCK_TTL_S = 3600.0


def build(ctx: AppContext):
    """The `repomirror` background worker: one mirror pass every REPO_MIRROR_INTERVAL seconds."""
    import os

    from quaymaster.workers import Worker

    async def run_once() -> bool:
        await mirror_pass(ctx)
        return False

    return Worker("repomirror", run_once, float(ctx.settings.REPO_MIRROR_INTERVAL),
                  f"repomirror-{os.getpid() % LOCK_SLOTS}", LOCK_TTL_S, wake_channel="repomirror")
