"""/api/v1 repository mirroring, in Quay's paths and JSON: the configuration (GET, POST, PUT),
sync-now and sync-cancel. Repository administrators only; 404 everywhere while
FEATURE_REPO_MIRROR is off, as Quay answers for a disabled feature."""

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response

from quaymaster.accounts.service import Identity
from quaymaster.api.access import repo_access
from quaymaster.api.auth import ctx_of, signed_in
from quaymaster.api.errors import ApiError, not_found
from quaymaster.content.api_support import audit
from quaymaster.content.service import RepoRef
from quaymaster.events import publish_quietly
from quaymaster.mirroring import service
from quaymaster.mirroring.service import MirrorError, MirrorView

router = APIRouter(tags=["mirror"])

BASE = "/repository/{namespace}/{name}/mirror"
WAKE_CHANNEL = "repomirror"  # "sync now" wakes a waiting mirror worker (the ones this event bus reaches)
FIELDS = ("is_enabled", "external_reference", "external_registry_username", "external_registry_password",
          "sync_interval", "sync_start_date", "robot_username", "root_rule", "external_registry_config",
          "skopeo_timeout_interval", "architecture_filter")


def _date(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def mirror_json(v: MirrorView) -> dict:
    """Quay's shape; the password is write-only."""
    return {
        "is_enabled": v.is_enabled, "mirror_type": "PULL", "external_reference": v.external_reference,
        "external_registry_username": v.external_registry_username,
        "external_registry_config": v.external_registry_config, "sync_interval": v.sync_interval,
        "sync_start_date": _date(v.sync_start_date), "sync_expiration_date": _date(v.sync_expiration_date),
        "sync_retries_remaining": v.sync_retries_remaining, "sync_status": v.sync_status,
        "root_rule": v.root_rule, "robot_username": v.robot_username,
        "skopeo_timeout_interval": v.skopeo_timeout_interval, "architecture_filter": v.architecture_filter,
    }


def own_hostnames(request: Request) -> list[str]:
    s = ctx_of(request).settings
    return [h for h in (s.SERVER_HOSTNAME, s.REPO_MIRROR_SERVER_HOSTNAME) if h]


async def mirror_admin(request: Request, identity: Identity, namespace: str, name: str) -> RepoRef:
    """The feature must be on and the caller an administrator of the repository."""
    if not ctx_of(request).settings.FEATURE_REPO_MIRROR:
        raise not_found("repository mirroring is not enabled on this registry")
    repo, _ = await repo_access(request, identity, namespace, name, "admin")
    return repo


def _api_error(err: MirrorError) -> ApiError:
    return ApiError(err.status, err.message)


def _body(raw: Any) -> dict:
    if not isinstance(raw, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return {k: raw[k] for k in FIELDS if k in raw}


def log_saved(request: Request, repo: RepoRef, identity: Identity, saved: service.SavedConfig,
              was_enabled: bool | None) -> None:
    """Quay's kinds: enabled/disabled when that flips, config_changed for the rest (names only)."""
    enabled = saved.config.is_enabled
    if was_enabled is None or enabled != was_enabled:
        audit(request, "repo_mirror_enabled" if enabled else "repo_mirror_disabled", repo, identity,
              external_reference=saved.config.external_reference)
    changed = [c for c in saved.changed if c != "is_enabled"]
    if changed and was_enabled is not None:  # on creation the enabled/disabled entry says it all
        audit(request, "repo_mirror_config_changed", repo, identity, changed=",".join(changed))
    if saved.granted_write:
        audit(request, "add_repo_permission", repo, identity, username=saved.robot_username, role="write",
              via="mirror")


@router.get(BASE, summary="The repository's mirror configuration")
async def get_mirror(request: Request, namespace: str, name: str, identity: Identity = Depends(signed_in)):
    repo = await mirror_admin(request, identity, namespace, name)
    ctx = ctx_of(request)
    async with ctx.db.read() as session:
        config = await service.get_config(session, repo.id)
        if config is None:
            raise not_found(f"{repo.path} has no mirror configuration")
        return mirror_json(await service.view(session, ctx.cipher, config))


@router.post(BASE, status_code=201, summary="Create the repository's mirror configuration")
async def create_mirror(request: Request, namespace: str, name: str, body: Any = Body(None),
                        identity: Identity = Depends(signed_in)):
    repo = await mirror_admin(request, identity, namespace, name)
    ctx = ctx_of(request)
    try:
        changes = service.parse_changes(_body(body), own_hostnames=own_hostnames(request), creating=True)
        async with ctx.db.write() as session:
            saved = await service.create_config(session, ctx.cipher, repo, changes)
            view = await service.view(session, ctx.cipher, saved.config)
    except MirrorError as err:
        raise _api_error(err) from None
    log_saved(request, repo, identity, saved, None)
    return mirror_json(view)


@router.put(BASE, status_code=201, summary="Change the repository's mirror configuration")
async def update_mirror(request: Request, namespace: str, name: str, body: Any = Body(None),
                        identity: Identity = Depends(signed_in)):
    repo = await mirror_admin(request, identity, namespace, name)
    ctx = ctx_of(request)
    try:
        changes = service.parse_changes(_body(body), own_hostnames=own_hostnames(request), creating=False)
        async with ctx.db.write() as session:
            existing = await service.get_config(session, repo.id)
            was_enabled = existing.is_enabled if existing is not None else None
            saved = await service.update_config(session, ctx.cipher, repo, changes)
            view = await service.view(session, ctx.cipher, saved.config)
    except MirrorError as err:
        raise _api_error(err) from None
    log_saved(request, repo, identity, saved, was_enabled)
    return mirror_json(view)


@router.post(BASE + "/sync-now", status_code=204, summary="Sync the mirror at the next worker pass")
async def sync_now(request: Request, namespace: str, name: str, identity: Identity = Depends(signed_in)):
    repo = await mirror_admin(request, identity, namespace, name)
    try:
        async with ctx_of(request).db.write() as session:
            await service.request_sync_now(session, repo)
    except MirrorError as err:
        raise _api_error(err) from None
    audit(request, "repo_mirror_sync_now_requested", repo, identity)
    await publish_quietly(ctx_of(request).events, WAKE_CHANNEL, {"repository_id": repo.id, "event": "sync_now"})
    return Response(status_code=204)


@router.post(BASE + "/sync-cancel", status_code=204, summary="Cancel a running or queued sync")
async def sync_cancel(request: Request, namespace: str, name: str, identity: Identity = Depends(signed_in)):
    repo = await mirror_admin(request, identity, namespace, name)
    try:
        async with ctx_of(request).db.write() as session:
            await service.cancel_sync(session, repo)
    except MirrorError as err:
        raise _api_error(err) from None
    audit(request, "repo_mirror_config_changed", repo, identity, changed="sync_status", sync_status="CANCEL")
    return Response(status_code=204)
