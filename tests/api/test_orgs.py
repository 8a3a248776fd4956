"""Organizations, members, collaborators, teams and default permissions under /api/v1, and what
team roles and default permissions then grant through /v2/auth."""

import jwt
import pytest

from quaymaster.accounts import orgs, permissions
from quaymaster.accounts import service as users
from quaymaster.api import auth as api_auth
from quaymaster.auditlog import service as auditlog
from quaymaster.content import gc
from quaymaster.content import service as content

from .helpers import assert_error, bearer, signin

ORG = "/api/v1/organization"


# --- helpers shared with test_robots ---------------------------------------------------------------

async def make_user(ctx, name: str) -> None:
    async with ctx.db.write() as session:
        await users.create_user(session, name, f"{name}@example.com", f"{name}-password")


async def make_org(http, headers: dict, name: str = "acme") -> None:
    r = await http.post(f"{ORG}/", json={"name": name, "email": f"{name}@example.com"}, headers=headers)
    assert r.status_code == 201, r.text


async def make_team(http, headers: dict, team: str, role: str, *members: str, org: str = "acme") -> None:
    r = await http.put(f"{ORG}/{org}/team/{team}", json={"role": role}, headers=headers)
    assert r.status_code == 200, r.text
    for member in members:
        r = await http.put(f"{ORG}/{org}/team/{team}/members/{member}", headers=headers)
        assert r.status_code == 200, r.text


async def make_repo(ctx, path: str, visibility: str = "private", creator: str | None = None) -> int:
    namespace, name = path.split("/")
    async with ctx.db.write() as session:
        ns = await users.get_namespace(session, namespace)
        creator_id = (await users.get_namespace(session, creator)).id if creator else None
        return (await content.create_repository(session, ns, name, visibility, creator_id=creator_id)).id


async def grant(ctx, repo_id: int, role: str, *, user: str | None = None, team: tuple[str, str] | None = None) -> None:
    async with ctx.db.write() as session:
        if user is not None:
            await permissions.set_permission(session, repo_id, role, user=await users.get_namespace(session, user))
        else:
            org = await orgs.require_org(session, team[0])
            await permissions.set_permission(session, repo_id, role, team=await orgs.require_team(session, org, team[1]))


async def registry_actions(http, user: str, password: str, repo: str, actions: str = "pull,push") -> list[str] | None:
    """The actions /v2/auth grants on `repo` for Basic credentials; None when they are refused."""
    r = await http.get("/v2/auth", params={"service": "registry.test", "scope": f"repository:{repo}:{actions}"},
                       auth=(user, password))
    if r.status_code == 401:
        return None
    assert r.status_code == 200, r.text
    return jwt.decode(r.json()["token"], options={"verify_signature": False})["access"][0]["actions"]


async def logged(ctx, namespace: str) -> list[tuple[str, dict]]:
    """(kind, metadata) of the namespace's action log, oldest first."""
    await ctx.audit.flush()
    async with ctx.db.read() as session:
        ns = await users.get_namespace(session, namespace)
        rows = await auditlog.entries(session, account_id=ns.id)
    return [(r.kind, r.metadata_json) for r in reversed(rows)]


@pytest.fixture
async def alice(ctx) -> dict:
    return await bearer(ctx, "alice")


@pytest.fixture
async def bob(ctx) -> dict:
    return await bearer(ctx, "bob")


@pytest.fixture
async def acme(http, alice) -> str:
    await make_org(http, alice)
    return "acme"


# --- the organization ------------------------------------------------------------------------------

