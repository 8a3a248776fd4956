"""Robot accounts of users and organizations under /api/v1, and what a robot token then gets
through /v2/auth: exactly its grants, and nothing once its token is regenerated or it is deleted."""

import pytest

from quaymaster.accounts import robots

from .helpers import assert_error, bearer, signin
from .test_orgs import (
    ORG,
    grant,
    logged,
    make_org,
    make_repo,
    make_team,
    make_user,
    registry_actions,
)

USER_ROBOTS = "/api/v1/user/robots"


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


# --- user robots -----------------------------------------------------------------------------------

async def test_user_robot_lifecycle(http, ctx, alice, bob):
    r = await http.put(f"{USER_ROBOTS}/ci", json={"description": "CI pushes", "unstructured_metadata": {"team": "qa"}},
                       headers=alice)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["name"] == "alice+ci" and created["description"] == "CI pushes"
    assert created["unstructured_metadata"] == {"team": "qa"} and created["last_accessed"] is None
    assert len(created["token"]) == robots.TOKEN_LENGTH and created["created"].endswith("-0000")
    assert ("create_robot", {"robot": "ci", "description": "CI pushes", "unstructured_metadata": {"team": "qa"}}) \
        in await logged(ctx, "alice")

    got = (await http.get(f"{USER_ROBOTS}/ci", headers=alice)).json()
    assert got == created
    # No body at all is fine too.
    assert (await http.put(f"{USER_ROBOTS}/plain", headers=alice)).json()["description"] == ""

    listed = (await http.get(USER_ROBOTS, headers=alice)).json()["robots"]
    assert [(r["name"], r["token"]) for r in listed] == [("alice+ci", created["token"]),
                                                          ("alice+plain", listed[1]["token"])]
    assert "teams" not in listed[0]
    no_tokens = (await http.get(USER_ROBOTS, params={"token": "false", "limit": 1}, headers=alice)).json()["robots"]
    assert [r["name"] for r in no_tokens] == ["alice+ci"] and "token" not in no_tokens[0]
    repo_id = await make_repo(ctx, "alice/app")
    await grant(ctx, repo_id, "write", user="alice+ci")
    with_perms = (await http.get(USER_ROBOTS, params={"permissions": "true"}, headers=alice)).json()["robots"]
    assert with_perms[0]["repositories"] == ["app"] and with_perms[0]["teams"] == []
    assert with_perms[1]["repositories"] == []
    perms = (await http.get(f"{USER_ROBOTS}/ci/permissions", headers=alice)).json()
    assert perms == {"permissions": [{"repository": {"name": "app", "is_public": False}, "role": "write"}]}
    assert await registry_actions(http, "alice+ci", created["token"], "alice/app") == ["pull", "push"]

    r = await http.post(f"{USER_ROBOTS}/ci/regenerate", headers=alice)
    new_token = r.json()["token"]
    assert new_token != created["token"] and "unstructured_metadata" not in r.json()
    assert await registry_actions(http, "alice+ci", created["token"], "alice/app") is None
    assert await registry_actions(http, "alice+ci", new_token, "alice/app") == ["pull", "push"]

    assert (await http.delete(f"{USER_ROBOTS}/ci", headers=alice)).status_code == 204
    assert await registry_actions(http, "alice+ci", new_token, "alice/app") is None
    assert_error(await http.get(f"{USER_ROBOTS}/ci", headers=alice), 404)
    kinds = [k for k, _ in await logged(ctx, "alice")]
    assert "regenerate_robot_token" in kinds and "delete_robot" in kinds


async def test_user_robot_errors(http, ctx, alice, bob):
    assert (await http.put(f"{USER_ROBOTS}/ci", headers=alice)).status_code == 201
    body = assert_error(await http.put(f"{USER_ROBOTS}/ci", headers=alice), 400)
    assert "Existing robot" in body["error_message"]
    for bad in ("CI", "1ci", "c", "ci-bot"):
        assert_error(await http.put(f"{USER_ROBOTS}/{bad}", headers=alice), 400)
    assert_error(await http.put(f"{USER_ROBOTS}/long", json={"description": "x" * 256}, headers=alice), 400)
    assert_error(await http.put(f"{USER_ROBOTS}/{'a' * 250}", headers=alice), 400)  # alice+... is too long
    assert (await http.put(f"{USER_ROBOTS}/{'a' * 249}", headers=alice)).status_code == 201
    assert_error(await http.put(f"{USER_ROBOTS}/meta", json={"unstructured_metadata": "text"}, headers=alice), 400)
    # Another user's robots are simply not theirs: 404.
    for method, path in (("GET", "ci"), ("DELETE", "ci"), ("POST", "ci/regenerate"), ("GET", "ci/permissions")):
        assert_error(await http.request(method, f"{USER_ROBOTS}/{path}", headers=bob), 404)
        assert_error(await http.request(method, f"{USER_ROBOTS}/{path}"), 401)
    assert (await http.get(USER_ROBOTS, headers=bob)).json() == {"robots": []}
    # Robot tokens are passwords: listing them takes the user:admin scope.
    read_only = await bearer(ctx, "alice", "user:read")
    assert_error(await http.get(USER_ROBOTS, headers=read_only), 403)
    assert_error(await http.put(f"{USER_ROBOTS}/other", headers=read_only), 403)
    assert_error(await http.get(USER_ROBOTS, params={"limit": 0}, headers=alice), 400)
    assert_error(await http.get(USER_ROBOTS, params={"limit": 10**20}, headers=alice), 400)


