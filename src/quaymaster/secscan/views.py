"""Security scan pages: the tags table's "Security scan" column, its per-manifest summary
(loaded by htmx after the table, so the scanner never holds the tags page up), and a manifest's
packages and vulnerabilities at `/repository/{ns}/{name}/manifest/{digest}/security`."""

from __future__ import annotations

from sqlalchemy import select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quaymaster.api.access import repo_access
from quaymaster.content import service as content
from quaymaster.content.models import Manifest
from quaymaster.secscan import report as reports
from quaymaster.secscan import service
from quaymaster.secscan.models import ManifestSecurityStatus
from quaymaster.web.render import ctx_of, identity_of, render, render_fragment, require_signin

SEVERITY_COLORS = {"Critical": "#8b1a1a", "High": "#c0392b", "Medium": "#d68910", "Low": "#2e86c1",
                   "Negligible": "#7f8c8d", "Unknown": "#95a5a6"}
COLUMN_TEXT = {"queued": "Queued", "failed": "Failed", "unsupported": "Unsupported",
               "manifest_layer_too_large": "Layer too large"}


async def tags_column(ctx, repository_id: int, digests: list[str]) -> dict[str, str] | None:
    """digest -> Quay's status word, for the tags table; None when scanning is off."""
    if not service.enabled(ctx.settings):
        return None
    async with ctx.db.read() as session:
        rows = (await session.execute(
            select(Manifest.digest, ManifestSecurityStatus.index_status)
            .join(ManifestSecurityStatus, ManifestSecurityStatus.manifest_id == Manifest.id)
            .where(Manifest.repository_id == repository_id, Manifest.digest.in_(digests)))).all()
    found = {digest: service.API_STATUS.get(status, "failed") for digest, status in rows}
    return {digest: found.get(digest, "queued") for digest in digests}


async def _manifest(request: Request):
    ctx = ctx_of(request)
    if not service.enabled(ctx.settings):
        raise HTTPException(404)
    identity = await identity_of(request)
    if identity.anonymous and not ctx.settings.FEATURE_ANONYMOUS_ACCESS:
        await require_signin(request)
    repo, _ = await repo_access(request, identity, request.path_params["namespace"], request.path_params["name"],
                                "read")
    async with ctx.db.read() as session:
        manifest = await content.manifest_by_digest(session, repo.id, request.path_params["digest"])
    if manifest is None:
        raise HTTPException(404)
    return ctx, repo, manifest


def _vulnerability_rows(layer: dict) -> list[dict]:
    rows = []
    for feature in layer["Layer"]["Features"]:
        for vuln in feature["Vulnerabilities"]:
            link = vuln["Link"].split()[0] if vuln["Link"] else ""
            rows.append({"name": vuln["Name"], "severity": vuln["Severity"], "package": feature["Name"],
                         "version": feature["Version"], "fixed_by": vuln["FixedBy"],
                         "link": link if link.startswith(("https://", "http://")) else "",
                         "description": vuln["Description"]})
    rank = {name: i for i, name in enumerate(reversed(reports.SEVERITY_ORDER))}
    rows.sort(key=lambda r: (rank.get(r["severity"], 99), r["package"], r["name"]))
    return rows


async def security_summary(request: Request) -> Response:
    """The tags-table cell of one manifest: counts by severity, or why there are none."""
    ctx, repo, manifest = await _manifest(request)
    info = await service.security_info(ctx, manifest, timeout=service.PAGE_TIMEOUT_S)
    summary = reports.summarize(info.layer) if info.layer is not None else None
    return await render_fragment(request, "secscan/_summary.html", {
        "info": info, "summary": summary, "colors": SEVERITY_COLORS, "order": reports.SEVERITY_ORDER,
        "href": f"/repository/{repo.path}/manifest/{manifest.digest}/security", "texts": COLUMN_TEXT})


async def security_page(request: Request) -> Response:
    ctx, repo, manifest = await _manifest(request)
    info = await service.security_info(ctx, manifest, timeout=service.PAGE_TIMEOUT_S)
    summary = reports.summarize(info.layer) if info.layer is not None else None
    packages = []
    if info.layer is not None:
        packages = sorted(({"name": f["Name"], "version": f["Version"], "count": len(f["Vulnerabilities"])}
                           for f in info.layer["Layer"]["Features"]), key=lambda p: (-p["count"], p["name"]))
    return await render(request, "secscan/manifest_security.html", {
        "repo": repo, "base": f"/repository/{repo.path}", "manifest": manifest, "info": info,
        "summary": summary, "vulns": _vulnerability_rows(info.layer) if info.layer else [],
        "packages": packages, "colors": SEVERITY_COLORS, "order": reports.SEVERITY_ORDER, "texts": COLUMN_TEXT})


REPO = "/repository/{namespace}/{name}"

routes = [
    Route(REPO + "/manifest/{digest}/security", security_page),
    Route(REPO + "/manifest/{digest}/security-summary", security_summary),
]
