"""/api/v1 search: repositories by name or description, and the entity picker (users, robots,
teams, organizations) behind permission dialogs. Nobody finds a repository they may not read."""

from fastapi import APIRouter, Depends, Query, Request

from quaymaster.accounts import orgs, permissions, robots
from quaymaster.accounts import service as users
from quaymaster.accounts.models import User
from quaymaster.accounts.service import Identity
from quaymaster.api.auth import ctx_of, current_identity, signed_in
from quaymaster.content import service as content
from quaymaster.content.service import RepoSearchHit

router = APIRouter(tags=["search"])

RESULTS_PER_PAGE = 10
MAX_RESULT_PAGES = 10
ENTITY_LIMIT = 10
# Quay ranks kinds of result against each other with these base scores.
NAMESPACE_SCORE = 1
REPOSITORY_SCORE = 4
REPO_SCOPES = ("repo:read", "repo:write", "repo:admin")


def _namespace_view(name: str, is_org: bool) -> dict:
    return {"title": "org" if is_org else "user", "kind": "organization" if is_org else "user",
            "avatar": {"name": name, "kind": "org" if is_org else "user"}, "name": name,
            "score": NAMESPACE_SCORE, "href": f"/{'organization' if is_org else 'user'}/{name}"}


def _repo_view(hit: RepoSearchHit) -> dict:
    kind = "application" if hit.kind == "application" else "repository"
    view = {"kind": kind, "title": "app" if kind == "application" else "repo",
            "namespace": _namespace_view(hit.namespace, hit.namespace_is_org), "name": hit.name,
            "description": hit.description, "is_public": hit.visibility == "public", "score": REPOSITORY_SCORE,
            "href": f"/{kind}/{hit.namespace}/{hit.name}", "stars": hit.stars}
    if hit.last_modified_ms is not None:
        view["last_modified"] = hit.last_modified_ms // 1000
    return view


@router.get("/find/repositories", summary="Search the repositories you may read")
async def find_repositories(request: Request, query: str = Query(""), page: int = Query(1),
                            identity: Identity = Depends(current_identity)):
    ctx = ctx_of(request)
    page = min(max(1, page), MAX_RESULT_PAGES)
    offset = (page - 1) * RESULTS_PER_PAGE
    # A token without any repository scope reads only what everyone may read.
    reads = not identity.anonymous and any(identity.has_scope(s) for s in REPO_SCOPES)
    async with ctx.db.read() as session:
        hits = await content.search_repositories(
            session, query, user_id=identity.user_id if reads else None, user_is_robot=identity.kind == "robot",
            include_public=ctx.settings.FEATURE_ANONYMOUS_ACCESS or not identity.anonymous,
            see_all=reads and identity.superuser and ctx.settings.FEATURE_SUPERUSERS_FULL_ACCESS,
            offset=offset, limit=RESULTS_PER_PAGE + 1)
    return {"results": [_repo_view(h) for h in hits[:RESULTS_PER_PAGE]],
            "has_additional": len(hits) > RESULTS_PER_PAGE, "page": page, "page_size": RESULTS_PER_PAGE,
            "start_index": offset}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes", "on")


@router.get("/entities/{prefix}", summary="Users, your robots, and an organization's teams matching a prefix")
async def entities(request: Request, prefix: str, namespace: str = Query(""),
                   includeTeams: str | None = Query(None), includeOrgs: str | None = Query(None),
                   identity: Identity = Depends(signed_in)):
    prefix = prefix.replace(" ", "").lower()
    ctx = ctx_of(request)
    teams: list[dict] = []
    org_entries: list[dict] = []
    robot_owner: User | None = None
    member_ids: set[int] = set()
    async with ctx.db.read() as session:
        org = await orgs.get_org(session, namespace) if namespace else None
        if org is not None and await permissions.is_org_member(session, identity, org):
            # Only an organization's members learn its teams and robots.
            robot_owner = org
            member_ids = {member.id for member, _ in await orgs.org_members(session, org)}
            if _truthy(includeTeams):
                teams = [{"name": t.name, "kind": "team", "is_org_member": True,
                          "avatar": {"name": t.name, "kind": "team"}}
                         for t in await orgs.list_teams(session, org) if t.name.startswith(prefix)]
            if _truthy(includeOrgs) and org.username.startswith(prefix):
                org_entries = [{"name": org.username, "kind": "org", "is_org_member": True,
                                "avatar": {"name": org.username, "kind": "org"}}]
        elif namespace and identity.kind == "user" and namespace == identity.username:
            robot_owner = await users.get_user(session, namespace)
        found = [u for u in await users.list_users(session, include_disabled=False)
                 if u.username.startswith(prefix)][:ENTITY_LIMIT]
        if robot_owner is not None and len(found) < ENTITY_LIMIT:
            short = prefix.removeprefix(robot_owner.username + "+")
            found += [r for r, _ in await robots.list_robots(session, robot_owner)
                      if r.username.split("+", 1)[1].startswith(short)][:ENTITY_LIMIT - len(found)]

    def user_view(user: User) -> dict:
        view = {"name": user.username, "kind": "user", "is_robot": user.robot,
                "avatar": {"name": user.username, "kind": "user"}}
        if org is not None and robot_owner is org:
            view["is_org_member"] = user.robot or user.id in member_ids
        return view

    return {"results": teams + [user_view(u) for u in found] + org_entries}
