"""Organization, team, robot and default-permission pages, in process on SQLite.

alice creates the organization `acme` (so she is in its owners team); bob starts outside it.
Pages answer an outsider with the plain 404, a member without admin rights with 403 on the
admin-only parts, and every POST without the session's CSRF token with 403."""

import re
import time
from types import SimpleNamespace

import httpx
import pytest
from api.repohelpers import push

from quaymaster.accounts import orgs, robots
from quaymaster.accounts import service as accounts
from quaymaster.api import auth as api_auth
from quaymaster.content import quota as quotas
from quaymaster.content import service as content
from web.conftest import browser_session, csrf_of

ORG = "acme"
BASE = f"/organization/{ORG}"


async def _create_org(http: httpx.AsyncClient, csrf: str, name: str = ORG) -> httpx.Response:
    return await http.post("/organizations/new", data={"name": name, "email": f"{name}@example.com",
                                                       "_csrf_token": csrf})


@pytest.fixture
async def alice(http):
    """alice's signed-in client (the `http` fixture) and CSRF token, with the organization made."""
    csrf = await browser_session(http, "alice")
    r = await _create_org(http, csrf)
    assert r.status_code == 303 and r.headers["location"] == BASE, r.text[:500]
    return csrf


@pytest.fixture
async def bob(ctx, alice):
    """bob's own client (separate cookies) and CSRF token."""
    transport = httpx.ASGITransport(app=ctx.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        client.csrf = await browser_session(client, "bob")
        yield client


async def _repo(ctx, name: str, visibility: str = "private", namespace: str = ORG):
    async with ctx.db.write() as session:
        ns = await accounts.get_namespace(session, namespace)
        return await content.create_repository(session, ns, name, visibility)


async def _add_member(http, csrf: str, team: str, name: str, role: str = "member") -> None:
    r = await http.post(f"{BASE}/teams", data={"name": team, "role": role, "_csrf_token": csrf})
    assert r.status_code == 303, r.text[:500]
    r = await http.post(f"{BASE}/teams/{team}/members", data={"name": name, "_csrf_token": csrf})
    assert r.status_code == 303, r.text[:500]


# --- creating an organization --------------------------------------------------------------------

async def test_new_org_needs_signin(http):
    r = await http.get("/organizations/new")
    assert r.status_code == 303 and r.headers["location"].startswith("/signin?next=/organizations/new")


async def test_create_org_shows_errors_in_place_and_rejects_missing_csrf(ctx, http):
    csrf = await browser_session(http, "alice")
    r = await http.get("/organizations/new")
    assert r.status_code == 200 and 'for="f-name"' in r.text
    r = await http.post("/organizations/new", data={"name": "acme"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = await http.post("/organizations/new", data={"name": "Bad Name!", "_csrf_token": csrf})
    assert r.status_code == 400 and "field-error" in r.text and "Invalid organization name" in r.text
    r = await http.post("/organizations/new", data={"name": "alice", "_csrf_token": csrf})
    assert r.status_code == 400 and "already exists" in r.text
    r = await _create_org(http, csrf)
    assert r.status_code == 303 and r.headers["location"] == BASE
    page = await http.get(BASE)
    assert "Organization acme created" in page.text
    assert 'href="/organization/acme"' in page.text  # now in the navigation's organization menu
    async with ctx.db.read() as session:
        org = await orgs.require_org(session, ORG)
        owners = await orgs.team_members(session, await orgs.require_team(session, org, "owners"))
    assert [u.username for u in owners] == ["alice"]


# --- who sees what -------------------------------------------------------------------------------

async def test_outsider_sees_only_repositories_tab(ctx, alice, bob, anon):
    await _repo(ctx, "public-app", "public")
    await _repo(ctx, "secret-app", "private")
    r = await bob.get(BASE)
    assert r.status_code == 200
    assert "public-app" in r.text and "secret-app" not in r.text
    assert f"{BASE}?tab=teams" not in r.text and f"{BASE}?tab=settings" not in r.text
    for tab in ("teams", "robots", "defaultperms", "logs", "settings"):
        r = await bob.get(f"{BASE}?tab={tab}")
        assert r.status_code == 404, tab
    assert (await bob.get(f"{BASE}/teams/owners")).status_code == 404
    assert (await bob.get("/organization/nosuchorg")).status_code == 404
    # anonymous visitors see public repositories; the member-only tabs ask them to sign in
    r = await anon.get(BASE)
    assert r.status_code == 200 and "public-app" in r.text and "secret-app" not in r.text
    r = await anon.get(f"{BASE}?tab=teams")
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")
    # bob cannot post to the organization either: same 404
    r = await bob.post(f"{BASE}/teams", data={"name": "hax", "role": "admin", "_csrf_token": bob.csrf})
    assert r.status_code == 404


async def test_member_sees_teams_but_not_admin_tabs(ctx, http, alice, bob):
    await _add_member(http, alice, "devs", "bob")
    r = await bob.get(f"{BASE}?tab=teams")
    assert r.status_code == 200 and 'data-team="devs"' in r.text
    assert 'action="/organization/acme/teams"' not in r.text  # no create form
    assert 'id="members"' not in r.text  # the member list is for admins
    for tab in ("defaultperms", "logs", "settings"):
        assert (await bob.get(f"{BASE}?tab={tab}")).status_code == 403, tab
    r = await bob.get(f"{BASE}/teams/devs")
    assert r.status_code == 200 and 'data-member="bob"' in r.text and "/members/remove" not in r.text
    assert (await bob.get(f"{BASE}/teams/owners")).status_code == 403  # not in that team
    r = await bob.get(f"{BASE}?tab=robots")
    assert r.status_code == 200 and "Create robot account" not in r.text
    r = await bob.post(f"{BASE}/teams", data={"name": "more", "role": "member", "_csrf_token": bob.csrf})
    assert r.status_code == 403
    r = await bob.post(f"{BASE}/robots", data={"name": "ci", "_csrf_token": bob.csrf})
    assert r.status_code == 403


async def test_posts_without_csrf_are_rejected(http, alice):
    for path, data in ((f"{BASE}/teams", {"name": "devs", "role": "member"}),
                       (f"{BASE}/robots", {"name": "ci"}),
                       (f"{BASE}/prototypes", {"role": "read", "delegate_kind": "team", "delegate": "owners"}),
                       (f"{BASE}/settings/email", {"email": "x@example.com"}),
                       (f"{BASE}/delete", {"confirm_name": ORG}),
                       ("/user/alice/robots", {"name": "ci"})):
        r = await http.post(path, data=data)
        assert r.status_code == 403 and "CSRF" in r.text, path
        r = await http.post(path, data={**data, "_csrf_token": "forged"})
        assert r.status_code == 403, path
    assert (await http.get(f"{BASE}?tab=teams")).status_code == 200
    assert 'data-team="devs"' not in (await http.get(f"{BASE}?tab=teams")).text


# --- teams ---------------------------------------------------------------------------------------

async def test_team_lifecycle(ctx, http, alice):
    await _repo(ctx, "app")
    r = await http.post(f"{BASE}/teams", data={"name": "devs", "role": "creator", "description": "Builders",
                                               "_csrf_token": alice})
    assert r.status_code == 303 and r.headers["location"] == f"{BASE}/teams/devs"
    r = await http.post(f"{BASE}/teams", data={"name": "devs", "role": "member", "_csrf_token": alice})
    assert r.status_code == 400 and "already has a team named devs" in r.text
    r = await http.post(f"{BASE}/teams", data={"name": "Bad!", "role": "member", "_csrf_token": alice})
    assert r.status_code == 400 and "field-error" in r.text

    page = await http.get(f"{BASE}/teams/devs")
    assert page.status_code == 200 and "Builders" in page.text and ">creator<" in page.text

    r = await http.post(f"{BASE}/teams/devs/update", data={"role": "admin", "description": "Ops",
                                                            "_csrf_token": alice})
    assert r.status_code == 303
    r = await http.post(f"{BASE}/teams/owners/update", data={"role": "member", "description": "",
                                                              "_csrf_token": alice})
    assert r.status_code == 400 and "must keep the admin role" in r.text

    r = await http.post(f"{BASE}/teams/devs/members", data={"name": "bob", "_csrf_token": alice})
    assert r.status_code == 303
    r = await http.post(f"{BASE}/teams/devs/members", data={"name": "nobody", "_csrf_token": alice})
    assert r.status_code == 400 and "Unknown user" in r.text
    page = await http.get(f"{BASE}/teams/devs")
    assert 'data-member="bob"' in page.text and ">admin<" in page.text

    # members list on the teams tab shows bob with his team
    tab = await http.get(f"{BASE}?tab=teams")
    assert re.search(r'data-member="bob".*?devs', tab.text, re.DOTALL)

    r = await http.post(f"{BASE}/teams/devs/permissions", data={"repository": "app", "role": "write",
                                                                 "_csrf_token": alice})
    assert r.status_code == 303
    r = await http.post(f"{BASE}/teams/devs/permissions", data={"repository": "nope", "role": "write",
                                                                 "_csrf_token": alice})
    assert r.status_code == 400 and "acme has no repository nope" in r.text
    page = await http.get(f"{BASE}/teams/devs")
    assert 'data-repository="app"' in page.text
    r = await http.post(f"{BASE}/teams/devs/permissions/remove", data={"repository": "app", "_csrf_token": alice})
    assert r.status_code == 303
    assert 'data-repository="app"' not in (await http.get(f"{BASE}/teams/devs")).text

    r = await http.post(f"{BASE}/teams/devs/members/remove", data={"name": "bob", "_csrf_token": alice})
    assert r.status_code == 303
    r = await http.post(f"{BASE}/teams/owners/members/remove", data={"name": "alice", "_csrf_token": alice})
    assert r.status_code == 400 and "at least one owner" in r.text
    assert 'action="/organization/acme/teams/owners/delete"' not in (await http.get(f"{BASE}/teams/owners")).text

    r = await http.post(f"{BASE}/teams/devs/delete", data={"_csrf_token": alice})
    assert r.status_code == 303
    assert (await http.get(f"{BASE}/teams/devs")).status_code == 404


async def test_remove_member_from_org(http, alice, bob):
    await _add_member(http, alice, "devs", "bob")
    r = await http.post(f"{BASE}/members/remove", data={"name": "bob", "_csrf_token": alice})
    assert r.status_code == 303
    assert (await bob.get(f"{BASE}?tab=teams")).status_code == 404


# --- robots --------------------------------------------------------------------------------------

async def test_org_robot_lifecycle(ctx, http, alice, bob):
    await _repo(ctx, "app")
    r = await http.post(f"{BASE}/robots", data={"name": "Bad-Name", "_csrf_token": alice})
    assert r.status_code == 400 and "Invalid robot name" in r.text
    r = await http.post(f"{BASE}/robots", data={"name": "ci", "description": "Pipeline", "_csrf_token": alice})
    assert r.status_code == 303 and r.headers["location"] == f"{BASE}/robots/ci"
    r = await http.post(f"{BASE}/robots", data={"name": "ci", "_csrf_token": alice})
    assert r.status_code == 400 and "Existing robot" in r.text

    page = await http.get(f"{BASE}/robots/ci")
    assert page.status_code == 200
    token = re.search(r'id="robot-token" type="text" readonly value="([A-Z0-9]{64})"', page.text).group(1)
    assert f"podman login -u &#39;acme+ci&#39; -p {token} registry.test" in page.text
    assert 'data-copy="robot-token"' in page.text
    async with ctx.db.read() as session:
        assert await robots.verify_robot(session, ctx.cipher, "acme+ci", token) is not None

    tab = await http.get(f"{BASE}?tab=robots")
    assert 'data-robot="acme+ci"' in tab.text and "Pipeline" in tab.text

    # bob: outsider 404, then member 403 (tokens are for admins)
    assert (await bob.get(f"{BASE}/robots/ci")).status_code == 404
    await _add_member(http, alice, "devs", "bob")
    assert (await bob.get(f"{BASE}/robots/ci")).status_code == 403
    r = await bob.post(f"{BASE}/robots/ci/regenerate", data={"_csrf_token": bob.csrf})
    assert r.status_code == 403

    r = await http.post(f"{BASE}/robots/ci/permissions", data={"repository": "app", "role": "write",
                                                                "_csrf_token": alice})
    assert r.status_code == 303
    page = await http.get(f"{BASE}/robots/ci")
    assert 'data-repository="app"' in page.text
    r = await http.post(f"{BASE}/robots/ci/permissions", data={"repository": "missing", "role": "read",
                                                                "_csrf_token": alice})
    assert r.status_code == 400 and "acme has no repository missing" in r.text

    r = await http.post(f"{BASE}/robots/ci/regenerate", data={"_csrf_token": alice})
    assert r.status_code == 303
    page = await http.get(f"{BASE}/robots/ci")
    assert "A new token was generated" in page.text and token not in page.text

    r = await http.post(f"{BASE}/robots/ci/permissions/remove", data={"repository": "app", "_csrf_token": alice})
    assert r.status_code == 303
    r = await http.post(f"{BASE}/robots/ci/delete", data={"_csrf_token": alice})
    assert r.status_code == 303 and r.headers["location"] == f"{BASE}?tab=robots"
    assert (await http.get(f"{BASE}/robots/ci")).status_code == 404
    assert "No robot accounts yet" in (await http.get(f"{BASE}?tab=robots")).text


async def test_user_robots(ctx, http, anon):
    csrf = await browser_session(http, "alice")
    r = await http.get("/user/alice/robots")
    assert r.status_code == 200 and "No robot accounts yet" in r.text
    r = await http.post("/user/alice/robots", data={"name": "deploy", "_csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/user/alice/robots/deploy"
    page = await http.get("/user/alice/robots/deploy")
    assert "podman login -u &#39;alice+deploy&#39; -p " in page.text
    await _repo(ctx, "mine", namespace="alice")
    r = await http.post("/user/alice/robots/deploy/permissions", data={"repository": "mine", "role": "read",
                                                                        "_csrf_token": csrf})
    assert r.status_code == 303
    assert 'data-repository="mine"' in (await http.get("/user/alice/robots/deploy")).text
    # someone else's robots: 404; anonymous: sign in first
    bob_csrf = await browser_session(anon, "bob")
    assert (await anon.get("/user/alice/robots")).status_code == 404
    assert (await anon.get("/user/alice/robots/deploy")).status_code == 404
    r = await anon.post("/user/alice/robots", data={"name": "evil", "_csrf_token": bob_csrf})
    assert r.status_code == 404
    r = await http.post("/user/alice/robots/deploy/delete", data={"_csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/user/alice/robots"


async def test_user_robots_anonymous_redirects(http):
    r = await http.get("/user/alice/robots")
    assert r.status_code == 303 and r.headers["location"].startswith("/signin?next=/user/alice/robots")


# --- default permissions -------------------------------------------------------------------------

async def test_default_permissions(ctx, http, alice):
    await http.post(f"{BASE}/teams", data={"name": "readers", "role": "member", "_csrf_token": alice})
    page = await http.get(f"{BASE}?tab=defaultperms")
    assert page.status_code == 200 and "No default permissions" in page.text
    r = await http.post(f"{BASE}/prototypes", data={"role": "write", "delegate_kind": "team", "delegate": "ghosts",
                                                    "_csrf_token": alice})
    assert r.status_code == 400 and "Unknown team" in r.text
    r = await http.post(f"{BASE}/prototypes", data={"role": "read", "delegate_kind": "user", "delegate": "bob",
                                                    "activating_user": "nobody", "_csrf_token": alice})
    assert r.status_code == 400 and "Unknown activating user" in r.text
    r = await http.post(f"{BASE}/prototypes", data={"role": "write", "delegate_kind": "team", "delegate": "readers",
                                                    "activating_user": "alice", "_csrf_token": alice})
    assert r.status_code == 303
    page = await http.get(f"{BASE}?tab=defaultperms")
    proto = re.search(r'data-prototype="([0-9a-f-]{36})"', page.text).group(1)
    assert "readers" in page.text and "<option selected>write</option>" in page.text
    r = await http.post(f"{BASE}/prototypes/{proto}", data={"role": "admin", "_csrf_token": alice})
    assert r.status_code == 303
    assert "<option selected>admin</option>" in (await http.get(f"{BASE}?tab=defaultperms")).text
    r = await http.post(f"{BASE}/prototypes/{proto}/delete", data={"_csrf_token": alice})
    assert r.status_code == 303
    assert "No default permissions" in (await http.get(f"{BASE}?tab=defaultperms")).text
    r = await http.post(f"{BASE}/prototypes/{proto}/delete", data={"_csrf_token": alice})
    assert r.status_code == 404


# --- logs and settings ---------------------------------------------------------------------------

async def test_usage_logs_tab(http, alice):
    await http.post(f"{BASE}/teams", data={"name": "devs", "role": "member", "_csrf_token": alice})
    page = await http.get(f"{BASE}?tab=logs")
    assert page.status_code == 200
    assert '<svg class="chart"' in page.text and 'class="bar"' in page.text
    assert 'data-kind="org_create_team"' in page.text and 'data-kind="org_create"' in page.text
    r = await http.get(f"{BASE}?tab=logs&before=forged")
    assert r.status_code == 400


async def test_settings_email_and_time_machine(http, alice):
    page = await http.get(f"{BASE}?tab=settings")
    assert page.status_code == 200 and "2 weeks" in page.text and 'value="0"' in page.text
    r = await http.post(f"{BASE}/settings/email", data={"email": "not-an-email", "_csrf_token": alice})
    assert r.status_code == 400 and "invalid email" in r.text.lower()
    r = await http.post(f"{BASE}/settings/email", data={"email": "alice@example.com", "_csrf_token": alice})
    assert r.status_code == 400 and "already in use" in r.text
    r = await http.post(f"{BASE}/settings/email", data={"email": "ops@acme.test", "_csrf_token": alice})
    assert r.status_code == 303
    r = await http.post(f"{BASE}/settings/expiration", data={"tag_expiration_s": "12345", "_csrf_token": alice})
    assert r.status_code == 400 and "Choose one of the offered windows" in r.text
    r = await http.post(f"{BASE}/settings/expiration", data={"tag_expiration_s": "86400", "_csrf_token": alice})
    assert r.status_code == 303
    page = await http.get(f"{BASE}?tab=settings")
    assert "ops@acme.test" in page.text and "Now: <strong>1 day</strong>" in page.text


async def test_delete_org_with_repositories(ctx, http, alice):
    await _repo(ctx, "app")
    r = await http.post(f"{BASE}/delete", data={"confirm_name": "wrong", "_csrf_token": alice})
    assert r.status_code == 400 and "Type acme to confirm" in r.text
    assert (await http.get(BASE)).status_code == 200
    r = await http.post(f"{BASE}/delete", data={"confirm_name": ORG, "_csrf_token": alice})
    assert r.status_code == 303  # its repositories go with it, through garbage collection
    assert (await http.get(BASE)).status_code == 404
    assert (await http.get(f"/repository/{ORG}/app")).status_code == 404


async def test_delete_org(http, alice, bob):
    await _add_member(http, alice, "devs", "bob")
    r = await bob.post(f"{BASE}/delete", data={"confirm_name": ORG, "_csrf_token": bob.csrf})
    assert r.status_code == 403
    r = await http.post(f"{BASE}/delete", data={"confirm_name": ORG, "_csrf_token": alice})
    assert r.status_code == 303 and r.headers["location"] == "/repository/"
    assert "Organization acme deleted" in (await http.get("/repository/")).text
    assert (await http.get(BASE)).status_code == 404


async def test_delete_org_with_an_old_signin_asks_for_the_password(http, alice, monkeypatch):
    later = time.time() + 3600  # an hour after alice signed in
    monkeypatch.setattr(api_auth, "time", SimpleNamespace(time=lambda: later))
    page = await http.get(f"{BASE}?tab=settings")
    assert 'name="confirm_password"' in page.text
    r = await http.post(f"{BASE}/delete", data={"confirm_name": ORG, "_csrf_token": alice})
    assert r.status_code == 403 and "enter your password" in r.text
    r = await http.post(f"{BASE}/delete", data={"confirm_name": ORG, "confirm_password": "wrong-password",
                                                "_csrf_token": csrf_of(r.text)})
    assert r.status_code == 403 and "not correct" in r.text
    r = await http.post(f"{BASE}/delete", data={"confirm_name": ORG, "confirm_password": "alice-password",
                                                "_csrf_token": csrf_of(r.text)})
    assert r.status_code == 303
    assert (await http.get(BASE)).status_code == 404


async def _push_as_alice(ctx, path: str) -> None:
    """An image pushed with a client of its own (the page client keeps its session)."""
    transport = httpx.ASGITransport(app=ctx.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        await push(client, path, "v1")


async def test_settings_show_storage_quota_only_with_the_feature(ctx, http, alice, bob, monkeypatch):
    await _repo(ctx, "app")
    await _push_as_alice(ctx, f"{ORG}/app")
    async with ctx.db.read() as session:
        usage = await quotas.namespace_usage(session, (await orgs.get_org(session, ORG)).id)
    assert 0 < usage < 1024

    page = await http.get(f"{BASE}?tab=settings")
    assert page.status_code == 200 and "Storage quota" not in page.text  # the feature is off

    monkeypatch.setattr(ctx.settings, "FEATURE_QUOTA_MANAGEMENT", True)
    page = await http.get(f"{BASE}?tab=settings")
    assert "Storage quota" in page.text
    assert f"Used: <strong>{usage} bytes</strong>. No storage quota applies." in page.text

    async with ctx.db.write() as session:
        quota = await quotas.create_quota(session, await orgs.get_org(session, ORG), 10 * 1024 * 1024)
        await quotas.add_limit(session, quota, quotas.WARNING, 80)
        await quotas.add_limit(session, quota, quotas.REJECT, 100)
    page = await http.get(f"{BASE}?tab=settings")
    assert f"{usage} bytes of 10 MiB (less than 1%)" in page.text and 'data-quota-level="ok"' in page.text

    async with ctx.db.write() as session:
        await quotas.set_limit_bytes(session, await quotas.get_quota(session, (await orgs.get_org(session, ORG)).id),
                                     usage * 100 // 90)  # about 90% used: over the Warning limit
    page = await http.get(f"{BASE}?tab=settings")
    assert 'data-quota-level="warning"' in page.text and "flash flash-warning" in page.text
    assert "(90%)" in page.text and "above the warning threshold" in page.text

    async with ctx.db.write() as session:
        await quotas.set_limit_bytes(session, await quotas.get_quota(session, (await orgs.get_org(session, ORG)).id),
                                     usage)  # exactly at the Reject limit
    page = await http.get(f"{BASE}?tab=settings")
    assert 'data-quota-level="error"' in page.text and "flash flash-error" in page.text and "(100%)" in page.text

    await _add_member(http, alice, "devs", "bob")  # a member without admin rights: no settings tab
    assert (await bob.get(f"{BASE}?tab=settings")).status_code == 403
    assert "Storage quota" not in (await bob.get(BASE)).text
