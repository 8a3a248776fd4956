"""Repository pages: the repository list with search and creation, one repository's tabs
(info, tags, history, usage logs, settings), tag actions, and the manifest view.

Access follows the API exactly (api.access.repo_access): a repository the visitor may not read
is the same 404 page as a missing one; one they may read but not change answers 403."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from quaymaster.accounts import orgs, permissions, robots
from quaymaster.accounts import service as accounts
from quaymaster.accounts.service import Identity
from quaymaster.api.access import namespace_for_create, repo_access
from quaymaster.api.errors import ApiError
from quaymaster.auditlog import service as auditlog
from quaymaster.content import imageconfig, labels, repositories, tags
from quaymaster.content import quota as quotas
from quaymaster.content import service as content
from quaymaster.content.api_permissions import _grantee as permission_grantee
from quaymaster.content.api_permissions import _team as permission_team
from quaymaster.content.api_quota import _readable as quota_readable
from quaymaster.content.api_quota import human_bytes
from quaymaster.content.api_support import audit
from quaymaster.content.errors import ContentError
from quaymaster.content.models import RepositoryState
from quaymaster.content.service import RepoRef
from quaymaster.db.base import now_ms, utcnow
from quaymaster.events import publish_quietly
from quaymaster.oci import mediatypes as mt
from quaymaster.oci.errors import OCIError
from quaymaster.oci.manifest import parse_manifest
from quaymaster.oci.reference import split_repository, validate_tag
from quaymaster.web.paging import read_cursor, write_cursor
from quaymaster.web.render import (
    check_csrf,
    ctx_of,
    flash,
    identity_of,
    is_htmx,
    render,
    render_fragment,
    require_signin,
)

REPOS_PER_PAGE = 30
TAGS_PER_PAGE_CHOICES = (25, 50, 100)
HISTORY_PER_PAGE = 25
MAX_PAGE = 100_000
LOG_DAYS = 30
MAX_CONFIG_BYTES = 4 * 1024 * 1024
TABS = (("info", "Information"), ("tags", "Tags"), ("history", "Tag history"), ("logs", "Usage logs"),
        ("settings", "Settings"))
ADMIN_TABS = {"logs", "settings"}
TAG_SORTS = {"recent": "Last modified (newest first)", "oldest": "Last modified (oldest first)",
             "name": "Name (A–Z)", "-name": "Name (Z–A)"}
ROLES = ("read", "write", "admin")
STATES = ("NORMAL", "READ_ONLY", "MIRROR")
REFERRER_KINDS = {
    "application/vnd.dev.cosign.artifact.sig.v1+json": "Signature (cosign)",
    "application/vnd.dev.sigstore.bundle.v0.3+json": "Signature (Sigstore bundle)",
    "application/vnd.cncf.notary.signature": "Signature (Notary)",
    "application/spdx+json": "SBOM (SPDX)",
    "text/spdx": "SBOM (SPDX)",
    "application/vnd.cyclonedx+json": "SBOM (CycloneDX)",
    "application/vnd.cyclonedx+xml": "SBOM (CycloneDX)",
    "application/vnd.in-toto+json": "Attestation (in-toto)",
}


def _field(form: FormData, name: str, limit: int = 1024) -> str:
    value = form.get(name)
    return value[:limit].strip() if isinstance(value, str) else ""


def _int_param(request: Request, name: str, default: int, low: int = 1, high: int = MAX_PAGE) -> int:
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        return default
    return min(max(low, value), high)


def _base(repo: RepoRef) -> str:
    return f"/repository/{repo.namespace}/{repo.name}"


# --- access --------------------------------------------------------------------------------------

async def _visitor(request: Request) -> Identity:
    """Anyone, unless anonymous access is off: then only signed-in users."""
    identity = await identity_of(request)
    if identity.anonymous and not ctx_of(request).settings.FEATURE_ANONYMOUS_ACCESS:
        await require_signin(request)
    return identity


async def _repo(request: Request, need: str = "read") -> tuple[Identity, RepoRef, str]:
    identity = await _visitor(request)
    repo, role = await repo_access(request, identity, request.path_params["namespace"],
                                   request.path_params["name"], need)
    return identity, repo, role


async def _writer(request: Request, need: str = "write") -> tuple[Identity, RepoRef, FormData]:
    """For POSTs: signed in, a valid CSRF token, and `need` on the repository."""
    await require_signin(request)
    form = await check_csrf(request)
    identity, repo, _ = await _repo(request, need)
    return identity, repo, form


def _rank(role: str) -> int:
    return permissions.ROLE_RANK[role]


# --- repository list and creation ----------------------------------------------------------------

async def _creatable_namespaces(request: Request, identity: Identity) -> list[str]:
    if identity.anonymous or identity.kind != "user":
        return []
    async with ctx_of(request).db.read() as session:
        names = [identity.username]
        for org, _ in await orgs.orgs_of(session, identity.user_id):
            if await permissions.can_create_in(session, identity, org):
                names.append(org.username)
    return names


async def _repo_results(request: Request, identity: Identity) -> dict:
    query = request.query_params.get("q", "")[:255].strip()
    namespace = request.query_params.get("namespace", "")[:255].strip()
    page = _int_param(request, "page", 1)
    text = f"{namespace}/{query}" if namespace else query
    async with ctx_of(request).db.read() as session:
        hits = await content.search_repositories(session, text, user_id=identity.user_id,
                                                 user_is_robot=identity.kind == "robot", include_public=True,
                                                 offset=(page - 1) * REPOS_PER_PAGE, limit=REPOS_PER_PAGE + 1)
    return {"hits": hits[:REPOS_PER_PAGE], "has_more": len(hits) > REPOS_PER_PAGE, "page": page, "q": query,
            "namespace": namespace, "searching": bool(query or namespace)}


async def repository_list(request: Request) -> Response:
    identity = await _visitor(request)
    if request.method == "POST":
        return await create_repository(request)
    results = await _repo_results(request, identity)
    if is_htmx(request) and request.headers.get("hx-target") == "repo-results":
        return await render_fragment(request, "content/_repo_results.html", results)
    return await _list_page(request, identity, results)


async def _list_page(request: Request, identity: Identity, results: dict, *, status: int = 200,
                     create: dict | None = None) -> Response:
    namespaces = await _creatable_namespaces(request, identity)
    create = create or {"values": {"namespace": request.query_params.get("namespace") or identity.username,
                                   "visibility": "private"}, "errors": {}, "open": False}
    return await render(request, "content/repo_list.html",
                        {**results, "namespaces": namespaces, "create": create}, status=status)


async def create_repository(request: Request) -> Response:
    identity = await require_signin(request)
    form = await check_csrf(request)
    ctx = ctx_of(request)
    values = {"namespace": _field(form, "namespace", 255), "name": _field(form, "name", 255),
              "visibility": _field(form, "visibility", 16) or "private",
              "description": _field(form, "description", 4096)}
    errors: dict[str, str] = {}
    if values["visibility"] not in ("public", "private"):
        errors["visibility"] = "Choose public or private."
    try:
        split_repository(f"{values['namespace'] or 'x'}/{values['name']}")
        if not values["name"] or "/" in values["name"]:
            raise OCIError("NAME_INVALID", "invalid")
    except OCIError:
        errors["name"] = "Use lowercase letters, digits and . _ - (separators between them)."
    namespace = None
    if not errors:
        try:
            namespace = await namespace_for_create(request, identity, values["namespace"] or identity.username)
        except ApiError as exc:
            errors["namespace"] = exc.message[:1].upper() + exc.message[1:] + "."
    repo = None
    if not errors:
        async with ctx.db.write() as session:
            if await content.get_repository(session, namespace.username, values["name"]) is not None:
                errors["name"] = f"{namespace.username}/{values['name']} already exists."
            else:
                repo = await content.create_repository(session, namespace, values["name"], values["visibility"],
                                                       values["description"] or None, creator_id=identity.user_id)
    if repo is None:
        results = await _repo_results(request, identity)
        return await _list_page(request, identity, results, status=400,
                                create={"values": values, "errors": errors, "open": True})
    audit(request, "create_repo", repo, identity, visibility=values["visibility"])
    flash(request, f"Repository {repo.path} created.", "success")
    return RedirectResponse(_base(repo), status_code=303)


# --- storage quota (shared with the organization page) -------------------------------------------

def _size_text(size: int) -> str:
    """Binary units as the quota API shows them, without a needless ".0": "10 MiB", "1.2 MiB"."""
    text = human_bytes(size).replace(".0 ", " ")
    return {"1 Byte": "1 byte"}.get(text, text.replace(" Byte", " bytes"))


def _percent_text(percent: float) -> str:
    if 0 < percent < 1:
        return "less than 1%"
    return f"{percent:.0f}%"


async def quota_summary(session, settings, namespace_id: int, repository_id: int | None = None) -> dict | None:
    """Usage of a namespace (or one of its repositories) against the namespace's quota, for display;
    None while FEATURE_QUOTA_MANAGEMENT is off. `level` is "error" at or over the Reject limit,
    "warning" above a Warning limit, else "ok" (exact integer arithmetic, as the push checks)."""
    report = await quotas.view_report(session, settings, namespace_id, repository_id)
    if report is None:
        return None
    usage, configured = report["quota_bytes"], report["configured_quota"]
    summary = {"usage_bytes": usage, "usage": _size_text(usage), "limit_bytes": configured, "limit": None,
               "percent": None, "level": "ok", "system_default": False}
    if configured:
        limits = await quotas.thresholds(session, namespace_id, settings.DEFAULT_SYSTEM_REJECT_QUOTA_BYTES)
        summary.update(limit=_size_text(configured), percent=_percent_text(report["percent_consumed"] or 0),
                       system_default=limits.system_default)
        if limits.reject_percent is not None and usage * 100 >= configured * limits.reject_percent:
            summary["level"] = "error"
        elif any(limits.over(usage, p) for p in limits.warning_percents):
            summary["level"] = "warning"
    return summary


async def repository_quota(request: Request, identity: Identity, repo: RepoRef) -> dict | None:
    """The repository's usage for the information tab: only for those who may read the namespace's
    quota through the API (organization members, the user itself, superusers)."""
    ctx = ctx_of(request)
    if not ctx.settings.FEATURE_QUOTA_MANAGEMENT or identity.anonymous:
        return None
    try:
        await quota_readable(request, identity, repo.namespace)
    except ApiError:
        return None
    async with ctx.db.read() as session:
        summary = await quota_summary(session, ctx.settings, repo.namespace_id)  # the level is the namespace's
        if summary is not None:
            repo_usage = await quotas.repository_usage(session, repo.id)
            summary.update(repository_usage_bytes=repo_usage, repository_usage=_size_text(repo_usage))
        return summary


# --- one repository ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chart:
    """An inline SVG bar chart of actions per day."""

    width: int
    height: int
    bars: list[dict]
    ticks: list[dict]
    labels: list[dict]
    total: int
    by_kind: list[tuple[str, int]]


def usage_chart(counts: list[tuple[str, date, int]], first_day: date, days: int = LOG_DAYS) -> Chart:
    width, height, left, bottom, top = 720, 200, 40, 22, 10
    plot_w, plot_h = width - left - 6, height - bottom - top
    per_day: dict[date, dict[str, int]] = {}
    by_kind: dict[str, int] = {}
    for kind, day, count in counts:
        per_day.setdefault(day, {})[kind] = per_day.get(day, {}).get(kind, 0) + count
        by_kind[kind] = by_kind.get(kind, 0) + count
    peak = max((sum(v.values()) for v in per_day.values()), default=0)
    scale = plot_h / peak if peak else 0
    slot = plot_w / days
    bars, labels_ = [], []
    for i in range(days):
        day = first_day + timedelta(days=i)
        kinds = per_day.get(day, {})
        total = sum(kinds.values())
        h = round(total * scale, 1)
        x = round(left + i * slot + slot * 0.15, 1)
        detail = ", ".join(f"{k}: {c}" for k, c in sorted(kinds.items()))
        bars.append({"x": x, "y": round(top + plot_h - h, 1), "w": round(slot * 0.7, 1), "h": h, "day": day.isoformat(),
                     "total": total, "title": f"{day.isoformat()}: {total} action{'s' if total != 1 else ''}"
                     + (f" ({detail})" if detail else "")})
        if i % 5 == 0 or i == days - 1:
            labels_.append({"x": round(left + i * slot + slot / 2, 1), "text": day.strftime("%b %d")})
    ticks = [{"y": round(top + plot_h - v * scale, 1), "value": v} for v in sorted({0, peak // 2, peak})] if peak \
        else [{"y": top + plot_h, "value": 0}]
    return Chart(width, height, bars, ticks, labels_, sum(by_kind.values()),
                 sorted(by_kind.items(), key=lambda kv: (-kv[1], kv[0])))


async def _tags_context(request: Request, repo: RepoRef) -> dict:
    sort = request.query_params.get("sort", "recent")
    sort = sort if sort in TAG_SORTS else "recent"
    limit = _int_param(request, "limit", TAGS_PER_PAGE_CHOICES[0], 1, 100)
    limit = limit if limit in TAGS_PER_PAGE_CHOICES else TAGS_PER_PAGE_CHOICES[0]
    page = _int_param(request, "page", 1)
    text = request.query_params.get("filter", "")[:128].strip()
    async with ctx_of(request).db.read() as session:
        rows = await tags.history(session, repo.id, window_s=0, active_only=True, name_contains=text or None,
                                  offset=(page - 1) * limit, limit=limit + 1, order=sort)
    from quaymaster.secscan.views import tags_column

    security = await tags_column(ctx_of(request), repo.id, [row.manifest_digest for row in rows[:limit]])
    return {"tag_rows": rows[:limit], "has_more": len(rows) > limit, "page": page, "sort": sort, "limit": limit,
            "filter": text, "sorts": TAG_SORTS, "limits": TAGS_PER_PAGE_CHOICES, "now_ms": now_ms(),
            "security": security}


async def _history_context(request: Request, repo: RepoRef, window_s: int) -> dict:
    page = _int_param(request, "page", 1)
    text = request.query_params.get("filter", "")[:128].strip()
    async with ctx_of(request).db.read() as session:
        rows = await tags.history(session, repo.id, window_s=window_s, name_contains=text or None,
                                  offset=(page - 1) * HISTORY_PER_PAGE, limit=HISTORY_PER_PAGE + 1)
    return {"history_rows": rows[:HISTORY_PER_PAGE], "has_more": len(rows) > HISTORY_PER_PAGE, "page": page,
            "filter": text, "now_ms": now_ms(), "window_s": window_s}


async def _logs_context(request: Request, repo: RepoRef) -> dict:
    ctx = ctx_of(request)
    await ctx.audit.flush()
    today = utcnow().date()
    first_day = today - timedelta(days=LOG_DAYS - 1)
    start = datetime.combine(first_day, datetime.min.time())
    end = datetime.combine(today + timedelta(days=1), datetime.min.time())
    flt = auditlog.LogFilter(start=start, end=end, repository_id=repo.id)
    async with ctx.db.read() as session:
        counts = await auditlog.aggregate_logs(session, flt)
        entries, after = await auditlog.lookup_logs(
            session, auditlog.LogFilter(start=datetime(1970, 1, 1), end=end, repository_id=repo.id),
            after=read_cursor(request), limit=auditlog.LOGS_PER_PAGE)
    older = write_cursor(request, after)
    return {"chart": usage_chart(counts, first_day), "log_entries": entries, "older": older,
            "first_day": first_day, "last_day": today}


async def _settings_context(request: Request, repo: RepoRef, owner) -> dict:
    async with ctx_of(request).db.read() as session:
        user_perms = await permissions.user_permissions(session, repo.id)
        team_perms = await permissions.team_permissions(session, repo.id) if owner.organization else []
        robot_names = [r.username for r, _ in await robots.list_robots(session, owner, limit=200)]
        team_names = [t.name for t in await orgs.list_teams(session, owner)] if owner.organization else []
    return {"user_perms": user_perms, "team_perms": team_perms, "robot_names": robot_names, "team_names": team_names,
            "roles": ROLES,
            "states": [st for st in STATES if st != "MIRROR" or ctx_of(request).settings.FEATURE_REPO_MIRROR
                       or repo.state == RepositoryState.MIRROR]}


async def repository_page(request: Request, *, status: int = 200, extra: dict | None = None) -> Response:
    identity, repo, role = await _repo(request, "read")
    tab = request.query_params.get("tab", "info")
    if tab == "mirroring":  # a page of the mirroring domain (mirroring/views.py)
        return RedirectResponse(f"{_base(repo)}/mirroring", status_code=303)
    if tab not in dict(TABS):
        tab = "info"
    can_admin = role == "admin"
    if tab in ADMIN_TABS and not can_admin:
        raise HTTPException(403, "Only administrators of this repository can see this tab.")
    ctx = ctx_of(request)
    async with ctx.db.read() as session:
        row, owner = await repositories.details(session, repo.id)
        latest = await tags.history(session, repo.id, window_s=0, active_only=True, name="latest", limit=1)
        if not latest:
            latest = await tags.history(session, repo.id, window_s=0, active_only=True, limit=1)
    state = RepositoryState(row.state).name
    context = {
        "repo": repo, "row": row, "owner": owner, "role": role, "tab": tab, "base": _base(repo),
        "tabs": [(k, v) for k, v in TABS if k not in ADMIN_TABS or can_admin]
        + ([("mirroring", "Mirroring")] if can_admin and ctx.settings.FEATURE_REPO_MIRROR else []), "state": state,
        "can_write": _rank(role) >= _rank("write") and state == "NORMAL", "can_admin": can_admin,
        "pull_tag": latest[0].name if latest else "latest", "has_tags": bool(latest),
        "host": ctx.settings.SERVER_HOSTNAME, "window_s": owner.removed_tag_expiration_s,
    }
    if tab == "info":
        context["quota"] = await repository_quota(request, identity, repo)
    elif tab == "tags":
        context.update(await _tags_context(request, repo))
    elif tab == "history":
        context.update(await _history_context(request, repo, owner.removed_tag_expiration_s))
    elif tab == "logs":
        context.update(await _logs_context(request, repo))
    elif tab == "settings":
        context.update(await _settings_context(request, repo, owner))
    context.update(extra or {})
    return await render(request, "content/repo.html", context, status=status)


def _page_instead(request: Request, tab: str) -> Response | None:
    """A fragment URL opened directly (a bookmark, no htmx): the full page with the same query."""
    if is_htmx(request):
        return None
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "tab"])
    base = f"/repository/{request.path_params['namespace']}/{request.path_params['name']}"
    return RedirectResponse(f"{base}?tab={tab}" + (f"&{query}" if query else ""), status_code=302)


async def tags_table(request: Request) -> Response:
    """The tags table alone, for htmx filtering, sorting and paging."""
    identity, repo, role = await _repo(request, "read")
    if (page := _page_instead(request, "tags")) is not None:
        return page
    async with ctx_of(request).db.read() as session:
        row, _ = await repositories.details(session, repo.id)
    context = await _tags_context(request, repo)
    context.update({"repo": repo, "base": _base(repo),
                    "can_write": _rank(role) >= _rank("write") and row.state == RepositoryState.NORMAL})
    return await render_fragment(request, "content/_tags_table.html", context)


async def history_table(request: Request) -> Response:
    identity, repo, role = await _repo(request, "read")
    if (page := _page_instead(request, "history")) is not None:
        return page
    async with ctx_of(request).db.read() as session:
        row, owner = await repositories.details(session, repo.id)
    context = await _history_context(request, repo, owner.removed_tag_expiration_s)
    context.update({"repo": repo, "base": _base(repo),
                    "can_write": _rank(role) >= _rank("write") and row.state == RepositoryState.NORMAL})
    return await render_fragment(request, "content/_history_table.html", context)


async def _fail(request: Request, tab: str, message: str, status: int = 400) -> Response:
    """Show an error in place: the same tab, with the message above its form."""
    request.scope["query_string"] = f"tab={tab}".encode()
    request.__dict__.pop("_query_params", None)
    return await repository_page(request, status=status, extra={"error": message})


def _content_message(exc: ContentError) -> str:
    if exc.code == "DENIED":
        return f"This repository does not accept changes now: {exc.message}."
    return exc.message[:1].upper() + exc.message[1:] + "."


# --- tag actions ---------------------------------------------------------------------------------

async def delete_tag(request: Request) -> Response:
    identity, repo, form = await _writer(request)
    tag = request.path_params["tag"]
    try:
        content.check_writable(repo)
        async with ctx_of(request).db.write() as session:
            await content.lock_repository(session, repo.id)
            ended = await content.delete_tag(session, repo.id, tag)
    except ContentError as exc:
        return await _fail(request, "tags", _content_message(exc), 409)
    if ended is None:
        return await _fail(request, "tags", f"There is no tag {tag} to delete.", 404)
    audit(request, "delete_tag", repo, identity, username=identity.username, tag=tag)
    flash(request, f"Tag {tag} deleted. You can restore it from the tag history.", "success")
    return RedirectResponse(f"{_base(repo)}?tab=tags", status_code=303)


async def retarget_tag(request: Request) -> Response:
    """Create a tag or move it to another manifest of this repository."""
    identity, repo, form = await _writer(request)
    tag = _field(form, "tag", 256) or request.path_params.get("tag", "")
    digest = _field(form, "manifest_digest", 200)
    back = _field(form, "back", 20) or "tags"
    back = back if back in ("tags", "manifest") else "tags"
    try:
        validate_tag(tag)
    except OCIError:
        return await _fail(request, "tags", f"“{tag}” is not a valid tag name: use letters, digits, _ . - "
                                            "(at most 128, not starting with . or -).")
    try:
        content.check_writable(repo)
        async with ctx_of(request).db.write() as session:
            await content.lock_repository(session, repo.id)
            manifest = await content.manifest_by_digest(session, repo.id, digest) if digest else None
            if manifest is None:
                raise ContentError("MANIFEST_UNKNOWN", f"no manifest {digest or '(empty)'} in this repository")
            original = await tags.alive_digest(session, repo.id, tag)
            await content.set_tag(session, repo.id, tag, manifest.id)
    except ContentError as exc:
        return await _fail(request, "tags", _content_message(exc), 404 if exc.code == "MANIFEST_UNKNOWN" else 409)
    audit(request, "move_tag" if original else "create_tag", repo, identity, username=identity.username, tag=tag,
          manifest_digest=manifest.digest, original_manifest_digest=original)
    flash(request, f"Tag {tag} now points at {manifest.digest[:19]}.", "success")
    if back == "manifest":
        return RedirectResponse(f"{_base(repo)}/manifest/{manifest.digest}", status_code=303)
    return RedirectResponse(f"{_base(repo)}?tab=tags", status_code=303)


async def restore_tag(request: Request) -> Response:
    identity, repo, form = await _writer(request)
    tag = request.path_params["tag"]
    digest = _field(form, "manifest_digest", 200)
    try:
        validate_tag(tag)
        content.check_writable(repo)
        async with ctx_of(request).db.write() as session:
            await content.lock_repository(session, repo.id)
            owner = await accounts.get_namespace(session, repo.namespace)
            manifest = await tags.restorable_manifest(session, repo.id, digest, owner.removed_tag_expiration_s)
            if manifest is None:
                raise ContentError("MANIFEST_UNKNOWN", f"{digest or 'that manifest'} is no longer restorable")
            await content.set_tag(session, repo.id, tag, manifest.id, reversion=True)
    except OCIError:
        return await _fail(request, "history", f"“{tag}” is not a valid tag name.")
    except ContentError as exc:
        return await _fail(request, "history", _content_message(exc), 404 if exc.code == "MANIFEST_UNKNOWN" else 409)
    audit(request, "revert_tag", repo, identity, username=identity.username, tag=tag, manifest_digest=digest)
    flash(request, f"Tag {tag} restored to {digest[:19]}.", "success")
    return RedirectResponse(f"{_base(repo)}?tab=tags", status_code=303)


# --- repository settings -------------------------------------------------------------------------

async def set_description(request: Request) -> Response:
    identity, repo, form = await _writer(request)
    description = form.get("description") if isinstance(form.get("description"), str) else ""
    if len(description) > 65_536:
        return await _fail(request, "info", "The description is too long (at most 64 KiB).")
    async with ctx_of(request).db.write() as session:
        await repositories.set_description(session, repo.id, description)
    audit(request, "set_repo_description", repo, identity, description=description)
    flash(request, "Description saved.", "success")
    return RedirectResponse(_base(repo), status_code=303)


async def set_visibility(request: Request) -> Response:
    identity, repo, form = await _writer(request, "admin")
    visibility = _field(form, "visibility", 16)
    if visibility not in ("public", "private"):
        return await _fail(request, "settings", "Choose public or private.")
    async with ctx_of(request).db.write() as session:
        await repositories.set_visibility(session, repo.id, visibility)
    audit(request, "change_repo_visibility", repo, identity, visibility=visibility)
    flash(request, f"{repo.path} is now {visibility}.", "success")
    return RedirectResponse(f"{_base(repo)}?tab=settings", status_code=303)


async def set_state(request: Request) -> Response:
    identity, repo, form = await _writer(request, "admin")
    state = _field(form, "state", 16)
    if state not in STATES:
        return await _fail(request, "settings", "Choose NORMAL, READ_ONLY or MIRROR.")
    if state == "MIRROR" and not ctx_of(request).settings.FEATURE_REPO_MIRROR:
        return await _fail(request, "settings", repositories.MIRROR_DISABLED + ".")
    async with ctx_of(request).db.write() as session:
        await repositories.set_state(session, repo.id, RepositoryState[state])
    audit(request, "change_repo_state", repo, identity, state_changed=state)
    flash(request, f"Repository state set to {state}.", "success")
    return RedirectResponse(f"{_base(repo)}?tab=settings", status_code=303)


async def set_permission(request: Request) -> Response:
    """Add or change a user's, robot's or team's role."""
    identity, repo, form = await _writer(request, "admin")
    kind, name, role = _field(form, "kind", 8), _field(form, "name", 255), _field(form, "role", 8)
    if role not in ROLES:
        return await _fail(request, "settings", "Choose read, write or admin.")
    if kind not in ("user", "team") or not name:
        return await _fail(request, "settings", "Enter a user, robot or team name.")
    ctx = ctx_of(request)
    try:
        async with ctx.db.write() as session:
            owner = await accounts.get_namespace(session, repo.namespace)
            if kind == "team":
                team = await permission_team(session, owner, name, missing_status=400)
                had = any(t.id == team.id for t, _ in await permissions.team_permissions(session, repo.id))
                await permissions.set_permission(session, repo.id, role, team=team)
            else:
                user = await permission_grantee(session, repo, name)
                had = any(u.id == user.id for u, _ in await permissions.user_permissions(session, repo.id))
                await permissions.set_permission(session, repo.id, role, user=user)
    except ApiError as exc:
        return await _fail(request, "settings", exc.message)
    audit(request, "change_repo_permission" if had else "add_repo_permission", repo, identity,
          **({"team": name} if kind == "team" else {"username": name}), role=role)
    flash(request, f"{name} now has {role} permission.", "success")
    return RedirectResponse(f"{_base(repo)}?tab=settings#permissions", status_code=303)