async def test_create_org_by_session_and_view_as_admin(http, ctx):
    csrf = await signin(http, "alice")
    r = await http.post(f"{ORG}/", json={"name": "acme", "email": "acme@example.com"}, headers=csrf)
    assert r.status_code == 201 and r.json() == "Created"
    view = (await http.get(f"{ORG}/acme")).json()
    assert view["name"] == "acme" and view["email"] == "acme@example.com"
    assert view["is_admin"] is True and view["is_member"] is True and view["can_create_repo"] is True
    assert view["ordered_teams"] == ["owners"] and view["tag_expiration_s"] == 1209600
    assert view["teams"]["owners"] == {"name": "owners", "description": "", "role": "admin",
                                       "avatar": {"name": "owners", "kind": "team"}, "can_view": True,
                                       "repo_count": 0, "member_count": 1, "is_synced": False}
    assert ("org_create", {"email": "acme@example.com", "namespace": "acme"}) in await logged(ctx, "acme")
    # The creator's own view lists the new organization as administered.
    me = (await http.get("/api/v1/user/")).json()
    assert me["organizations"] == [{"name": "acme", "is_org_admin": True, "avatar": {"name": "acme", "kind": "org"}}]


async def test_create_org_errors(http, ctx, alice):
    assert_error(await http.post(f"{ORG}/", json={"name": "acme"}), 401)
    await make_org(http, alice)
    assert_error(await http.post(f"{ORG}/", json={"name": "acme"}, headers=alice), 400)
    assert_error(await http.post(f"{ORG}/", json={"name": "bob"}, headers=alice), 400)  # a user's name
    assert_error(await http.post(f"{ORG}/", json={"name": "Not Valid"}, headers=alice), 400)
    assert_error(await http.post(f"{ORG}/", json={"name": "other", "email": "nope"}, headers=alice), 400)
    assert_error(await http.post(f"{ORG}/", json={}, headers=alice), 400)
    assert_error(await http.post(f"{ORG}/", json={"name": "other", "email": "a" * 250 + "@example.com"},
                                 headers=alice), 400)
    assert_error(await http.post(f"{ORG}/", json={"name": "x" * 256}, headers=alice), 400)
    read_only = await bearer(ctx, "alice", "user:read org:admin")
    assert_error(await http.post(f"{ORG}/", json={"name": "other"}, headers=read_only), 403)


async def test_org_view_for_outsiders_members_and_anonymous(http, ctx, alice, bob, acme):
    outsider = (await http.get(f"{ORG}/acme", headers=bob)).json()
    assert outsider["email"] == "" and outsider["is_member"] is False and outsider["is_admin"] is False
    assert "teams" not in outsider and "tag_expiration_s" not in outsider and outsider["can_create_repo"] is False
    anonymous = (await http.get(f"{ORG}/acme")).json()
    assert anonymous["name"] == "acme" and anonymous["is_member"] is False
    await make_team(http, alice, "readers", "member", "bob")
    await make_team(http, alice, "hidden", "member")
    member = (await http.get(f"{ORG}/acme", headers=bob)).json()
    assert member["is_member"] is True and member["is_admin"] is False and member["email"] == ""
    assert member["ordered_teams"] == ["owners", "readers", "hidden"]
    assert {name: t["can_view"] for name, t in member["teams"].items()} == {
        "owners": False, "readers": True, "hidden": False}
    assert_error(await http.get(f"{ORG}/missing", headers=bob), 404)
    assert_error(await http.get(f"{ORG}/bob", headers=bob), 404)  # a user, not an organization


