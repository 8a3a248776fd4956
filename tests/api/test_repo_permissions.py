"""Repository permissions under /api/v1 for users, robots and teams, checked end to end through the
grants /v2/auth hands out."""

from quaymaster.accounts import robots
from quaymaster.accounts import service as users

from .helpers import assert_error, bearer, signin
from .repohelpers import API, log_entries, make_org, make_repo, registry_actions

PERMS = f"{API}/repository/alice/x/permissions"


async def test_grant_bob_read_then_write_then_nothing(http, ctx):
    await make_repo(ctx, "alice/x")
    csrf = await signin(http, "alice")
    assert await registry_actions(http, "bob", "alice/x") == []
    r = await http.put(f"{PERMS}/user/bob", json={"role": "read"}, headers=csrf)
    assert r.status_code == 200
    assert r.json() == {"role": "read", "name": "bob", "is_robot": False, "avatar": {"name": "bob", "kind": "user"}}
    assert await registry_actions(http, "bob", "alice/x") == ["pull"]
    assert (await http.put(f"{PERMS}/user/bob", json={"role": "write"}, headers=csrf)).status_code == 200
    assert await registry_actions(http, "bob", "alice/x") == ["pull", "push"]
    listed = (await http.get(f"{PERMS}/user/")).json()["permissions"]
    assert listed == {"bob": {"role": "write", "name": "bob", "is_robot": False,
                              "avatar": {"name": "bob", "kind": "user"}}}
    assert (await http.get(f"{PERMS}/user/bob")).json()["role"] == "write"
    assert (await http.get(f"{PERMS}/user/bob/transitive")).json() == {"permissions": [{"role": "write"}]}
    assert (await http.delete(f"{PERMS}/user/bob", headers=csrf)).status_code == 204
    assert await registry_actions(http, "bob", "alice/x") == []
    assert (await http.get(f"{PERMS}/user/")).json() == {"permissions": {}}
    kinds = [(kind, e.metadata_json.get("role")) for kind in
             ("add_repo_permission", "change_repo_permission", "delete_repo_permission")
             for e in await log_entries(ctx, kind)]
    assert kinds == [("add_repo_permission", "read"), ("change_repo_permission", "write"),
                     ("delete_repo_permission", None)]


async def test_permission_errors(http, ctx):
    await make_repo(ctx, "alice/x")
    async with ctx.db.write() as session:
        await users.create_user(session, "carol", "carol@example.com", "carol-password")
    assert_error(await http.get(f"{PERMS}/user/"), 401)
    bob = await signin(http, "bob")
    assert_error(await http.get(f"{PERMS}/user/"), 404)  # bob cannot see alice/x at all
    assert_error(await http.put(f"{PERMS}/user/bob", json={"role": "admin"}, headers=bob), 404)
    csrf = await signin(http, "alice")
    await http.put(f"{PERMS}/user/bob", json={"role": "write"}, headers=csrf)
    bob = await signin(http, "bob")
    assert_error(await http.get(f"{PERMS}/user/"), 403)  # write is not admin
    assert_error(await http.put(f"{PERMS}/user/bob", json={"role": "admin"}, headers=bob), 403)
    csrf = await signin(http, "alice")
    assert_error(await http.put(f"{PERMS}/user/alice", json={"role": "read"}, headers=csrf), 400)
    assert_error(await http.put(f"{PERMS}/user/nobody", json={"role": "read"}, headers=csrf), 400)
    assert_error(await http.put(f"{PERMS}/user/bob", json={"role": "owner"}, headers=csrf), 400)
    assert_error(await http.get(f"{PERMS}/user/carol"), 404)
    assert_error(await http.get(f"{PERMS}/user/carol/transitive"), 404)
    assert_error(await http.delete(f"{PERMS}/user/carol", headers=csrf), 404)
    assert_error(await http.delete(f"{PERMS}/user/nobody", headers=csrf), 404)
    # Teams exist only in organizations.
    assert (await http.get(f"{PERMS}/team/")).json() == {"permissions": {}}
    assert_error(await http.put(f"{PERMS}/team/devs", json={"role": "read"}, headers=csrf), 400)
    assert_error(await http.get(f"{PERMS}/team/devs"), 404)
    # An admin token scope is needed to manage permissions.
    token = await bearer(ctx, "alice", "repo:write")
    assert_error(await http.get(f"{PERMS}/user/", headers=token), 403)
    token = await bearer(ctx, "alice", "repo:admin")
    assert (await http.get(f"{PERMS}/user/", headers=token)).status_code == 200


async def test_robots_of_the_namespace_only(http, ctx):
    await make_repo(ctx, "alice/x")
    async with ctx.db.write() as session:
        _, token = await robots.create_robot(session, ctx.cipher, await users.get_user(session, "alice"), "ci")
        await robots.create_robot(session, ctx.cipher, await users.get_user(session, "bob"), "ci")
    csrf = await signin(http, "alice")
    r = await http.put(f"{PERMS}/user/alice+ci", json={"role": "write"}, headers=csrf)
    assert r.status_code == 200 and r.json()["is_robot"] is True and r.json()["avatar"]["kind"] == "robot"
    assert await registry_actions(http, "alice+ci", "alice/x", password=token) == ["pull", "push"]
    body = assert_error(await http.put(f"{PERMS}/user/bob+ci", json={"role": "read"}, headers=csrf), 400)
    assert "Cannot add robot" in body["error_message"]


async def test_team_permissions_on_organization_repositories(http, ctx):
    await make_org(ctx, "acme", teams={"devs": ("member", ["bob"])})
    await make_repo(ctx, "acme/svc")
    base = f"{API}/repository/acme/svc/permissions"
    csrf = await signin(http, "alice")
    assert await registry_actions(http, "bob", "acme/svc") == []
    r = await http.put(f"{base}/team/devs", json={"role": "write"}, headers=csrf)
    assert r.status_code == 200
    assert r.json() == {"role": "write", "name": "devs", "avatar": {"name": "devs", "kind": "team"}}
    assert await registry_actions(http, "bob", "acme/svc") == ["pull", "push"]
    assert (await http.get(f"{base}/team/")).json()["permissions"]["devs"]["role"] == "write"
    assert (await http.get(f"{base}/team/devs")).json()["role"] == "write"
    # Bob's roles: through the team, and directly once granted; organization members are marked.
    assert (await http.get(f"{base}/user/bob/transitive")).json() == {"permissions": [{"role": "write"}]}
    await http.put(f"{base}/user/bob", json={"role": "read"}, headers=csrf)
    assert (await http.get(f"{base}/user/bob/transitive")).json() == {"permissions": [{"role": "read"},
                                                                                     {"role": "write"}]}
    assert (await http.get(f"{base}/user/bob")).json()["is_org_member"] is True
    assert (await http.put(f"{base}/team/devs", json={"role": "read"}, headers=csrf)).status_code == 200
    assert await registry_actions(http, "bob", "acme/svc") == ["pull"]
    assert (await http.delete(f"{base}/team/devs", headers=csrf)).status_code == 204
    assert_error(await http.delete(f"{base}/team/devs", headers=csrf), 404)
    assert_error(await http.get(f"{base}/team/devs"), 404)
    assert_error(await http.put(f"{base}/team/ghosts", json={"role": "read"}, headers=csrf), 400)
    assert [e.metadata_json["team"] for e in await log_entries(ctx, "delete_repo_permission")] == ["devs"]