async def remove_permission(request: Request) -> Response:
    identity, repo, form = await _writer(request, "admin")
    kind, name = _field(form, "kind", 8), _field(form, "name", 255)
    ctx = ctx_of(request)
    try:
        async with ctx.db.write() as session:
            owner = await accounts.get_namespace(session, repo.namespace)
            if kind == "team":
                team = await permission_team(session, owner, name)
                await permissions.delete_permission(session, repo.id, team=team)
            else:
                user = await accounts.get_namespace(session, name)
                if user is None:
                    raise ApiError(404, f"{name} has no permission on {repo.path}")
                await permissions.delete_permission(session, repo.id, user=user)
    except ApiError as exc:
        return await _fail(request, "settings", exc.message, exc.status)
    who = {"team": name} if kind == "team" else {"username": name}
    audit(request, "delete_repo_permission", repo, identity, **who)
    flash(request, f"Removed the permission of {name}.", "success")
    return RedirectResponse(f"{_base(repo)}?tab=settings#permissions", status_code=303)


async def delete_repository(request: Request) -> Response:
    identity, repo, form = await _writer(request, "admin")
    if _field(form, "confirm_name", 255) != repo.name:
        return await _fail(request, "settings", f"Type the repository name “{repo.name}” to confirm the deletion.")
    async with ctx_of(request).db.write() as session:
        await content.lock_repository(session, repo.id)
        await repositories.mark_for_deletion(session, repo.id)
    audit(request, "delete_repo", repo, identity)
    await publish_quietly(ctx_of(request).events, "repositories", {"repository_id": repo.id, "event": "deleted"})
    flash(request, f"Repository {repo.path} deleted.", "success")
    return RedirectResponse("/repository/", status_code=303)