async def test_update_org(http, ctx, alice, bob, acme):
    r = await http.put(f"{ORG}/acme", json={"email": "ops@acme.example", "tag_expiration_s": 86400}, headers=alice)
    assert r.status_code == 200, r.text
    assert r.json()["email"] == "ops@acme.example" and r.json()["tag_expiration_s"] == 86400
    kinds = await logged(ctx, "acme")
    assert ("org_change_email", {"email": "ops@acme.example", "old_email": "acme@example.com",
                                 "namespace": "acme"}) in kinds
    assert ("org_change_tag_expiration", {"tag_expiration": 86400, "namespace": "acme"}) in kinds
    assert_error(await http.put(f"{ORG}/acme", json={"tag_expiration_s": 12345}, headers=alice), 400)
    assert_error(await http.put(f"{ORG}/acme", json={"tag_expiration_s": -1}, headers=alice), 400)
    assert_error(await http.put(f"{ORG}/acme", json={"email": "bob@example.com"}, headers=alice), 400)
    assert_error(await http.put(f"{ORG}/acme", json={"email": "not-an-email"}, headers=alice), 400)
    assert_error(await http.put(f"{ORG}/acme", json={"email": "a" * 250 + "@example.com"}, headers=alice), 400)
    assert (await http.get(f"{ORG}/acme", headers=alice)).json()["email"] == "ops@acme.example"
    # Non-members and plain members are refused; a missing organization is 404.
    assert_error(await http.put(f"{ORG}/acme", json={"email": "x@example.com"}, headers=bob), 403)
    await make_team(http, alice, "readers", "member", "bob")
    assert_error(await http.put(f"{ORG}/acme", json={"email": "x@example.com"}, headers=bob), 403)
    assert_error(await http.put(f"{ORG}/missing", json={"email": "x@example.com"}, headers=alice), 404)
    assert_error(await http.put(f"{ORG}/acme", json={"email": "x@example.com"}), 401)
    # The org:admin scope is what counts for tokens.
    no_scope = await bearer(ctx, "alice", "user:admin repo:admin")
    assert_error(await http.put(f"{ORG}/acme", json={"email": "x@example.com"}, headers=no_scope), 403)
    scoped_only = await bearer(ctx, "alice", "org:admin")
    assert (await http.put(f"{ORG}/acme", json={"tag_expiration_s": 0}, headers=scoped_only)).status_code == 200


async def test_delete_org(http, ctx, alice, bob, acme):
    await make_team(http, alice, "readers", "member", "bob")
    assert (await http.put(f"{ORG}/acme/robots/bot", headers=alice)).status_code == 201
    r = await http.post(f"{ORG}/acme/prototypes", json={"role": "read", "delegate": {"kind": "team", "name": "readers"}},
                        headers=alice)
    assert r.status_code == 200
    assert_error(await http.delete(f"{ORG}/acme", headers=bob), 403)
    assert_error(await http.delete(f"{ORG}/missing", headers=alice), 404)
    repo_id = await make_repo(ctx, "acme/app")
    await grant(ctx, repo_id, "read", team=("acme", "readers"))

    await make_org(http, alice, "empty")
    await make_team(http, alice, "readers", "member", "bob", org="empty")
    assert (await http.put(f"{ORG}/empty/robots/bot", headers=alice)).status_code == 201
    r = await http.post(f"{ORG}/empty/prototypes", json={"role": "write", "delegate": {"kind": "user", "name": "empty+bot"}},
                        headers=alice)
    assert r.status_code == 200
    token = (await http.get(f"{ORG}/empty/robots/bot", headers=alice)).json()["token"]
    assert (await http.delete(f"{ORG}/empty", headers=alice)).status_code == 204
    assert_error(await http.get(f"{ORG}/empty", headers=alice), 404)
    assert await registry_actions(http, "empty+bot", token, "empty/x") is None  # its robot went with it
    assert [o["name"] for o in (await http.get("/api/v1/user/", headers=alice)).json()["organizations"]] == ["acme"]
    # With repositories: the name is free at once, garbage collection removes them and then the org.
    assert (await http.delete(f"{ORG}/acme", headers=alice)).status_code == 204
    assert_error(await http.get(f"{ORG}/acme", headers=alice), 404)
    assert (await http.get("/api/v1/user/", headers=alice)).json()["organizations"] == []
    assert (await gc.collect_garbage(ctx)).namespaces == 1
    await ctx.audit.flush()
    async with ctx.db.read() as session:
        kinds = [e.kind for e in await auditlog.entries(session)]
    assert "org_delete" in kinds


async def test_delete_org_needs_a_fresh_login_from_a_browser(http, ctx, monkeypatch):
    csrf = await signin(http, "alice")
    await make_org(http, csrf, "stale")
    monkeypatch.setattr(api_auth, "FRESH_LOGIN_S", -1)
    assert_error(await http.delete(f"{ORG}/stale", headers=csrf), 401, "fresh_login_required")
    monkeypatch.setattr(api_auth, "FRESH_LOGIN_S", 600)
    r = await http.post("/api/v1/signin/verify", json={"password": "alice-password"}, headers=csrf)
    assert r.status_code == 200
    assert (await http.delete(f"{ORG}/stale", headers={"X-CSRF-Token": r.json()["csrf_token"]})).status_code == 204