async def test_browser_session_needs_csrf_to_create_a_robot(http):
    csrf = await signin(http, "alice")
    assert_error(await http.put(f"{USER_ROBOTS}/ci"), 403)
    assert (await http.put(f"{USER_ROBOTS}/ci", headers=csrf)).status_code == 201


# --- organization robots -----------------------------------------------------------------------------

async def test_org_robot_lifecycle_and_visibility(http, ctx, alice, bob, acme):
    await make_user(ctx, "carol")
    await make_team(http, alice, "readers", "member", "bob")
    r = await http.put(f"{ORG}/acme/robots/bot", json={"description": "deployer"}, headers=alice)
    assert r.status_code == 201 and r.json()["name"] == "acme+bot"
    token = r.json()["token"]
    assert ("create_robot", {"robot": "bot", "description": "deployer", "unstructured_metadata": None}) \
        in await logged(ctx, "acme")
    assert (await http.get(f"{ORG}/acme/robots/bot", headers=alice)).json()["token"] == token

    await make_team(http, alice, "deployers", "member", "acme+bot")
    app = await make_repo(ctx, "acme/app")
    await grant(ctx, app, "write", user="acme+bot")
    admin_list = (await http.get(f"{ORG}/acme/robots", params={"permissions": "true"}, headers=alice)).json()
    entry = admin_list["robots"][0]
    assert entry["token"] == token and entry["repositories"] == ["app"]
    assert entry["teams"] == [{"name": "deployers", "avatar": {"name": "deployers", "kind": "team"}}]
    # Members may list the robots, but never see tokens or permissions; outsiders see nothing.
    member_list = (await http.get(f"{ORG}/acme/robots", params={"permissions": "true"}, headers=bob)).json()
    assert [r["name"] for r in member_list["robots"]] == ["acme+bot"]
    assert "token" not in member_list["robots"][0] and "teams" not in member_list["robots"][0]
    carol = await bearer(ctx, "carol")
    assert_error(await http.get(f"{ORG}/acme/robots", headers=carol), 403)
    assert_error(await http.get(f"{ORG}/missing/robots", headers=alice), 404)
    for method, path in (("GET", "bot"), ("PUT", "other"), ("DELETE", "bot"), ("POST", "bot/regenerate"),
                         ("GET", "bot/permissions")):
        assert_error(await http.request(method, f"{ORG}/acme/robots/{path}", headers=bob), 403)
        assert_error(await http.request(method, f"{ORG}/acme/robots/{path}", headers=carol), 403)
        assert_error(await http.request(method, f"{ORG}/missing/robots/{path}", headers=alice), 404)
        assert_error(await http.request(method, f"{ORG}/acme/robots/{path}"), 401)
    for method, path in (("GET", "nope"), ("DELETE", "nope"), ("POST", "nope/regenerate"), ("GET", "nope/permissions")):
        assert_error(await http.request(method, f"{ORG}/acme/robots/{path}", headers=alice), 404)
    assert_error(await http.put(f"{ORG}/acme/robots/bot", headers=alice), 400)

    perms = (await http.get(f"{ORG}/acme/robots/bot/permissions", headers=alice)).json()
    assert perms == {"permissions": [{"repository": {"name": "app", "is_public": False}, "role": "write"}]}
    assert (await http.delete(f"{ORG}/acme/robots/bot", headers=alice)).status_code == 204
    assert (await http.get(f"{ORG}/acme/robots", headers=alice)).json() == {"robots": []}
    assert [m["name"] for m in (await http.get(f"{ORG}/acme/team/deployers/members", headers=alice)).json()["members"]] == []
    assert ("delete_robot", {"robot": "bot"}) in await logged(ctx, "acme")