# --- manifest ------------------------------------------------------------------------------------

def _platform_text(platform: dict | None) -> str:
    if not platform:
        return "unknown"
    text = f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"
    return text + (f"/{platform['variant']}" if platform.get("variant") else "")


async def manifest_page(request: Request) -> Response:
    identity, repo, role = await _repo(request, "read")
    digest = request.path_params["digest"]
    ctx = ctx_of(request)
    async with ctx.db.read() as session:
        manifest = await content.manifest_by_digest(session, repo.id, digest)
        if manifest is None:
            raise HTTPException(404)
        found_labels = await labels.list_labels(session, manifest.id)
        refs = await content.referrers(session, repo.id, manifest.digest, None)
        row, _ = await repositories.details(session, repo.id)
    try:
        parsed = parse_manifest(manifest.manifest_bytes, manifest.media_type, len(manifest.manifest_bytes))
    except OCIError:
        parsed = None
    layers, platforms, config = [], [], None
    if parsed is not None and parsed.is_index:
        platforms = [{"digest": d.digest, "size": d.size, "media_type": d.media_type,
                      "platform": _platform_text(d.platform), "artifact_type": d.artifact_type}
                     for d in parsed.manifests]
    elif parsed is not None:
        if parsed.config is not None and parsed.config.media_type in mt.IMAGE_CONFIG_TYPES:
            config = await imageconfig.read_config(ctx.db, ctx.storage, repo.id, parsed.config.digest,
                                                   MAX_CONFIG_BYTES)
        layers = imageconfig.layer_history(parsed, config)
    referrers = [{"digest": m.digest, "artifact_type": m.artifact_type or m.config_media_type or m.media_type,
                  "kind": REFERRER_KINDS.get(m.artifact_type or "", "Artifact"), "created": m.created}
                 for m in refs]
    image_platform = None
    if isinstance(config, dict) and config.get("os"):
        image_platform = _platform_text({"os": config.get("os"), "architecture": config.get("architecture"),
                                         "variant": config.get("variant")})
    return await render(request, "content/manifest.html", {
        "repo": repo, "base": _base(repo), "manifest": manifest, "parsed": parsed, "layers": layers,
        "platforms": platforms, "labels": found_labels, "referrers": referrers, "image_platform": image_platform,
        "total_size": sum(layer.compressed_size for layer in layers) if layers else None,
        "is_index": manifest.media_type in mt.INDEX_TYPES, "host": ctx.settings.SERVER_HOSTNAME,
        "can_write": _rank(role) >= _rank("write") and row.state == RepositoryState.NORMAL,
        "subject": parsed.subject.digest if parsed is not None and parsed.subject else None,
        "raw": manifest.manifest_bytes.decode("utf-8", "replace"),
        "security_scan": bool(ctx.settings.FEATURE_SECURITY_SCANNER and ctx.settings.SECURITY_SCANNER_V4_ENDPOINT),
    })