async def test_applications_are_an_empty_list(http, alice, bob, acme):
    assert (await http.get(f"{ORG}/acme/applications", headers=alice)).json() == {"applications": []}
    assert_error(await http.get(f"{ORG}/acme/applications", headers=bob), 403)
    assert_error(await http.get(f"{ORG}/missing/applications", headers=alice), 404)


# --- members and collaborators -------------------------------------------------------------------

async def test_members_and_member_details(http, ctx, alice, bob, acme):
    await make_user(ctx, "carol")
    await make_team(http, alice, "readers", "member", "bob")
    await make_team(http, alice, "writers", "member", "bob")
    assert (await http.put(f"{ORG}/acme/robots/bot", headers=alice)).status_code == 201
    await make_team(http, alice, "bots", "member", "acme+bot")
    repo_id = await make_repo(ctx, "acme/app")
    await grant(ctx, repo_id, "write", user="bob")

    members = (await http.get(f"{ORG}/acme/members", headers=alice)).json()["members"]
    assert [m["name"] for m in members] == ["alice", "bob"]  # robots are listed with the robots
    bob_view = members[1]
    assert bob_view["kind"] == "user" and bob_view["repositories"] == ["app"]
    assert [t["name"] for t in bob_view["teams"]] == ["readers", "writers"]

    r = await http.get(f"{ORG}/acme/members/bob", headers=alice)
    assert r.json()["name"] == "bob" and [t["name"] for t in r.json()["teams"]] == ["readers", "writers"]
    robot = (await http.get(f"{ORG}/acme/members/acme+bot", headers=alice)).json()
    assert robot["kind"] == "robot" and [t["name"] for t in robot["teams"]] == ["bots"]
    assert_error(await http.get(f"{ORG}/acme/members/carol", headers=alice), 404)
    assert_error(await http.get(f"{ORG}/acme/members/nobody", headers=alice), 404)
    assert_error(await http.get(f"{ORG}/acme/members", headers=bob), 403)  # a member, not an admin
    assert_error(await http.get(f"{ORG}/acme/members/bob", headers=bob), 403)
    assert_error(await http.get(f"{ORG}/missing/members", headers=alice), 404)
    assert_error(await http.get(f"{ORG}/acme/members"), 401)


async def test_remove_member_from_every_team_and_repository(http, ctx, alice, bob, acme):
    await make_team(http, alice, "readers", "member", "bob")
    await make_team(http, alice, "writers", "member", "bob")
    repo_id = await make_repo(ctx, "acme/app")
    await grant(ctx, repo_id, "write", user="bob")
    assert await registry_actions(http, "bob", "bob-password", "acme/app") == ["pull", "push"]
    assert_error(await http.delete(f"{ORG}/acme/members/bob", headers=bob), 403)
    assert (await http.delete(f"{ORG}/acme/members/bob", headers=alice)).status_code == 204
    assert [m["name"] for m in (await http.get(f"{ORG}/acme/members", headers=alice)).json()["members"]] == ["alice"]
    assert await registry_actions(http, "bob", "bob-password", "acme/app") == []
    removed = [m for k, m in await logged(ctx, "acme") if k == "org_remove_team_member"]
    assert sorted(m["team"] for m in removed) == ["readers", "writers"]
    assert_error(await http.delete(f"{ORG}/acme/members/nobody", headers=alice), 404)
    assert_error(await http.delete(f"{ORG}/acme/members/alice", headers=alice), 400)  # the last owner


