"""The repository's Mirroring tab: the mirror configuration form, the sync status with
"Sync now" and "Cancel", and the recent mirror log entries. Administrators only, and only while
FEATURE_REPO_MIRROR is on (a 404 otherwise, like the API)."""

from datetime import datetime, timedelta

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from quaymaster.accounts import robots
from quaymaster.api.access import repo_access
from quaymaster.auditlog import service as auditlog
from quaymaster.content import repositories
from quaymaster.content.api_support import audit
from quaymaster.content.models import RepositoryState
from quaymaster.content.service import RepoRef
from quaymaster.db.base import utcnow
from quaymaster.events import publish_quietly
from quaymaster.mirroring import service
from quaymaster.mirroring.api import WAKE_CHANNEL, log_saved, own_hostnames
from quaymaster.mirroring.models import MirrorStatus
from quaymaster.mirroring.service import MirrorError
from quaymaster.web.render import check_csrf, ctx_of, flash, render, require_signin

LOG_ENTRIES = 20
LOG_SCAN = 300  # recent repository log entries searched for mirror ones
STATUS_TEXT = {
    "NEVER_RUN": "Never synced yet", "SUCCESS": "Last sync succeeded", "FAIL": "Last sync failed",
    "SYNCING": "Syncing now", "SYNC_NOW": "Sync requested: waiting for the mirror worker",
    "CANCEL": "Last sync was cancelled",
}
SUGGESTED_ARCHITECTURES = service.ARCHITECTURES[:4]


def _base(repo: RepoRef) -> str:
    return f"/repository/{repo.namespace}/{repo.name}"


def _field(form: FormData, name: str, limit: int = 4096) -> str:
    value = form.get(name)
    return value[:limit].strip() if isinstance(value, str) else ""


async def _admin(request: Request) -> tuple:
    if not ctx_of(request).settings.FEATURE_REPO_MIRROR:
        raise HTTPException(404)
    identity = await require_signin(request)
    repo, _ = await repo_access(request, identity, request.path_params["namespace"], request.path_params["name"],
                                "admin")
    return identity, repo


def _tabs() -> list[tuple[str, str]]:
    from quaymaster.content.views import TABS  # the repository page's tabs, so this one looks like them

    return [*TABS, ("mirroring", "Mirroring")]


async def _mirror_logs(request: Request, repo: RepoRef) -> list:
    ctx = ctx_of(request)
    await ctx.audit.flush()
    flt = auditlog.LogFilter(start=datetime(1970, 1, 1), end=utcnow() + timedelta(days=1), repository_id=repo.id)
    async with ctx.db.read() as session:
        entries, _ = await auditlog.lookup_logs(session, flt, limit=LOG_SCAN)
    return [e for e in entries if e.kind.startswith("repo_mirror_")][:LOG_ENTRIES]


def _form_values(view: service.MirrorView | None) -> dict:
    """What the form shows: the stored configuration, or a starting point for a new one."""
    if view is None:
        return {"is_enabled": True, "external_reference": "", "external_registry_username": "", "tags": "",
                "robot_username": "", "sync_interval": 86400, "sync_start_date": utcnow().strftime("%Y-%m-%dT%H:%M"),
                "verify_tls": True, "unsigned_images": False, "http_proxy": "", "https_proxy": "", "no_proxy": "",
                "skopeo_timeout_interval": service.DEFAULT_SKOPEO_TIMEOUT_S, "architecture_filter": []}
    proxy = view.external_registry_config.get("proxy") or {}
    return {"is_enabled": view.is_enabled, "external_reference": view.external_reference,
            "external_registry_username": view.external_registry_username or "",
            "tags": ", ".join(view.root_rule.get("rule_value") or []), "robot_username": view.robot_username or "",
            "sync_interval": view.sync_interval,
            "sync_start_date": view.sync_start_date.strftime("%Y-%m-%dT%H:%M") if view.sync_start_date else "",
            "verify_tls": view.external_registry_config.get("verify_tls", True),
            "unsigned_images": view.external_registry_config.get("unsigned_images", False),
            "http_proxy": proxy.get("http_proxy") or "", "https_proxy": proxy.get("https_proxy") or "",
            "no_proxy": proxy.get("no_proxy") or "", "skopeo_timeout_interval": view.skopeo_timeout_interval,
            "architecture_filter": view.architecture_filter}


async def mirror_page(request: Request, *, status: int = 200, error: str | None = None,
                      values: dict | None = None) -> Response:
    _, repo = await _admin(request)
    ctx = ctx_of(request)
    async with ctx.db.read() as session:
        row, owner = await repositories.details(session, repo.id)
        robot_names = [r.username for r, _ in await robots.list_robots(session, owner, limit=500)]
        config = await service.get_config(session, repo.id)
        view = await service.view(session, ctx.cipher, config) if config is not None else None
    logs = await _mirror_logs(request, repo)
    return await render(request, "mirroring/mirror.html", {
        "repo": repo, "row": row, "base": _base(repo), "tabs": _tabs(), "tab": "mirroring",
        "state": RepositoryState(row.state).name, "is_mirror": row.state == RepositoryState.MIRROR,
        "view": view, "values": values or _form_values(view), "robot_names": robot_names, "error": error,
        "status_text": STATUS_TEXT.get(view.sync_status, view.sync_status) if view else None,
        "can_sync_now": view is not None and view.sync_status != "SYNCING",
        "can_cancel": view is not None and view.sync_status in ("SYNCING", "SYNC_NOW"),
        "architectures": SUGGESTED_ARCHITECTURES, "log_entries": logs,
    }, status=status)