async def new_repository_redirect(request: Request) -> Response:
    """Quay's /new/ page: the create form lives on the repository list."""
    namespace = request.query_params.get("namespace")
    return RedirectResponse("/repository/?create=1" + (f"&namespace={namespace}" if namespace else "") + "#create",
                            status_code=302)


REPO = "/repository/{namespace}/{name}"

routes = [
    Route("/repository", lambda request: RedirectResponse("/repository/", status_code=302)),
    Route("/repository/", repository_list, methods=["GET", "POST"]),
    Route("/new/", new_repository_redirect),
    Route(REPO, repository_page),
    Route(REPO + "/tags-table", tags_table),
    Route(REPO + "/history-table", history_table),
    Route(REPO + "/manifest/{digest}", manifest_page),
    Route(REPO + "/tag", retarget_tag, methods=["POST"]),
    Route(REPO + "/tag/{tag}/retarget", retarget_tag, methods=["POST"]),
    Route(REPO + "/tag/{tag}/delete", delete_tag, methods=["POST"]),
    Route(REPO + "/tag/{tag}/restore", restore_tag, methods=["POST"]),
    Route(REPO + "/description", set_description, methods=["POST"]),
    Route(REPO + "/visibility", set_visibility, methods=["POST"]),
    Route(REPO + "/state", set_state, methods=["POST"]),
    Route(REPO + "/permissions", set_permission, methods=["POST"]),
    Route(REPO + "/permissions/remove", remove_permission, methods=["POST"]),
    Route(REPO + "/delete", delete_repository, methods=["POST"]),
]