async def test_collaborators_are_outside_users_with_permissions(http, ctx, alice, acme):
    await make_user(ctx, "carol")
    await make_team(http, alice, "readers", "member", "bob")
    app = await make_repo(ctx, "acme/app")
    web = await make_repo(ctx, "acme/web", "public")
    for repo_id in (app, web):
        await grant(ctx, repo_id, "read", user="carol")
        await grant(ctx, repo_id, "read", user="bob")
    r = await http.get(f"{ORG}/acme/collaborators", headers=alice)
    assert r.json() == {"collaborators": [{"kind": "user", "name": "carol", "avatar": {"name": "carol", "kind": "user"},
                                           "repositories": ["app", "web"]}]}
    assert_error(await http.get(f"{ORG}/acme/collaborators", headers=await bearer(ctx, "carol")), 403)


# --- teams -----------------------------------------------------------------------------------------

async def test_team_create_update_delete(http, ctx, alice, bob, acme):
    r = await http.put(f"{ORG}/acme/team/readers", json={"role": "member", "description": "Reads"}, headers=alice)
    assert r.json() == {"name": "readers", "description": "Reads", "can_view": True, "role": "member",
                        "avatar": {"name": "readers", "kind": "team"}, "new_team": True}
    r = await http.put(f"{ORG}/acme/team/readers", json={"role": "creator", "description": "Creates"}, headers=alice)
    assert r.json()["new_team"] is False and r.json()["role"] == "creator" and r.json()["description"] == "Creates"
    r = await http.put(f"{ORG}/acme/team/readers", json={"role": "creator"}, headers=alice)
    assert r.json()["description"] == "Creates"  # left out = unchanged
    kinds = [(k, m) for k, m in await logged(ctx, "acme") if k.startswith("org_") and k != "org_create"]
    assert kinds == [("org_create_team", {"team": "readers", "namespace": "acme"}),
                     ("org_set_team_description", {"team": "readers", "description": "Creates", "namespace": "acme"}),
                     ("org_set_team_role", {"team": "readers", "role": "creator", "namespace": "acme"})]
    view = (await http.get(f"{ORG}/acme", headers=alice)).json()
    assert view["teams"]["readers"]["role"] == "creator" and view["ordered_teams"] == ["owners", "readers"]

    assert_error(await http.put(f"{ORG}/acme/team/readers", json={"role": "boss"}, headers=alice), 400)
    assert_error(await http.put(f"{ORG}/acme/team/readers", json={}, headers=alice), 400)
    assert_error(await http.put(f"{ORG}/acme/team/Bad Team", json={"role": "member"}, headers=alice), 400)
    assert_error(await http.put(f"{ORG}/acme/team/owners", json={"role": "member"}, headers=alice), 400)
    assert_error(await http.put(f"{ORG}/acme/team/x", json={"role": "member"}, headers=bob), 403)
    assert_error(await http.put(f"{ORG}/missing/team/x", json={"role": "member"}, headers=alice), 404)

    assert_error(await http.delete(f"{ORG}/acme/team/owners", headers=alice), 400)
    assert_error(await http.delete(f"{ORG}/acme/team/readers", headers=bob), 403)
    assert (await http.delete(f"{ORG}/acme/team/readers", headers=alice)).status_code == 204
    assert ("org_delete_team", {"team": "readers", "namespace": "acme"}) in await logged(ctx, "acme")
    assert_error(await http.delete(f"{ORG}/acme/team/readers", headers=alice), 404)