async def test_org_robots_need_org_admin_scope(http, ctx, acme):
    assert_error(await http.put(f"{ORG}/acme/robots/bot", headers=await bearer(ctx, "alice", "user:admin")), 403)
    assert (await http.put(f"{ORG}/acme/robots/bot", headers=await bearer(ctx, "alice", "org:admin"))).status_code == 201


async def test_robot_token_gets_exactly_its_grants(http, ctx, alice, acme):
    token = (await http.put(f"{ORG}/acme/robots/bot", headers=alice)).json()["token"]
    writable = await make_repo(ctx, "acme/writable")
    readable = await make_repo(ctx, "acme/readable")
    await make_repo(ctx, "acme/hidden")
    await make_repo(ctx, "acme/public", "public")
    await grant(ctx, writable, "write", user="acme+bot")
    await grant(ctx, readable, "read", user="acme+bot")

    assert await registry_actions(http, "acme+bot", token, "acme/writable", "pull,push,*") == ["pull", "push"]
    assert await registry_actions(http, "acme+bot", token, "acme/readable", "pull,push,*") == ["pull"]
    assert await registry_actions(http, "acme+bot", token, "acme/hidden") == []
    assert await registry_actions(http, "acme+bot", token, "acme/public") == ["pull"]
    # A robot is not a creator: no push-to-create in the organization or anywhere else.
    assert await registry_actions(http, "acme+bot", token, "acme/brand-new") == []
    assert await registry_actions(http, "acme+bot", token, "alice/anything") == []
    assert await registry_actions(http, "acme+bot", "wrong" * 13, "acme/writable") is None

    # Through a team, the team's grants apply as well.
    await make_team(http, alice, "deployers", "member", "acme+bot")
    await grant(ctx, readable, "admin", team=("acme", "deployers"))
    assert await registry_actions(http, "acme+bot", token, "acme/readable", "pull,push,*") == ["pull", "push", "*"]

    new_token = (await http.post(f"{ORG}/acme/robots/bot/regenerate", headers=alice)).json()["token"]
    assert ("regenerate_robot_token", {"robot": "bot"}) in await logged(ctx, "acme")
    assert await registry_actions(http, "acme+bot", token, "acme/writable") is None
    assert await registry_actions(http, "acme+bot", new_token, "acme/writable") == ["pull", "push"]
    assert (await http.get(f"{ORG}/acme/robots/bot", headers=alice)).json()["token"] == new_token

    assert (await http.delete(f"{ORG}/acme/robots/bot", headers=alice)).status_code == 204
    assert await registry_actions(http, "acme+bot", new_token, "acme/writable") is None
    # A robot of the same name made later has a new token and none of the old grants.
    fresh = (await http.put(f"{ORG}/acme/robots/bot", headers=alice)).json()["token"]
    assert await registry_actions(http, "acme+bot", fresh, "acme/writable") == []


async def test_deleting_a_robot_named_in_a_default_permission(http, ctx, alice, acme):
    assert (await http.put(f"{ORG}/acme/robots/bot", headers=alice)).status_code == 201
    r = await http.post(f"{ORG}/acme/prototypes", json={"role": "write", "delegate": {"kind": "user", "name": "acme+bot"}},
                        headers=alice)
    assert r.json()["delegate"]["is_robot"] is True and r.json()["delegate"]["is_org_member"] is True
    token = (await http.get(f"{ORG}/acme/robots/bot", headers=alice)).json()["token"]
    assert await registry_actions(http, "alice", "alice-password", "acme/made") == ["pull", "push"]
    assert await registry_actions(http, "acme+bot", token, "acme/made") == ["pull", "push"]
    assert (await http.delete(f"{ORG}/acme/robots/bot", headers=alice)).status_code == 204
    assert (await http.get(f"{ORG}/acme/prototypes", headers=alice)).json() == {"prototypes": []}


async def test_user_robot_cannot_be_used_in_an_organization(http, ctx, alice, acme):
    assert (await http.put(f"{USER_ROBOTS}/mine", headers=alice)).status_code == 201
    body = {"role": "read", "delegate": {"kind": "user", "name": "alice+mine"}}
    assert_error(await http.post(f"{ORG}/acme/prototypes", json=body, headers=alice), 400)
    await make_org(http, alice, "other")
    assert (await http.put(f"{ORG}/other/robots/bot", headers=alice)).status_code == 201
    assert_error(await http.put(f"{ORG}/acme/team/owners/members/other+bot", headers=alice), 400)
