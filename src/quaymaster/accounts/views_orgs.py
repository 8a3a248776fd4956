"""Organization pages: create an organization; one organization's tabs (repositories, teams and
members, robot accounts, default permissions, usage logs, settings); a team's page; robot
accounts of an organization or of the signed-in user.

Every change goes through the same functions the /api/v1 routes use (accounts/api_orgs.py,
api_robots.py, content/api_permissions.py), so the rules, the checks and the action log entries
are the API's. Pages add the UI's access rule: someone outside the organization gets the same
404 as for a missing one; a member without admin rights gets 403 on admin-only parts."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from quaymaster.accounts import (
    api_orgs,
    api_robots,
    credentials,
    orgs,
    permissions,
    robots,
)
from quaymaster.accounts import service as users
from quaymaster.accounts.models import User
from quaymaster.accounts.service import AccountError, AuthUnavailable, Identity
from quaymaster.api.auth import require_fresh_login, start_session
from quaymaster.api.errors import ApiError
from quaymaster.auditlog import service as auditlog
from quaymaster.content import api_permissions, repositories
from quaymaster.content.views import quota_summary, usage_chart
from quaymaster.db.base import utcnow
from quaymaster.settings.units import parse_duration
from quaymaster.web.paging import read_cursor, write_cursor
from quaymaster.web.render import (
    check_csrf,
    ctx_of,
    flash,
    identity_of,
    render,
    require_signin,
)

TABS = (("repos", "Repositories"), ("teams", "Teams and members"), ("robots", "Robot accounts"),
        ("defaultperms", "Default permissions"), ("logs", "Usage logs"), ("settings", "Settings"))
MEMBER_TABS = {"teams", "robots"}
ADMIN_TABS = {"defaultperms", "logs", "settings"}
TEAM_ROLES = (("member", "Member"), ("creator", "Creator — also creates repositories"),
              ("admin", "Admin — full control"))
REPO_ROLES = ("read", "write", "admin")
REPOS_PER_PAGE = 30
LIST_LIMIT = 500  # robots, members: shown at most this many, with a note when cut
CHOICES_LIMIT = 200  # names offered in a <datalist>
LOG_DAYS = 30


def _field(form: FormData, name: str, limit: int = 1024) -> str:
    value = form.get(name)
    return value[:limit].strip() if isinstance(value, str) else ""


def error_text(exc: Exception) -> str:
    """An API or account error as a sentence for the page."""
    if isinstance(exc, ApiError):
        text = exc.message
    elif isinstance(exc, ValidationError):
        text = "; ".join(e.get("msg", "invalid value") for e in exc.errors())
    else:
        text = str(exc)
    text = text.strip() or "That did not work."
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def duration_text(seconds: int) -> str:
    """A time-machine window in words: 1209600 -> "2 weeks"; 0 -> "None"."""
    if seconds <= 0:
        return "None (deleted tags cannot be restored)"
    for unit, length in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % length == 0:
            count = seconds // length
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


# --- usage logs (shared with the superuser panel) ------------------------------------------------

async def usage_logs_context(request: Request, base_url: str, **scope) -> dict:
    """The chart of the last 30 days and one page of entries (newest first) for a log scope:
    `account_id=` for a namespace, nothing for the whole registry."""
    ctx = ctx_of(request)
    await ctx.audit.flush()
    today = utcnow().date()
    first_day = today - timedelta(days=LOG_DAYS - 1)
    start = datetime.combine(first_day, datetime.min.time())
    end = datetime.combine(today + timedelta(days=1), datetime.min.time())
    async with ctx.db.read() as session:
        counts = await auditlog.aggregate_logs(session, auditlog.LogFilter(start=start, end=end, **scope))
        entries, after = await auditlog.lookup_logs(
            session, auditlog.LogFilter(start=datetime(1970, 1, 1), end=end, **scope),
            after=read_cursor(request), limit=auditlog.LOGS_PER_PAGE)
    older = write_cursor(request, after)
    return {"chart": usage_chart(counts, first_day, LOG_DAYS), "log_entries": entries, "older": older,
            "first_day": first_day, "last_day": today, "logs_base": base_url,
            "newer_link": bool(request.query_params.get("before"))}


# --- access --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OrgAccess:
    identity: Identity
    org: User
    is_member: bool
    is_admin: bool


async def _org_access(request: Request, name: str, need: str = "any") -> OrgAccess:
    """The organization and the visitor's standing in it; `need` is any, member or admin.

    Unlike the API's org_access (403 for a signed-in outsider), a page answers 404 to anyone
    outside the organization, so its teams and robots do not even show that they exist."""
    identity = await identity_of(request)
    ctx = ctx_of(request)
    if identity.anonymous and (need != "any" or not ctx.settings.FEATURE_ANONYMOUS_ACCESS):
        await require_signin(request)
    async with ctx.db.read() as session:
        org = await orgs.get_org(session, name)
        if org is None:
            raise HTTPException(404)
        is_member = await permissions.is_org_member(session, identity, org)
        is_admin = is_member and await permissions.is_org_admin(session, identity, org)
    if need in ("member", "admin") and not is_member:
        raise HTTPException(404)
    if need == "admin" and not is_admin:
        raise HTTPException(403, f"Only administrators of {org.username} can see or change this.")
    return OrgAccess(identity, org, is_member, is_admin)


async def _org_write(request: Request, need: str = "admin") -> tuple[OrgAccess, FormData]:
    """For POSTs: signed in, a valid CSRF token, then the rights on the organization."""
    await require_signin(request)
    form = await check_csrf(request)
    return await _org_access(request, request.path_params["org"], need), form


def _org_base(org: User | str) -> str:
    return f"/organization/{org if isinstance(org, str) else org.username}"


def _back(org: User, tab: str, anchor: str = "") -> RedirectResponse:
    return RedirectResponse(f"{_org_base(org)}?tab={tab}{anchor}", status_code=303)


def is_fresh(request: Request, identity: Identity) -> bool:
    try:
        require_fresh_login(request, identity)
    except ApiError:
        return False
    return True


async def reconfirm_password(request: Request, identity: Identity, password: str) -> str | None:
    """Check the signed-in user's password again and restart the session's login time (a fresh
    login, as POST /api/v1/signin/verify gives); returns an error to show, or None."""
    if not password:
        return "Enter your password."
    ctx = ctx_of(request)
    try:
        async with ctx.db.write() as session:
            user = await session.get(User, identity.user_id)
            ok = user is not None and await credentials.confirm_password(session, ctx.settings, user, password)
    except AuthUnavailable:
        return "Your password cannot be checked right now (the directory does not answer). Try again later."
    except users.LoginThrottled as exc:
        return error_text(exc)
    if not ok:
        return "That password is not correct."
    start_session(request, user)  # the login time restarts; the CSRF token changes with it
    return None


async def confirm_fresh(request: Request, identity: Identity, form: FormData) -> str | None:
    """Sensitive changes need a recent sign-in (as in the API). When the session is older, the
    form carries the password again; returns an error to show, or None when all is well."""
    if is_fresh(request, identity):
        return None
    password = form.get("confirm_password")
    if not isinstance(password, str) or not password:
        return "Your sign-in is more than a few minutes old: enter your password to confirm."
    return await reconfirm_password(request, identity, password)


# --- create an organization ----------------------------------------------------------------------

async def new_org(request: Request) -> Response:
    identity = await require_signin(request)
    if identity.kind != "user":
        raise HTTPException(403, "Only users can create organizations.")
    values, errors = {"name": "", "email": ""}, {}
    if request.method == "POST":
        form = await check_csrf(request)
        values = {"name": _field(form, "name", 255), "email": _field(form, "email", 255)}
        if not values["name"]:
            errors["name"] = "Choose a name for the organization."
        else:
            try:
                await api_orgs.create_org(request, api_orgs.NewOrg(name=values["name"], email=values["email"] or None),
                                          identity)
            except (ApiError, AccountError, ValidationError) as exc:
                text = error_text(exc).replace("Invalid username", "Invalid organization name")
                errors["email" if "email" in text.lower() else "name"] = text
        if not errors:
            flash(request, f"Organization {values['name']} created. You are in its owners team.", "success")
            return RedirectResponse(_org_base(values["name"]), status_code=303)
    return await render(request, "orgs/new.html", {"values": values, "errors": errors},
                        status=400 if errors else 200)


# --- one organization ----------------------------------------------------------------------------

def _tabs_for(access: OrgAccess) -> list[tuple[str, str]]:
    return [(key, text) for key, text in TABS
            if (key not in MEMBER_TABS or access.is_member) and (key not in ADMIN_TABS or access.is_admin)]


def _after_param(request: Request) -> int | None:
    try:
        value = int(request.query_params.get("after", ""))
    except ValueError:
        return None
    return value if value > 0 else None


async def _repos_context(request: Request, access: OrgAccess) -> dict:
    ctx = ctx_of(request)
    identity = access.identity
    viewer = repositories.Viewer(
        user_id=identity.user_id, is_user=identity.kind == "user",
        sees_everything=identity.superuser and ctx.settings.FEATURE_SUPERUSERS_FULL_ACCESS)
    after = _after_param(request)
    async with ctx.db.read() as session:
        rows = await repositories.visible(session, viewer, include_public=True, namespace=access.org.username,
                                          after_id=after, limit=REPOS_PER_PAGE + 1)
        page = rows[:REPOS_PER_PAGE]
        changed = await repositories.last_modified(session, [r.id for r in page])
        can_create = await permissions.can_create_in(session, identity, access.org)
    return {"repos": page, "changed": changed, "next_after": page[-1].id if len(rows) > REPOS_PER_PAGE else None,
            "paged": after is not None, "can_create": can_create}


async def _teams_context(request: Request, access: OrgAccess) -> dict:
    org, identity = access.org, access.identity
    async with ctx_of(request).db.read() as session:
        teams = await orgs.list_teams(session, org)
        counts = await orgs.team_counts(session, org)
        mine = {t.id for t in await orgs.member_teams(session, org, identity.user_id)}
        members = await orgs.org_members(session, org) if access.is_admin else []
    people = [(u, t) for u, t in members if not u.robot]
    return {"teams": [{"team": t, "members": counts.get(t.id, (0, 0))[0], "repos": counts.get(t.id, (0, 0))[1],
                       "can_view": access.is_admin or t.id in mine, "mine": t.id in mine} for t in teams],
            "members": people[:LIST_LIMIT], "members_cut": len(people) > LIST_LIMIT, "team_roles": TEAM_ROLES}


async def robots_list_context(request: Request, owner: User, *, teams: bool) -> dict:
    """Robots of a user or organization with their teams and how many repositories they reach."""
    async with ctx_of(request).db.read() as session:
        found = await robots.list_robots(session, owner, LIST_LIMIT + 1)
        ids = [r.id for r, _ in found[:LIST_LIMIT]]
        team_names = await robots.teams_of_robots(session, ids) if teams else {}
        grants = await robots.permissions_of_robots(session, ids)
    return {"robots": [{"robot": r, "shortname": robots.shortname(r), "description": row.description,
                        "teams": team_names.get(r.id, []), "repo_count": len(grants.get(r.id, []))}
                       for r, row in found[:LIST_LIMIT]],
            "robots_cut": len(found) > LIST_LIMIT}


async def _prototypes_context(request: Request, access: OrgAccess) -> dict:
    org = access.org
    listing = await api_orgs.list_prototypes(request, org.username, access.identity)
    async with ctx_of(request).db.read() as session:
        robot_names = [r.username for r, _ in await robots.list_robots(session, org, CHOICES_LIMIT)]
        team_names = [t.name for t in await orgs.list_teams(session, org)]
    return {"prototypes": listing["prototypes"], "robot_names": robot_names, "team_names": team_names,
            "repo_roles": REPO_ROLES}


def expiration_choices(request: Request) -> list[tuple[int, str]]:
    seconds = sorted({parse_duration(o) for o in ctx_of(request).settings.TAG_EXPIRATION_OPTIONS})
    return [(s, duration_text(s)) for s in seconds]


async def org_page(request: Request, *, tab: str | None = None, status: int = 200,
                   extra: dict | None = None) -> Response:
    access = await _org_access(request, request.path_params["org"])
    tab = tab or request.query_params.get("tab", "repos")
    tabs = _tabs_for(access)
    if tab not in dict(TABS):
        tab = "repos"
    if tab in MEMBER_TABS | ADMIN_TABS:  # outsiders: 404, members on admin tabs: 403
        await _org_access(request, access.org.username, "admin" if tab in ADMIN_TABS else "member")
    org = access.org
    context = {"org": org, "access": access, "tab": tab, "tabs": tabs, "base": _org_base(org), "errors": {},
               "values": {}, "host": ctx_of(request).settings.SERVER_HOSTNAME}
    if tab == "repos":
        context.update(await _repos_context(request, access))
    elif tab == "teams":
        context.update(await _teams_context(request, access))
    elif tab == "robots":
        context.update(await robots_list_context(request, org, teams=True))
        context["robots_base"] = f"{_org_base(org)}/robots"
        context["can_manage"] = access.is_admin
    elif tab == "defaultperms":
        context.update(await _prototypes_context(request, access))
    elif tab == "logs":
        context.update(await usage_logs_context(request, f"{_org_base(org)}?tab=logs", account_id=org.id))
    elif tab == "settings":
        ctx = ctx_of(request)
        async with ctx.db.read() as session:
            context["quota"] = await quota_summary(session, ctx.settings, org.id)
        context.update({"expiration_choices": expiration_choices(request),
                        "can_change_expiration": ctx_of(request).settings.FEATURE_CHANGE_TAG_EXPIRATION,
                        "expiration_text": duration_text(org.removed_tag_expiration_s),
                        "needs_password": not is_fresh(request, access.identity)})
    context.update(extra or {})
    return await render(request, "orgs/org.html", context, status=status)


async def org_page_get(request: Request) -> Response:
    return await org_page(request)


async def _fail(request: Request, tab: str, message: str | None = None, status: int = 400, **extra) -> Response:
    """Show an error in place: the same tab again, with the message and the values sent."""
    if message:
        extra["error"] = message
    return await org_page(request, tab=tab, status=status, extra=extra)


# --- teams and members ---------------------------------------------------------------------------

async def create_team(request: Request) -> Response:
    access, form = await _org_write(request)
    org = access.org
    values = {"name": _field(form, "name", 255), "role": _field(form, "role", 16) or "member",
              "description": _field(form, "description", 4096)}
    errors = {}
    if not values["name"]:
        errors["team_name"] = "Enter a team name."
    elif values["role"] not in dict(TEAM_ROLES):
        errors["team_role"] = "Choose member, creator or admin."
    else:
        async with ctx_of(request).db.read() as session:
            if await orgs.get_team(session, org, values["name"]) is not None:
                errors["team_name"] = f"{org.username} already has a team named {values['name']}."
    if not errors:
        try:
            await api_orgs.put_team(request, org.username, values["name"],
                                    api_orgs.TeamUpdate(role=values["role"], description=values["description"]),
                                    access.identity)
        except (ApiError, AccountError) as exc:
            errors["team_name"] = error_text(exc).replace("Invalid username", "Invalid team name")
    if errors:
        return await _fail(request, "teams", errors=errors, values=values)
    flash(request, f"Team {values['name']} created.", "success")
    return RedirectResponse(f"{_org_base(org)}/teams/{values['name']}", status_code=303)


async def remove_org_member(request: Request) -> Response:
    access, form = await _org_write(request)
    name = _field(form, "name", 255)
    try:
        await api_orgs.remove_member(request, access.org.username, name, access.identity)
    except (ApiError, AccountError) as exc:
        return await _fail(request, "teams", error_text(exc), 404 if getattr(exc, "status", 400) == 404 else 400)
    flash(request, f"{name} was removed from every team of {access.org.username}.", "success")
    return _back(access.org, "teams", "#members")


async def _team_access(request: Request, need: str = "member") -> tuple[OrgAccess, object]:
    access = await _org_access(request, request.path_params["org"], need)
    async with ctx_of(request).db.read() as session:
        team = await orgs.get_team(session, access.org, request.path_params["team"])
    if team is None:
        raise HTTPException(404)
    return access, team


def _team_base(org: User, team_name: str) -> str:
    return f"{_org_base(org)}/teams/{team_name}"


async def team_page(request: Request, *, status: int = 200, extra: dict | None = None) -> Response:
    access, team = await _team_access(request)
    org = access.org
    # Org admins see every team; other members only the teams they are in (as the API answers).
    listing = await api_orgs.team_members(request, org.username, team.name, access.identity)
    async with ctx_of(request).db.read() as session:
        granted = await permissions.permissions_of_team(session, team)
        repos = await api_orgs.namespace_repositories(session, org) if granted else {}
        robot_names = [r.username for r, _ in await robots.list_robots(session, org, CHOICES_LIMIT)] \
            if access.is_admin else []
        repo_names = [r.name for r in await repositories.visible(
            session, repositories.Viewer(user_id=access.identity.user_id), include_public=False,
            namespace=org.username, limit=CHOICES_LIMIT)] if access.is_admin else []
    members = listing["members"]
    context = {
        "org": org, "team": team, "access": access, "base": _team_base(org, team.name),
        "org_base": _org_base(org), "people": [m for m in members if not m["is_robot"]],
        "robot_members": [m for m in members if m["is_robot"]], "can_edit": listing["can_edit"],
        "permissions": sorted(((repos[r].name, role, repos[r].visibility) for r, role in granted if r in repos)),
        "robot_names": robot_names, "repo_names": repo_names, "team_roles": TEAM_ROLES, "repo_roles": REPO_ROLES,
        "is_owners": team.name == orgs.OWNERS_TEAM, "errors": {}, "values": {},
    }
    context.update(extra or {})
    return await render(request, "orgs/team.html", context, status=status)


async def team_page_get(request: Request) -> Response:
    return await team_page(request)


async def _team_write(request: Request):
    await require_signin(request)
    form = await check_csrf(request)
    access, team = await _team_access(request, "admin")
    return access, team, form


async def _team_fail(request: Request, message: str, status: int = 400, **extra) -> Response:
    return await team_page(request, status=status, extra={"error": message, **extra})


async def update_team(request: Request) -> Response:
    access, team, form = await _team_write(request)
    role, description = _field(form, "role", 16), _field(form, "description", 4096)
    if role not in dict(TEAM_ROLES):
        return await _team_fail(request, "Choose member, creator or admin.")
    try:
        await api_orgs.put_team(request, access.org.username, team.name,
                                api_orgs.TeamUpdate(role=role, description=description), access.identity)
    except (ApiError, AccountError) as exc:
        return await _team_fail(request, error_text(exc))
    flash(request, f"Team {team.name} saved.", "success")
    return RedirectResponse(_team_base(access.org, team.name), status_code=303)


async def delete_team(request: Request) -> Response:
    access, team, _ = await _team_write(request)
    try:
        await api_orgs.delete_team(request, access.org.username, team.name, access.identity)
    except (ApiError, AccountError) as exc:
        return await _team_fail(request, error_text(exc))
    flash(request, f"Team {team.name} deleted.", "success")
    return _back(access.org, "teams")


async def add_team_member(request: Request) -> Response:
    access, team, form = await _team_write(request)
    name = _field(form, "name", 255)
    if not name:
        return await _team_fail(request, "Enter a username or robot name.", errors={"member": "Enter a name."})
    try:
        await api_orgs.add_team_member(request, access.org.username, team.name, name, access.identity)
    except (ApiError, AccountError) as exc:
        return await _team_fail(request, error_text(exc), errors={"member": error_text(exc)}, values={"member": name})
    flash(request, f"{name} is now in team {team.name}.", "success")
    return RedirectResponse(_team_base(access.org, team.name) + "#members", status_code=303)


async def remove_team_member(request: Request) -> Response:
    access, team, form = await _team_write(request)
    name = _field(form, "name", 255)
    try:
        await api_orgs.remove_team_member(request, access.org.username, team.name, name, access.identity)
    except (ApiError, AccountError) as exc:
        return await _team_fail(request, error_text(exc))
    flash(request, f"{name} was removed from team {team.name}.", "success")
    return RedirectResponse(_team_base(access.org, team.name) + "#members", status_code=303)


async def set_team_permission(request: Request) -> Response:
    access, team, form = await _team_write(request)
    repo, role = _field(form, "repository", 255), _field(form, "role", 8)
    if role not in REPO_ROLES:
        return await _team_fail(request, "Choose read, write or admin.")
    if not repo:
        return await _team_fail(request, "Enter a repository of the organization.",
                                errors={"repository": "Enter a repository name."})
    try:
        await api_permissions.set_team_permission(request, access.org.username, repo, team.name,
                                                  api_permissions.RoleBody(role=role), access.identity)
    except (ApiError, AccountError) as exc:
        text = f"{access.org.username} has no repository {repo}." if getattr(exc, "status", 400) == 404 \
            else error_text(exc)
        return await _team_fail(request, text, errors={"repository": text}, values={"repository": repo})
    flash(request, f"Team {team.name} now has {role} permission on {access.org.username}/{repo}.", "success")
    return RedirectResponse(_team_base(access.org, team.name) + "#permissions", status_code=303)


async def remove_team_permission(request: Request) -> Response:
    access, team, form = await _team_write(request)
    repo = _field(form, "repository", 255)
    try:
        await api_permissions.delete_team_permission(request, access.org.username, repo, team.name, access.identity)
    except (ApiError, AccountError) as exc:
        return await _team_fail(request, error_text(exc))
    flash(request, f"Team {team.name} no longer has a permission on {access.org.username}/{repo}.", "success")
    return RedirectResponse(_team_base(access.org, team.name) + "#permissions", status_code=303)


# --- robot accounts (of an organization or of the signed-in user) --------------------------------

@dataclass(frozen=True)
class RobotOwner:
    """Whose robots a page manages, where its pages live, and who is asking."""

    identity: Identity
    namespace: User
    is_org: bool
    list_url: str  # the robots listing
    base: str  # robot pages live under base/<shortname>

    @property
    def api_owner(self) -> api_robots.Owner:
        return api_robots.Owner(self.namespace, manager=True)


async def _robot_owner(request: Request) -> RobotOwner:
    """Organization robots: its administrators; user robots: that user alone (others: 404)."""
    if "org" in request.path_params:
        access = await _org_access(request, request.path_params["org"], "admin")
        base = f"{_org_base(access.org)}/robots"
        return RobotOwner(access.identity, access.org, True, f"{_org_base(access.org)}?tab=robots", base)
    identity = await require_signin(request)
    name = request.path_params["name"]
    if identity.kind != "user" or identity.username != name:
        raise HTTPException(404)
    async with ctx_of(request).db.read() as session:
        user = await users.require_user(session, name)
    base = f"/user/{name}/robots"
    return RobotOwner(identity, user, False, base, base)


async def _robot_write(request: Request) -> tuple[RobotOwner, FormData]:
    await require_signin(request)
    form = await check_csrf(request)
    return await _robot_owner(request), form


async def user_robots_page(request: Request, *, status: int = 200, extra: dict | None = None) -> Response:
    owner = await _robot_owner(request)
    context = {"account": owner.namespace, "robots_base": owner.base, "can_manage": True, "errors": {},
               "values": {}}
    context.update(await robots_list_context(request, owner.namespace, teams=False))
    context.update(extra or {})
    return await render(request, "orgs/user_robots.html", context, status=status)


async def user_robots(request: Request) -> Response:
    if request.method == "POST":
        return await create_robot(request)
    return await user_robots_page(request)


async def create_robot(request: Request) -> Response:
    owner, form = await _robot_write(request)
    shortname, description = _field(form, "name", 255), _field(form, "description", 255)
    values = {"robot_name": shortname, "robot_description": description}
    error = None
    if not shortname:
        error = "Enter a name for the robot."
    else:
        try:
            await api_robots._create(request, owner.identity, owner.api_owner, shortname,
                                     api_robots.RobotDetails(description=description))
        except (ApiError, AccountError, ValidationError) as exc:
            error = error_text(exc)
    if error:
        extra = {"errors": {"robot_name": error}, "values": values}
        if owner.is_org:
            return await _fail(request, "robots", **extra)
        return await user_robots_page(request, status=400, extra=extra)
    flash(request, f"Robot account {owner.namespace.username}+{shortname} created. Its token is below.", "success")
    return RedirectResponse(f"{owner.base}/{shortname}", status_code=303)


async def robot_page(request: Request, *, status: int = 200, extra: dict | None = None) -> Response:
    owner = await _robot_owner(request)
    shortname = request.path_params["robot"]
    ctx = ctx_of(request)
    try:
        view = await api_robots._get(request, owner.api_owner, shortname)
    except AccountError as exc:
        if exc.status == 404:
            raise HTTPException(404) from None
        raise
    granted = await api_robots._permissions(request, owner.api_owner, shortname)
    async with ctx.db.read() as session:
        robot = await robots.require_robot(session, owner.namespace, shortname)
        teams = (await robots.teams_of_robots(session, [robot.id]))[robot.id] if owner.is_org else []
        repo_names = [r.name for r in await repositories.visible(
            session, repositories.Viewer(user_id=owner.identity.user_id), include_public=False,
            namespace=owner.namespace.username, limit=CHOICES_LIMIT)]
    host = ctx.settings.SERVER_HOSTNAME
    context = {
        "owner": owner, "robot": robot, "view": view, "shortname": shortname, "base": f"{owner.base}/{shortname}",
        "podman_login": f"podman login -u '{robot.username}' -p {view['token']} {host}",
        "docker_login": f"docker login -u '{robot.username}' -p {view['token']} {host}",
        "plain_http": ctx.settings.PREFERRED_URL_SCHEME == "http", "host": host,
        "permissions": sorted((p["repository"]["name"], p["role"]) for p in granted["permissions"]),
        "teams": teams, "repo_names": repo_names, "repo_roles": REPO_ROLES, "errors": {}, "values": {},
    }
    context.update(extra or {})
    return await render(request, "orgs/robot.html", context, status=status)


async def robot_page_get(request: Request) -> Response:
    return await robot_page(request)


async def regenerate_robot(request: Request) -> Response:
    owner, _ = await _robot_write(request)
    shortname = request.path_params["robot"]
    await api_robots._regenerate(request, owner.identity, owner.api_owner, shortname)
    flash(request, "A new token was generated. The old one no longer works: update every client that used it.",
          "success")
    return RedirectResponse(f"{owner.base}/{shortname}", status_code=303)


async def delete_robot(request: Request) -> Response:
    owner, _ = await _robot_write(request)
    shortname = request.path_params["robot"]
    await api_robots._delete(request, owner.identity, owner.api_owner, shortname)
    flash(request, f"Robot account {owner.namespace.username}+{shortname} deleted.", "success")
    return RedirectResponse(owner.list_url, status_code=303)


async def set_robot_permission(request: Request) -> Response:
    owner, form = await _robot_write(request)
    shortname = request.path_params["robot"]
    repo, role = _field(form, "repository", 255), _field(form, "role", 8)
    fullname = f"{owner.namespace.username}+{shortname}"
    error = None
    if role not in REPO_ROLES:
        error = "Choose read, write or admin."
    elif not repo:
        error = "Enter a repository name."
    else:
        try:
            async with ctx_of(request).db.read() as session:
                await robots.require_robot(session, owner.namespace, shortname)
            await api_permissions.set_user_permission(request, owner.namespace.username, repo, fullname,
                                                      api_permissions.RoleBody(role=role), owner.identity)
        except (ApiError, AccountError) as exc:
            if isinstance(exc, AccountError) and exc.status == 404:
                raise HTTPException(404) from None
            error = f"{owner.namespace.username} has no repository {repo}." if getattr(exc, "status", 400) == 404 \
                else error_text(exc)
    if error:
        return await robot_page(request, status=400, extra={"error": error, "errors": {"repository": error},
                                                            "values": {"repository": repo}})
    flash(request, f"{fullname} now has {role} permission on {owner.namespace.username}/{repo}.", "success")
    return RedirectResponse(f"{owner.base}/{shortname}#permissions", status_code=303)


async def remove_robot_permission(request: Request) -> Response:
    owner, form = await _robot_write(request)
    shortname = request.path_params["robot"]
    repo = _field(form, "repository", 255)
    fullname = f"{owner.namespace.username}+{shortname}"
    try:
        await api_permissions.delete_user_permission(request, owner.namespace.username, repo, fullname,
                                                     owner.identity)
    except (ApiError, AccountError) as exc:
        return await robot_page(request, status=400, extra={"error": error_text(exc)})
    flash(request, f"{fullname} no longer has a permission on {owner.namespace.username}/{repo}.", "success")
    return RedirectResponse(f"{owner.base}/{shortname}#permissions", status_code=303)


# --- default permissions -------------------------------------------------------------------------

async def create_prototype(request: Request) -> Response:
    access, form = await _org_write(request)
    values = {"role": _field(form, "role", 8), "delegate_kind": _field(form, "delegate_kind", 8),
              "delegate": _field(form, "delegate", 255), "activating_user": _field(form, "activating_user", 255)}
    errors = {}
    if values["role"] not in REPO_ROLES:
        errors["proto_role"] = "Choose read, write or admin."
    if values["delegate_kind"] not in ("user", "team"):
        errors["delegate_kind"] = "Choose a user or robot, or a team."
    if not values["delegate"]:
        errors["delegate"] = "Enter who receives the permission."
    if not errors:
        body = api_orgs.NewPrototype(
            role=values["role"], delegate=api_orgs.Delegate(kind=values["delegate_kind"], name=values["delegate"]),
            activating_user=api_orgs.ActivatingUser(name=values["activating_user"]) if values["activating_user"]
            else None)
        try:
            await api_orgs.create_prototype(request, access.org.username, body, access.identity)
        except (ApiError, AccountError) as exc:
            text = error_text(exc)
            errors["activating_user" if "activating" in text.lower() else "delegate"] = text
    if errors:
        return await _fail(request, "defaultperms", errors=errors, values=values)
    flash(request, f"Default permission added: {values['delegate']} gets {values['role']} on new repositories.",
          "success")
    return _back(access.org, "defaultperms")


async def update_prototype(request: Request) -> Response:
    access, form = await _org_write(request)
    role = _field(form, "role", 8)
    if role not in REPO_ROLES:
        return await _fail(request, "defaultperms", "Choose read, write or admin.")
    await api_orgs.update_prototype(request, access.org.username, request.path_params["proto"],
                                    api_orgs.PrototypeUpdate(role=role), access.identity)
    flash(request, f"Default permission changed to {role}.", "success")
    return _back(access.org, "defaultperms")


async def delete_prototype(request: Request) -> Response:
    access, _ = await _org_write(request)
    await api_orgs.delete_prototype(request, access.org.username, request.path_params["proto"], access.identity)
    flash(request, "Default permission removed. Existing repositories keep the permissions they have.", "success")
    return _back(access.org, "defaultperms")


# --- settings and deletion -----------------------------------------------------------------------

async def change_email(request: Request) -> Response:
    access, form = await _org_write(request)
    email = _field(form, "email", 255)
    try:
        await api_orgs.update_org(request, access.org.username, api_orgs.OrgUpdate(email=email), access.identity)
    except (ApiError, AccountError, ValidationError) as exc:
        return await _fail(request, "settings", errors={"email": error_text(exc)}, values={"email": email})
    flash(request, "Contact email saved.", "success")
    return _back(access.org, "settings")


async def change_expiration(request: Request) -> Response:
    access, form = await _org_write(request)
    if not ctx_of(request).settings.FEATURE_CHANGE_TAG_EXPIRATION:
        raise HTTPException(403, "The administrator does not allow changing the time machine window.")
    try:
        seconds = int(_field(form, "tag_expiration_s", 20))
    except ValueError:
        seconds = -1
    allowed = [s for s, _ in expiration_choices(request)]
    if seconds not in allowed:
        return await _fail(request, "settings", errors={"tag_expiration_s": "Choose one of the offered windows."})
    await api_orgs.update_org(request, access.org.username, api_orgs.OrgUpdate(tag_expiration_s=seconds),
                              access.identity)
    flash(request, f"Time machine window set to {duration_text(seconds)}.", "success")
    return _back(access.org, "settings")


async def delete_org(request: Request) -> Response:
    access, form = await _org_write(request)
    org = access.org
    if _field(form, "confirm_name", 255) != org.username:
        return await _fail(request, "settings", errors={"confirm_name": f"Type {org.username} to confirm."})
    problem = await confirm_fresh(request, access.identity, form)
    if problem:
        return await _fail(request, "settings", errors={"confirm_password": problem}, status=403)
    try:
        await api_orgs.delete_org(request, org.username, access.identity)
    except (ApiError, AccountError) as exc:
        return await _fail(request, "settings", errors={"delete": error_text(exc)})
    flash(request, f"Organization {org.username} deleted.", "success")
    return RedirectResponse("/repository/", status_code=303)


ORG = "/organization/{org}"
TEAM = ORG + "/teams/{team}"
ORG_ROBOT = ORG + "/robots/{robot}"
USER_ROBOTS = "/user/{name}/robots"
USER_ROBOT = USER_ROBOTS + "/{robot}"
POST = ["POST"]

routes = [
    Route("/organizations/new", new_org, methods=["GET", "POST"]),
    Route("/organizations/new/", new_org, methods=["GET", "POST"]),
    Route(ORG, org_page_get),
    Route(ORG + "/teams", create_team, methods=POST),
    Route(ORG + "/members/remove", remove_org_member, methods=POST),
    Route(TEAM, team_page_get),
    Route(TEAM + "/update", update_team, methods=POST),
    Route(TEAM + "/delete", delete_team, methods=POST),
    Route(TEAM + "/members", add_team_member, methods=POST),
    Route(TEAM + "/members/remove", remove_team_member, methods=POST),
    Route(TEAM + "/permissions", set_team_permission, methods=POST),
    Route(TEAM + "/permissions/remove", remove_team_permission, methods=POST),
    Route(ORG + "/robots", create_robot, methods=POST),
    Route(ORG_ROBOT, robot_page_get),
    Route(ORG_ROBOT + "/regenerate", regenerate_robot, methods=POST),
    Route(ORG_ROBOT + "/delete", delete_robot, methods=POST),
    Route(ORG_ROBOT + "/permissions", set_robot_permission, methods=POST),
    Route(ORG_ROBOT + "/permissions/remove", remove_robot_permission, methods=POST),
    Route(ORG + "/prototypes", create_prototype, methods=POST),
    Route(ORG + "/prototypes/{proto}", update_prototype, methods=POST),
    Route(ORG + "/prototypes/{proto}/delete", delete_prototype, methods=POST),
    Route(ORG + "/settings/email", change_email, methods=POST),
    Route(ORG + "/settings/expiration", change_expiration, methods=POST),
    Route(ORG + "/delete", delete_org, methods=POST),
    Route(USER_ROBOTS, user_robots, methods=["GET", "POST"]),
    Route(USER_ROBOT, robot_page_get),
    Route(USER_ROBOT + "/regenerate", regenerate_robot, methods=POST),
    Route(USER_ROBOT + "/delete", delete_robot, methods=POST),
    Route(USER_ROBOT + "/permissions", set_robot_permission, methods=POST),
    Route(USER_ROBOT + "/permissions/remove", remove_robot_permission, methods=POST),
]