async def test_team_members(http, ctx, alice, bob, acme):
    await make_user(ctx, "carol")
    await make_team(http, alice, "readers", "member")
    r = await http.put(f"{ORG}/acme/team/readers/members/bob", headers=alice)
    assert r.json() == {"name": "bob", "kind": "user", "is_robot": False,
                        "avatar": {"name": "bob", "kind": "user"}, "invited": False}
    assert ("org_add_team_member", {"member": "bob", "team": "readers", "namespace": "acme"}) in await logged(ctx, "acme")
    assert (await http.put(f"{ORG}/acme/robots/bot", headers=alice)).status_code == 201
    r = await http.put(f"{ORG}/acme/team/readers/members/acme+bot", headers=alice)
    assert r.json()["is_robot"] is True

    listing = (await http.get(f"{ORG}/acme/team/readers/members", headers=alice)).json()
    assert listing["name"] == "readers" and listing["can_edit"] is True
    assert [m["name"] for m in listing["members"]] == ["acme+bot", "bob"]
    # A team member sees their own team, but not others; outsiders see nothing.
    mine = (await http.get(f"{ORG}/acme/team/readers/members", headers=bob)).json()
    assert mine["can_edit"] is False and len(mine["members"]) == 2
    assert_error(await http.get(f"{ORG}/acme/team/owners/members", headers=bob), 403)
    assert_error(await http.get(f"{ORG}/acme/team/readers/members", headers=await bearer(ctx, "carol")), 403)
    assert_error(await http.get(f"{ORG}/acme/team/missing/members", headers=alice), 404)

    # Only users and this organization's robots can join.
    assert_error(await http.put(f"{ORG}/acme/team/readers/members/nobody", headers=alice), 400)
    assert (await http.put("/api/v1/user/robots/mine", headers=alice)).status_code == 201
    assert_error(await http.put(f"{ORG}/acme/team/readers/members/alice+mine", headers=alice), 400)
    assert_error(await http.put(f"{ORG}/acme/team/readers/members/acme", headers=alice), 400)
    assert_error(await http.put(f"{ORG}/acme/team/missing/members/bob", headers=alice), 404)
    assert_error(await http.put(f"{ORG}/acme/team/readers/members/carol", headers=bob), 403)

    assert_error(await http.delete(f"{ORG}/acme/team/readers/members/bob", headers=bob), 403)
    assert (await http.delete(f"{ORG}/acme/team/readers/members/bob", headers=alice)).status_code == 204
    assert ("org_remove_team_member", {"member": "bob", "team": "readers", "namespace": "acme"}) in await logged(ctx, "acme")
    assert_error(await http.delete(f"{ORG}/acme/team/readers/members/bob", headers=alice), 404)
    assert_error(await http.delete(f"{ORG}/acme/team/readers/members/nobody", headers=alice), 404)
    # The last owner stays; with a second owner the first may leave.
    assert_error(await http.delete(f"{ORG}/acme/team/owners/members/alice", headers=alice), 400)
    await make_team(http, alice, "owners", "admin", "carol")
    assert (await http.delete(f"{ORG}/acme/team/owners/members/alice", headers=alice)).status_code == 204
    assert (await http.get(f"{ORG}/acme", headers=alice)).json()["is_admin"] is False


async def test_team_permissions(http, ctx, alice, bob, acme):
    await make_team(http, alice, "readers", "member", "bob")
    app = await make_repo(ctx, "acme/app")
    web = await make_repo(ctx, "acme/web", "public")
    await grant(ctx, app, "read", team=("acme", "readers"))
    await grant(ctx, web, "write", team=("acme", "readers"))
    r = await http.get(f"{ORG}/acme/team/readers/permissions", headers=alice)
    assert sorted(r.json()["permissions"], key=lambda p: p["repository"]["name"]) == [
        {"repository": {"name": "app", "is_public": False}, "role": "read"},
        {"repository": {"name": "web", "is_public": True}, "role": "write"}]
    assert (await http.get(f"{ORG}/acme", headers=alice)).json()["teams"]["readers"]["repo_count"] == 2
    assert (await http.get(f"{ORG}/acme/team/owners/permissions", headers=alice)).json() == {"permissions": []}
    assert_error(await http.get(f"{ORG}/acme/team/readers/permissions", headers=bob), 403)
    assert_error(await http.get(f"{ORG}/acme/team/missing/permissions", headers=alice), 404)


# --- what team roles grant through /v2/auth ----------------------------------------------------------