def _body_from_form(form: FormData) -> tuple[dict, dict]:
    """(the API body, the values to show again if it is refused)."""
    values = {
        "is_enabled": form.get("is_enabled") == "on", "external_reference": _field(form, "external_reference", 600),
        "external_registry_username": _field(form, "external_registry_username", 300),
        "tags": _field(form, "tags"), "robot_username": _field(form, "robot_username", 300),
        "sync_interval": _field(form, "sync_interval", 20), "sync_start_date": _field(form, "sync_start_date", 40),
        "verify_tls": form.get("verify_tls") == "on", "unsigned_images": form.get("unsigned_images") == "on",
        "http_proxy": _field(form, "http_proxy", 2048), "https_proxy": _field(form, "https_proxy", 2048),
        "no_proxy": _field(form, "no_proxy", 2048),
        "skopeo_timeout_interval": _field(form, "skopeo_timeout_interval", 20),
        "architecture_filter": [a for a in form.getlist("architecture_filter") if isinstance(a, str)][:16],
    }
    body = {
        "is_enabled": values["is_enabled"], "external_reference": values["external_reference"],
        "robot_username": values["robot_username"],
        "root_rule": {"rule_kind": "tag_glob_csv", "rule_value": values["tags"]},
        "sync_interval": values["sync_interval"], "sync_start_date": values["sync_start_date"],
        "skopeo_timeout_interval": values["skopeo_timeout_interval"] or service.DEFAULT_SKOPEO_TIMEOUT_S,
        "architecture_filter": values["architecture_filter"],
        "external_registry_config": {
            "verify_tls": values["verify_tls"], "unsigned_images": values["unsigned_images"],
            "proxy": {k: values[k] or None for k in ("http_proxy", "https_proxy", "no_proxy")}},
    }
    if form.get("clear_credentials") == "on":
        body["external_registry_username"] = body["external_registry_password"] = None
    else:
        body["external_registry_username"] = values["external_registry_username"] or None
        password = form.get("external_registry_password")
        if isinstance(password, str) and password:  # blank keeps the stored password
            body["external_registry_password"] = password[:4096]
    return body, values


async def save_mirror(request: Request) -> Response:
    identity, repo = await _admin(request)
    form = await check_csrf(request)
    body, values = _body_from_form(form)
    ctx = ctx_of(request)
    try:
        async with ctx.db.read() as session:
            existing = await service.get_config(session, repo.id)
        was_enabled = existing.is_enabled if existing is not None else None
        changes = service.parse_changes(body, own_hostnames=own_hostnames(request), creating=existing is None)
        async with ctx.db.write() as session:
            if existing is None:
                saved = await service.create_config(session, ctx.cipher, repo, changes)
            else:
                saved = await service.update_config(session, ctx.cipher, repo, changes)
    except MirrorError as err:
        return await mirror_page(request, status=err.status if err.status != 404 else 400,
                                 error=err.message[:1].upper() + err.message[1:] + ".", values=values)
    log_saved(request, repo, identity, saved, was_enabled)
    message = "Mirror configuration saved."
    if saved.granted_write:
        message += f" {saved.robot_username} was given write permission so that it can push the mirrored tags."
    flash(request, message, "success")
    return RedirectResponse(f"{_base(repo)}/mirroring", status_code=303)


async def sync_now(request: Request) -> Response:
    identity, repo = await _admin(request)
    await check_csrf(request)
    try:
        async with ctx_of(request).db.write() as session:
            await service.request_sync_now(session, repo)
    except MirrorError as err:
        flash(request, err.message[:1].upper() + err.message[1:] + ".", "error")
    else:
        audit(request, "repo_mirror_sync_now_requested", repo, identity)
        await publish_quietly(ctx_of(request).events, WAKE_CHANNEL, {"repository_id": repo.id, "event": "sync_now"})
        flash(request, "Sync requested: the mirror worker starts it at its next pass.", "success")
    return RedirectResponse(f"{_base(repo)}/mirroring", status_code=303)


async def sync_cancel(request: Request) -> Response:
    identity, repo = await _admin(request)
    await check_csrf(request)
    try:
        async with ctx_of(request).db.write() as session:
            await service.cancel_sync(session, repo)
    except MirrorError as err:
        flash(request, err.message[:1].upper() + err.message[1:] + ".", "error")
    else:
        audit(request, "repo_mirror_config_changed", repo, identity, changed="sync_status",
              sync_status=MirrorStatus.CANCEL.name)
        flash(request, "Sync cancelled. Nothing runs until you press “Sync now” or save a new start date.",
              "success")
    return RedirectResponse(f"{_base(repo)}/mirroring", status_code=303)


REPO = "/repository/{namespace}/{name}/mirroring"

routes = [
    Route(REPO, mirror_page),
    Route(REPO, save_mirror, methods=["POST"]),
    Route(REPO + "/sync-now", sync_now, methods=["POST"]),
    Route(REPO + "/sync-cancel", sync_cancel, methods=["POST"]),
]
