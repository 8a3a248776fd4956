"""The superuser panel (alice is the superuser here) and global messages."""

import time

import httpx
import jwt
import pytest
from jwt.algorithms import RSAAlgorithm
from support.appfixtures import HOST

from quaymaster.accounts import apptokens, orgs, robots
from quaymaster.accounts import service as accounts
from quaymaster.accounts.models import ServiceKey
from quaymaster.api import auth
from quaymaster.content import service as content
from quaymaster.db.base import utcnow

from .helpers import assert_error, bearer, signin


@pytest.fixture
def config(config):
    return {**config, "SUPER_USERS": ["alice"]}


@pytest.fixture
async def su(ctx) -> dict:
    """alice's bearer token with every scope (tokens need no fresh login and no CSRF)."""
    return await bearer(ctx, "alice")


@pytest.fixture
async def browser(ctx):
    """A second client with its own cookie jar, for signing in as another user."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ctx.app), base_url=f"http://{HOST}") as client:
        yield client


async def logged(http, su, kind: str) -> list[dict]:
    r = await http.get("/api/v1/superuser/logs", headers=su)
    assert r.status_code == 200, r.text
    return [e for e in r.json()["logs"] if e["kind"] == kind]


async def test_only_superusers_get_in(http, ctx, su, monkeypatch):
    assert_error(await http.get("/api/v1/superuser/users/"), 401)
    assert_error(await http.get("/api/v1/superuser/users/", headers=await bearer(ctx, "bob")), 403)
    assert_error(await http.get("/api/v1/superuser/users/", headers=await bearer(ctx, "alice", "user:admin")), 403)
    r = await http.get("/api/v1/superuser/users/", headers=su)
    assert r.status_code == 200
    users = {u["username"]: u for u in r.json()["users"]}
    assert users["alice"]["super_user"] is True and users["bob"]["super_user"] is False
    assert set(users["bob"]) >= {"username", "email", "verified", "enabled", "super_user", "avatar"}
    for path in ("/superuser/organizations/", "/superuser/keys", "/superuser/logs", "/superuser/aggregatelogs",
                 "/superuser/changelog/", "/superuser/users/bob"):
        assert_error(await http.get(f"/api/v1{path}", headers=await bearer(ctx, "bob")), 403)
        assert (await http.get(f"/api/v1{path}", headers=su)).status_code == 200, path
    monkeypatch.setattr(ctx.settings, "FEATURE_SUPER_USERS", False)
    assert_error(await http.get("/api/v1/superuser/users/", headers=su), 404)


async def test_user_lifecycle(http, ctx, su, browser):
    r = await http.post("/api/v1/superuser/users/", json={"username": "carol", "email": "carol@example.com"},
                        headers=su)
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["username"] == "carol" and len(created["password"]) == 32
    # The generated password signs in.
    await signin(browser, "carol", created["password"])
    assert (await browser.get("/api/v1/user/")).json()["username"] == "carol"

    r = await http.get("/api/v1/superuser/users/carol", headers=su)
    assert r.json()["enabled"] is True and r.json()["email"] == "carol@example.com"
    r = await http.put("/api/v1/superuser/users/carol", json={"password": "carol-new-password",
                                                               "email": "c@example.com"}, headers=su)
    assert r.status_code == 200 and r.json()["email"] == "c@example.com"
    await signin(browser, "carol", "carol-new-password")

    r = await http.put("/api/v1/superuser/users/carol", json={"enabled": False}, headers=su)
    assert r.status_code == 200 and r.json()["enabled"] is False
    r = await http.get("/v2/auth", params={"service": HOST}, auth=("carol", "carol-new-password"))
    assert r.status_code == 401
    assert_error(await browser.get("/api/v1/user/"), 401)  # the running session ends too
    assert_error(await browser.post("/api/v1/signin", json={"username": "carol", "password": "carol-new-password"}),
                 403)
    r = await http.get("/api/v1/superuser/users/", params={"disabled": "false"}, headers=su)
    assert "carol" not in [u["username"] for u in r.json()["users"]]
    await http.put("/api/v1/superuser/users/carol", json={"enabled": True}, headers=su)
    r = await http.get("/v2/auth", params={"service": HOST}, auth=("carol", "carol-new-password"))
    assert r.status_code == 200

    assert (await http.delete("/api/v1/superuser/users/carol", headers=su)).status_code == 204
    assert_error(await http.get("/api/v1/superuser/users/carol", headers=su), 404)
    assert_error(await http.delete("/api/v1/superuser/users/carol", headers=su), 404)
    for kind in ("user_create", "user_change_password", "user_change_email", "user_disable", "user_enable",
                 "user_delete"):
        [entry] = await logged(http, su, kind)
        assert entry["performer"]["name"] == "alice" and entry["metadata"]["username"] == "carol"


async def test_bad_user_requests(http, su):
    assert_error(await http.post("/api/v1/superuser/users/", json={"username": "bob"}, headers=su), 409)
    assert_error(await http.post("/api/v1/superuser/users/", json={"username": "Not Valid"}, headers=su), 400)
    assert_error(await http.post("/api/v1/superuser/users/", json={"email": "x@example.com"}, headers=su), 400)
    assert_error(await http.put("/api/v1/superuser/users/bob", json={"password": "short"}, headers=su), 400)
    assert_error(await http.put("/api/v1/superuser/users/bob", json={"email": "nope"}, headers=su), 400)
    assert_error(await http.put("/api/v1/superuser/users/nobody", json={"enabled": False}, headers=su), 404)


async def test_superusers_cannot_disable_or_delete_themselves(http, su):
    body = assert_error(await http.put("/api/v1/superuser/users/alice", json={"enabled": False}, headers=su), 400)
    assert "superuser" in body["error_message"]
    assert_error(await http.delete("/api/v1/superuser/users/alice", headers=su), 400)
    assert (await http.get("/api/v1/superuser/users/alice", headers=su)).json()["enabled"] is True


async def test_deleting_a_user_who_still_owns_things(http, ctx, su):
    async with ctx.db.write() as session:
        bob = await accounts.get_user(session, "bob")
        await content.create_repository(session, bob, "keep")
    assert (await http.delete("/api/v1/superuser/users/bob", headers=su)).status_code == 204  # repos via GC
    assert_error(await http.get("/api/v1/superuser/users/bob", headers=su), 404)

    async with ctx.db.write() as session:
        dave = await accounts.create_user(session, "dave", None, "dave-password")
        await orgs.create_org(session, "daveco", None, dave)
    body = assert_error(await http.delete("/api/v1/superuser/users/dave", headers=su), 400)
    assert "daveco" in body["error_message"]
    assert (await http.get("/api/v1/superuser/users/dave", headers=su)).status_code == 200


async def test_deleting_a_user_takes_their_robots_tokens_and_memberships(http, ctx, su):
    async with ctx.db.write() as session:
        alice = await accounts.get_user(session, "alice")
        erin = await accounts.create_user(session, "erin", None, "erin-password")
        await robots.create_robot(session, ctx.cipher, erin, "helper")
        await apptokens.create_app_token(session, ctx.cipher, erin, "laptop")
        org = await orgs.create_org(session, "acme", None, alice)
        team, _ = await orgs.upsert_team(session, org, "devs", "member")
        await orgs.add_team_member(session, org, team, erin)
    assert (await http.delete("/api/v1/superuser/users/erin", headers=su)).status_code == 204
    async with ctx.db.read() as session:
        assert await accounts.get_namespace(session, "erin+helper") is None
        org = await orgs.get_org(session, "acme")
        assert [m.username for m in await orgs.team_members(session, await orgs.get_team(session, org, "devs"))] == []


async def test_changes_from_a_browser_need_a_fresh_login(http, monkeypatch):
    csrf = await signin(http, "alice")
    r = await http.post("/api/v1/superuser/users/", json={"username": "fresh"}, headers=csrf)
    assert r.status_code == 200
    assert (await http.get("/api/v1/superuser/users/fresh")).status_code == 200
    monkeypatch.setattr(auth, "FRESH_LOGIN_S", -1)
    assert_error(await http.post("/api/v1/superuser/users/", json={"username": "stale"}, headers=csrf), 401,
                 "fresh_login_required")
    assert (await http.get("/api/v1/superuser/users/")).status_code == 200  # reading needs no fresh login


async def test_organizations(http, ctx, su):
    async with ctx.db.write() as session:
        bob = await accounts.get_user(session, "bob")
        await orgs.create_org(session, "acme", "ops@acme.example", bob)
        busy = await orgs.create_org(session, "busy", None, bob)
        await content.create_repository(session, busy, "stuff")
    r = await http.get("/api/v1/superuser/organizations/", headers=su)
    assert r.json()["organizations"] == [
        {"name": "acme", "email": "ops@acme.example", "avatar": {"name": "acme", "kind": "org"}},
        {"name": "busy", "email": None, "avatar": {"name": "busy", "kind": "org"}}]
    assert_error(await http.delete("/api/v1/superuser/organizations/acme", headers=await bearer(ctx, "bob")), 403)
    assert (await http.delete("/api/v1/superuser/organizations/acme", headers=su)).status_code == 204
    assert_error(await http.delete("/api/v1/superuser/organizations/acme", headers=su), 404)
    assert_error(await http.delete("/api/v1/superuser/organizations/bob", headers=su), 404)  # a user, not an org
    assert (await http.delete("/api/v1/superuser/organizations/busy", headers=su)).status_code == 204
    assert_error(await http.delete("/api/v1/superuser/organizations/busy", headers=su), 404)  # name freed
    entries = await logged(http, su, "org_delete")
    assert sorted(e["metadata"]["namespace"] for e in entries) == ["acme", "busy"]


async def test_take_ownership(http, ctx, su):
    async with ctx.db.write() as session:
        await orgs.create_org(session, "bobco", None, await accounts.get_user(session, "bob"))
    r = await http.post("/api/v1/superuser/takeownership/bobco", headers=su)
    assert r.status_code == 200 and r.json() == {"namespace": "bobco"}
    assert (await http.post("/api/v1/superuser/takeownership/bobco", headers=su)).status_code == 200  # idempotent
    async with ctx.db.read() as session:
        org = await orgs.get_org(session, "bobco")
        owners = await orgs.team_members(session, await orgs.get_team(session, org, "owners"))
    assert sorted(u.username for u in owners) == ["alice", "bob"]
    body = assert_error(await http.post("/api/v1/superuser/takeownership/bob", headers=su), 400)
    assert "not supported" in body["error_message"]
    assert_error(await http.post("/api/v1/superuser/takeownership/alice", headers=su), 400)
    assert_error(await http.post("/api/v1/superuser/takeownership/ghost", headers=su), 404)
    assert_error(await http.post("/api/v1/superuser/takeownership/bobco", headers=await bearer(ctx, "bob")), 403)
    entries = await logged(http, su, "take_ownership")
    assert entries and entries[0]["metadata"]["namespace"] == "bobco" and entries[0]["metadata"]["was_user"] is False


async def test_service_key_lifecycle(http, ctx, su):
    expiry = int(time.time()) + 3600
    r = await http.post("/api/v1/superuser/keys", json={"name": "ci signer", "service": "builder",
                                                        "expiration": expiry, "notes": "for CI"}, headers=su)
    assert r.status_code == 200, r.text
    created = r.json()
    kid = created["kid"]
    assert created["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert created["public_key"].startswith("-----BEGIN PUBLIC KEY-----")

    listed = (await http.get("/api/v1/superuser/keys", headers=su)).json()["keys"]
    assert {k["service"] for k in listed} == {"builder", "quay"}  # the node's own key is listed too
    key = (await http.get(f"/api/v1/superuser/keys/{kid}", headers=su)).json()
    assert key["name"] == "ci signer" and key["approval"]["approval_type"] == "Super User API"
    assert key["approval"]["approver"]["username"] == "alice" and key["approval"]["notes"] == "for CI"
    assert key["metadata"]["creator"] == "alice" and "_approval" not in key["metadata"]
    assert key["expiration_date"] and key["created_date"]
    # The private key shown once signs what the stored public key verifies.
    token = jwt.encode({"sub": "x"}, created["private_key"], algorithm="RS256")
    assert jwt.decode(token, RSAAlgorithm.from_jwk(key["jwk"]), algorithms=["RS256"])["sub"] == "x"

    r = await http.put(f"/api/v1/superuser/keys/{kid}", json={"name": "renamed", "metadata": {"team": "ops"},
                                                              "expiration": None}, headers=su)
    assert r.status_code == 200
    assert r.json()["name"] == "renamed" and r.json()["metadata"]["team"] == "ops"
    assert r.json()["expiration_date"] is None and r.json()["metadata"]["creator"] == "alice"
    assert_error(await http.put(f"/api/v1/superuser/keys/{kid}", json={"expiration": 1000}, headers=su), 400)
    assert (await http.delete(f"/api/v1/superuser/keys/{kid}", headers=su)).status_code == 204
    assert_error(await http.get(f"/api/v1/superuser/keys/{kid}", headers=su), 404)
    assert_error(await http.delete(f"/api/v1/superuser/keys/{kid}", headers=su), 404)
    for kind in ("service_key_create", "service_key_approve", "service_key_modify", "service_key_extend",
                 "service_key_delete"):
        [entry] = await logged(http, su, kind)
        assert entry["metadata"]["kid"] == kid and entry["performer"]["name"] == "alice"
        assert "namespace" not in entry  # registry-level entries belong to no namespace


async def test_bad_service_key_requests(http, ctx, su):
    assert_error(await http.post("/api/v1/superuser/keys", json={"service": "x", "expiration": 1}, headers=su), 400)
    assert_error(await http.post("/api/v1/superuser/keys", json={"service": "no spaces", "expiration": None},
                                 headers=su), 400)
    assert_error(await http.post("/api/v1/superuser/keys", json={"service": "svc"}, headers=su), 400)
    assert_error(await http.post("/api/v1/superuser/keys", json={"service": "svc", "name": "bad;name",
                                                                 "expiration": None}, headers=su), 400)
    assert_error(await http.post("/api/v1/superuser/keys", json={"service": "svc", "expiration": None},
                                 headers=await bearer(ctx, "bob")), 403)
    # The running node's own signing key cannot be pulled from under it.
    assert_error(await http.delete(f"/api/v1/superuser/keys/{ctx.keys.kid}", headers=su), 400)
    assert_error(await http.put(f"/api/v1/superuser/keys/{ctx.keys.kid}", json={"name": "x"}, headers=su), 400)
    r = await http.get("/v2/auth", params={"service": HOST}, auth=("bob", "bob-password"))
    assert r.status_code == 200


async def test_approving_a_pending_key(http, ctx, su):
    async with ctx.db.write() as session:
        session.add(ServiceKey(name="pending", kid="pending-kid", service="builder", jwk={"kty": "RSA"},
                               metadata_json={}, created_date=utcnow()))
    key = (await http.get("/api/v1/superuser/keys/pending-kid", headers=su)).json()
    assert key["approval"] is None
    r = await http.post("/api/v1/superuser/approvedkeys/pending-kid", json={}, headers=await bearer(ctx, "bob"))
    assert_error(r, 403)
    r = await http.post("/api/v1/superuser/approvedkeys/pending-kid", json={"notes": "looks right"}, headers=su)
    assert r.status_code == 201
    key = (await http.get("/api/v1/superuser/keys/pending-kid", headers=su)).json()
    assert key["approval"]["notes"] == "looks right" and key["approval"]["approver"]["name"] == "alice"
    assert (await http.post("/api/v1/superuser/approvedkeys/pending-kid", json={}, headers=su)).status_code == 201
    assert len(await logged(http, su, "service_key_approve")) == 1  # approving twice changes nothing
    assert_error(await http.post("/api/v1/superuser/approvedkeys/nope", json={}, headers=su), 404)


async def test_messages(http, ctx, su):
    assert (await http.get("/api/v1/messages")).json() == {"messages": []}
    message = {"message": {"content": "Maintenance at **noon**", "media_type": "text/markdown", "severity": "warning"}}
    assert_error(await http.post("/api/v1/messages", json=message), 401)
    assert_error(await http.post("/api/v1/messages", json=message, headers=await bearer(ctx, "bob")), 403)
    r = await http.post("/api/v1/messages", json=message, headers=su)
    assert r.status_code == 201
    [shown] = (await http.get("/api/v1/messages")).json()["messages"]  # anonymous visitors see it
    assert shown == {"uuid": r.json()["uuid"], **message["message"]}
    for bad in ({"severity": "panic"}, {"media_type": "text/html"}, {"content": " "}):
        assert_error(await http.post("/api/v1/messages", json={"message": {**message["message"], **bad}},
                                     headers=su), 400)
    assert_error(await http.post("/api/v1/messages", json={"content": "no envelope"}, headers=su), 400)
    assert_error(await http.delete(f"/api/v1/message/{shown['uuid']}", headers=await bearer(ctx, "bob")), 403)
    assert (await http.delete(f"/api/v1/message/{shown['uuid']}", headers=su)).status_code == 204
    assert_error(await http.delete(f"/api/v1/message/{shown['uuid']}", headers=su), 404)
    assert (await http.get("/api/v1/messages")).json() == {"messages": []}
    assert len(await logged(http, su, "create_message")) == 1 and len(await logged(http, su, "delete_message")) == 1


async def test_messages_from_a_browser_session_need_csrf(http):
    csrf = await signin(http, "alice")
    message = {"message": {"content": "hello", "media_type": "text/plain", "severity": "info"}}
    assert_error(await http.post("/api/v1/messages", json=message), 403)
    assert (await http.post("/api/v1/messages", json=message, headers=csrf)).status_code == 201


async def test_superuser_logs_cover_every_namespace(http, ctx, su):
    async with ctx.db.read() as session:
        bob = await accounts.get_user(session, "bob")
    ctx.audit.record("push_repo", account_id=bob.id, performer_id=bob.id, metadata={"repo": "x"})
    entries = await logged(http, su, "push_repo")
    assert entries[0]["namespace"]["name"] == "bob"
    r = await http.get("/api/v1/superuser/aggregatelogs", headers=su)
    counts = [(a["kind"], a["count"]) for a in r.json()["aggregated"]]
    assert ("push_repo", 1) in counts
    assert_error(await http.get("/api/v1/superuser/logs", headers=await bearer(ctx, "bob")), 403)
    assert_error(await http.get("/api/v1/superuser/logs"), 401)


async def test_changelog(http, su):
    r = await http.get("/api/v1/superuser/changelog/", headers=su)
    assert r.status_code == 200 and isinstance(r.json()["log"], str)


async def test_deleting_a_user_revokes_their_api_tokens(http, ctx, su):
    async with ctx.db.write() as session:
        await accounts.create_user(session, "frank", None, "frank-password")
    token = await bearer(ctx, "frank")
    assert (await http.get("/api/v1/user/", headers=token)).status_code == 200
    assert (await http.delete("/api/v1/superuser/users/frank", headers=su)).status_code == 204
    assert_error(await http.get("/api/v1/user/", headers=token), 401)
    assert_error(await http.get("/api/v1/superuser/users/frank", headers=su), 404)


async def test_full_access_lets_superusers_find_and_audit_everything(http, ctx, su, monkeypatch):
    async with ctx.db.write() as session:
        bob = await accounts.get_user(session, "bob")
        await orgs.create_org(session, "bobco", None, bob)
        await content.create_repository(session, bob, "private-thing")

    async def search() -> list[str]:
        r = await http.get("/api/v1/find/repositories", params={"query": "private-thing"}, headers=su)
        return [hit["name"] for hit in r.json()["results"]]

    assert await search() == []
    assert_error(await http.get("/api/v1/organization/bobco/logs", headers=su), 403)
    monkeypatch.setattr(ctx.settings, "FEATURE_SUPERUSERS_FULL_ACCESS", True)
    assert await search() == ["private-thing"]
    assert (await http.get("/api/v1/organization/bobco/logs", headers=su)).status_code == 200


async def test_superuser_routes_vanish_without_the_feature(http, ctx, su, monkeypatch):
    monkeypatch.setattr(ctx.settings, "FEATURE_SUPER_USERS", False)
    for method, path in (("GET", "/superuser/logs"), ("GET", "/superuser/keys"), ("POST", "/superuser/keys"),
                         ("DELETE", "/message/x"), ("POST", "/superuser/takeownership/bob")):
        assert_error(await http.request(method, f"/api/v1{path}"), 404)
        assert_error(await http.request(method, f"/api/v1{path}", headers=su), 404)
    assert (await http.get("/api/v1/messages")).status_code == 200