async def test_creator_team_may_push_to_create_but_member_may_not(http, ctx, alice, acme):
    await make_user(ctx, "carol")
    await make_team(http, alice, "creators", "creator", "bob")
    await make_team(http, alice, "members", "member", "carol")
    assert await registry_actions(http, "bob", "bob-password", "acme/new-by-bob") == ["pull", "push"]
    assert await registry_actions(http, "carol", "carol-password", "acme/new-by-carol") == []
    async with ctx.db.read() as session:
        assert await content.get_repository(session, "acme", "new-by-bob") is not None
        assert await content.get_repository(session, "acme", "new-by-carol") is None
    # The creator is admin of what they created, and nothing else.
    assert await registry_actions(http, "bob", "bob-password", "acme/new-by-bob", "*") == ["*"]
    await make_repo(ctx, "acme/existing")
    assert await registry_actions(http, "bob", "bob-password", "acme/existing") == []
    assert (await http.get(f"{ORG}/acme", headers=await bearer(ctx, "bob"))).json()["can_create_repo"] is True


async def test_admin_team_member_gets_admin_on_every_org_repo(http, ctx, alice, acme):
    await make_repo(ctx, "acme/one")
    await make_repo(ctx, "acme/two", "public")
    await make_team(http, alice, "admins", "admin", "bob")
    for repo in ("acme/one", "acme/two"):
        assert await registry_actions(http, "bob", "bob-password", repo, "pull,push,*") == ["pull", "push", "*"]
    bob_view = (await http.get(f"{ORG}/acme", headers=await bearer(ctx, "bob"))).json()
    assert bob_view["is_admin"] is True and bob_view["email"] == "acme@example.com"
    # ...and therefore may administer the organization through the API.
    assert (await http.get(f"{ORG}/acme/members", headers=await bearer(ctx, "bob"))).status_code == 200


# --- default permissions -----------------------------------------------------------------------------

async def test_prototype_lifecycle(http, ctx, alice, bob, acme):
    await make_team(http, alice, "readers", "member")
    body = {"role": "read", "delegate": {"kind": "team", "name": "readers"}}
    created = (await http.post(f"{ORG}/acme/prototypes", json=body, headers=alice)).json()
    assert created["role"] == "read" and created["activating_user"] is None
    assert created["delegate"] == {"name": "readers", "kind": "team", "avatar": {"name": "readers", "kind": "team"}}
    proto_id = created["id"]
    user_proto = (await http.post(f"{ORG}/acme/prototypes", headers=alice, json={
        "role": "write", "delegate": {"kind": "user", "name": "bob"}, "activating_user": {"name": "alice"}})).json()
    assert user_proto["delegate"] == {"name": "bob", "is_robot": False, "kind": "user", "is_org_member": False,
                                      "avatar": {"name": "bob", "kind": "user"}}
    assert user_proto["activating_user"]["name"] == "alice" and user_proto["activating_user"]["is_org_member"] is True

    listed = (await http.get(f"{ORG}/acme/prototypes", headers=alice)).json()["prototypes"]
    assert [p["id"] for p in listed] == [proto_id, user_proto["id"]]

    r = await http.put(f"{ORG}/acme/prototypes/{proto_id}", json={"role": "write"}, headers=alice)
    assert r.json()["role"] == "write" and r.json()["id"] == proto_id
    assert (await http.delete(f"{ORG}/acme/prototypes/{user_proto['id']}", headers=alice)).status_code == 204
    assert [p["id"] for p in (await http.get(f"{ORG}/acme/prototypes", headers=alice)).json()["prototypes"]] == [proto_id]

    log = [(k, m) for k, m in await logged(ctx, "acme") if k.endswith("prototype_permission")]
    assert [k for k, _ in log] == ["create_prototype_permission", "create_prototype_permission",
                                   "modify_prototype_permission", "delete_prototype_permission"]
    assert log[0][1] == {"prototypeid": proto_id, "username": "alice", "role": "read", "activating_username": None,
                         "delegate_team": "readers", "namespace": "acme"}
    assert log[2][1]["original_role"] == "read" and log[2][1]["role"] == "write"
    assert log[3][1]["delegate_user"] == "bob" and log[3][1]["activating_username"] == "alice"

    # Errors: 400 for bad input, 404 for missing things, 403 for non-admins.
    for bad in ({"role": "owner", "delegate": {"kind": "team", "name": "readers"}},
                {"role": "read", "delegate": {"kind": "team", "name": "missing"}},
                {"role": "read", "delegate": {"kind": "user", "name": "nobody"}},
                {"role": "read", "delegate": {"kind": "user", "name": "acme"}},
                {"role": "read", "delegate": {"kind": "robot", "name": "x"}},
                {"role": "read", "delegate": {"kind": "user", "name": "bob"}, "activating_user": {"name": "nobody"}},
                {"role": "read"}):
        assert_error(await http.post(f"{ORG}/acme/prototypes", json=bad, headers=alice), 400)
    assert_error(await http.put(f"{ORG}/acme/prototypes/{proto_id}", json={"role": "boss"}, headers=alice), 400)
    assert_error(await http.put(f"{ORG}/acme/prototypes/nope", json={"role": "read"}, headers=alice), 404)
    assert_error(await http.delete(f"{ORG}/acme/prototypes/nope", headers=alice), 404)
    assert_error(await http.get(f"{ORG}/acme/prototypes", headers=bob), 403)
    assert_error(await http.post(f"{ORG}/acme/prototypes", json=body, headers=bob), 403)
    assert_error(await http.put(f"{ORG}/acme/prototypes/{proto_id}", json={"role": "read"}, headers=bob), 403)
    assert_error(await http.delete(f"{ORG}/acme/prototypes/{proto_id}", headers=bob), 403)
    assert_error(await http.get(f"{ORG}/missing/prototypes", headers=alice), 404)


async def test_prototype_applies_to_repositories_created_afterwards(http, ctx, alice, acme):
    await make_user(ctx, "carol")
    await make_repo(ctx, "acme/before")
    await make_team(http, alice, "readers", "member", "carol")
    await make_team(http, alice, "creators", "creator", "bob")
    r = await http.post(f"{ORG}/acme/prototypes", json={"role": "read", "delegate": {"kind": "team", "name": "readers"}},
                        headers=alice)
    assert r.status_code == 200
    only_for_bob = {"role": "write", "delegate": {"kind": "user", "name": "carol"}, "activating_user": {"name": "bob"}}
    assert (await http.post(f"{ORG}/acme/prototypes", json=only_for_bob, headers=alice)).status_code == 200

    assert await registry_actions(http, "carol", "carol-password", "acme/before") == []
    # Created afterwards by alice (push-to-create): the team prototype applies, the one for bob does not.
    assert await registry_actions(http, "alice", "alice-password", "acme/by-alice") == ["pull", "push"]
    assert await registry_actions(http, "carol", "carol-password", "acme/by-alice") == ["pull"]
    # Created by bob: both apply.
    assert await registry_actions(http, "bob", "bob-password", "acme/by-bob") == ["pull", "push"]
    assert await registry_actions(http, "carol", "carol-password", "acme/by-bob") == ["pull", "push"]
    perms = (await http.get(f"{ORG}/acme/team/readers/permissions", headers=alice)).json()["permissions"]
    assert sorted(p["repository"]["name"] for p in perms) == ["by-alice", "by-bob"]


async def test_deleting_a_team_drops_its_prototypes_and_grants(http, ctx, alice, acme):
    await make_team(http, alice, "readers", "member", "bob")
    r = await http.post(f"{ORG}/acme/prototypes", json={"role": "read", "delegate": {"kind": "team", "name": "readers"}},
                        headers=alice)
    assert r.status_code == 200
    await make_repo(ctx, "acme/app", creator="alice")
    assert await registry_actions(http, "bob", "bob-password", "acme/app") == ["pull"]
    assert (await http.delete(f"{ORG}/acme/team/readers", headers=alice)).status_code == 204
    assert (await http.get(f"{ORG}/acme/prototypes", headers=alice)).json() == {"prototypes": []}
    assert await registry_actions(http, "bob", "bob-password", "acme/app") == []
