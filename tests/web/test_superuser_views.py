"""The superuser panel, in process on SQLite: alice is a superuser (SUPER_USERS), bob is not.

Everyone but a superuser gets the plain 404 page, anonymous visitors too; every change needs
the CSRF token and a recent sign-in; secrets (generated passwords, private keys) appear once."""

import re
import time
from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest

from quaymaster.accounts import orgs
from quaymaster.accounts import service as accounts
from quaymaster.api import auth as api_auth
from quaymaster.content import service as content
from quaymaster.db.base import utcnow
from quaymaster.superuser import service as superuser
from web.conftest import browser_session, csrf_of

TABS = ("users", "orgs", "keys", "logs", "messages", "changelog")


@pytest.fixture
def config(config):
    return {**config, "SUPER_USERS": ["alice"]}


@pytest.fixture
async def su(http):
    """alice's signed-in client; returns her CSRF token."""
    return await browser_session(http, "alice")


@pytest.fixture
async def bob(ctx):
    transport = httpx.ASGITransport(app=ctx.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        client.csrf = await browser_session(client, "bob")
        yield client


async def _client(ctx):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=ctx.app), base_url="http://registry.test")


# --- access --------------------------------------------------------------------------------------

async def test_everyone_but_superusers_gets_404(http, su, bob, anon):
    for tab in TABS:
        r = await http.get(f"/superuser?tab={tab}")
        assert r.status_code == 200, tab
        assert 'aria-current="page" class="active"' in r.text
        for other in (bob, anon):
            assert (await other.get(f"/superuser?tab={tab}")).status_code == 404
    assert 'href="/superuser"' in (await http.get("/repository/")).text
    assert 'href="/superuser"' not in (await bob.get("/repository/")).text
    for path, data in (("/superuser/users", {"username": "mallory"}), ("/superuser/messages", {"content": "hi"}),
                       ("/superuser/users/alice/delete", {}), ("/superuser/keys", {"service": "x"})):
        r = await bob.post(path, data={**data, "_csrf_token": bob.csrf})
        assert r.status_code == 404, path
        r = await anon.post(path, data=data)
        assert r.status_code == 404, path
        assert (await bob.get(path)).status_code == 404, path  # not a 405 that shows the URL exists


async def test_feature_off_hides_the_panel(ctx, http, su, monkeypatch):
    monkeypatch.setattr(ctx.settings, "FEATURE_SUPER_USERS", False)
    assert (await http.get("/superuser")).status_code == 404


async def test_posts_need_csrf(http, su):
    for path, data in (("/superuser/users", {"username": "carol"}), ("/superuser/messages", {"content": "hi"}),
                       ("/superuser/keys", {"service": "quay"}), ("/superuser/users/bob/disable", {}),
                       ("/superuser/confirm", {"confirm_password": "alice-password"})):
        r = await http.post(path, data=data)
        assert r.status_code == 403 and "CSRF" in r.text, path
    assert 'data-user="carol"' not in (await http.get("/superuser")).text


# --- users ---------------------------------------------------------------------------------------

async def test_create_user_shows_the_password_once(ctx, http, su):
    r = await http.post("/superuser/users", data={"username": "carol", "email": "carol@example.com",
                                                  "_csrf_token": su})
    assert r.status_code == 200
    password = re.search(r'id="new-user-password" type="text" readonly value="([A-Z0-9]{32})"', r.text).group(1)
    assert 'data-user="carol"' in r.text
    assert password not in (await http.get("/superuser")).text
    async with await _client(ctx) as carol:
        await browser_session(carol, "carol", password)
    r = await http.post("/superuser/users", data={"username": "carol", "_csrf_token": su})
    assert r.status_code == 409 and "already taken" in r.text and "field-error" in r.text
    r = await http.post("/superuser/users", data={"username": "Bad Name", "_csrf_token": su})
    assert r.status_code == 400 and "Invalid username" in r.text
    r = await http.post("/superuser/users", data={"username": "", "_csrf_token": su})
    assert r.status_code == 400 and "Enter a username" in r.text


async def test_disable_enable_password_and_delete(ctx, http, su):
    r = await http.post("/superuser/users/bob/disable", data={"_csrf_token": su})
    assert r.status_code == 303
    page = await http.get("/superuser")
    assert re.search(r'data-user="bob".*?badge-warn">disabled', page.text, re.DOTALL)
    async with await _client(ctx) as bob:
        token = csrf_of((await bob.get("/signin")).text)
        r = await bob.post("/signin", data={"username": "bob", "password": "bob-password", "_csrf_token": token})
        assert r.status_code == 403
    r = await http.post("/superuser/users/bob/enable", data={"_csrf_token": su})
    assert r.status_code == 303
    r = await http.post("/superuser/users/bob/password", data={"password": "short", "_csrf_token": su})
    assert r.status_code == 400 and "at least 8 characters" in r.text
    r = await http.post("/superuser/users/bob/password", data={"password": "bob-new-password", "_csrf_token": su})
    assert r.status_code == 303
    async with await _client(ctx) as bob:
        await browser_session(bob, "bob", "bob-new-password")
    # superusers are left to config.yaml
    assert "managed in config.yaml" in (await http.get("/superuser")).text
    r = await http.post("/superuser/users/alice/delete", data={"_csrf_token": su})
    assert r.status_code == 400 and "Cannot delete a superuser" in r.text
    r = await http.post("/superuser/users/nobody/delete", data={"_csrf_token": su})
    assert r.status_code == 404
    # a user who owns repositories goes at once; garbage collection removes the repositories
    async with ctx.db.write() as session:
        await content.create_repository(session, await accounts.require_user(session, "bob"), "app")
    r = await http.post("/superuser/users/bob/delete", data={"_csrf_token": su})
    assert r.status_code == 303
    assert 'data-user="bob"' not in (await http.get("/superuser")).text
    async with ctx.db.write() as session:
        await accounts.create_user(session, "dave", None, "dave-password")
    r = await http.post("/superuser/users/dave/delete", data={"_csrf_token": su})
    assert r.status_code == 303
    assert 'data-user="dave"' not in (await http.get("/superuser")).text


async def test_users_are_paged_and_filtered(ctx, http, su):
    async with ctx.db.write() as session:
        for i in range(60):
            await accounts.create_user(session, f"user{i:02d}", None, "long-enough-password")
    page = await http.get("/superuser?tab=users")
    assert page.text.count('data-user="') == 50 and "62 in all" in page.text
    assert 'page=2">Next' in page.text
    page = await http.get("/superuser?tab=users&page=2")
    assert page.text.count('data-user="') == 12 and "Previous" in page.text
    page = await http.get("/superuser?tab=users&q=user5")
    assert page.text.count('data-user="') == 10 and "matching “user5”" in page.text


# --- organizations -------------------------------------------------------------------------------

async def test_organizations_take_ownership_and_delete(ctx, http, su):
    async with ctx.db.write() as session:
        bob = await accounts.require_user(session, "bob")
        await orgs.create_org(session, "bobcorp", None, bob)
        withrepo = await orgs.create_org(session, "busy", None, bob)
        await content.create_repository(session, withrepo, "app")
    page = await http.get("/superuser?tab=orgs")
    assert 'data-org="bobcorp"' in page.text and 'data-org="busy"' in page.text
    assert (await http.get("/organization/bobcorp?tab=settings")).status_code == 404
    r = await http.post("/superuser/organizations/bobcorp/takeownership", data={"_csrf_token": su})
    assert r.status_code == 303 and r.headers["location"] == "/organization/bobcorp"
    assert (await http.get("/organization/bobcorp?tab=settings")).status_code == 200
    r = await http.post("/superuser/organizations/busy/delete", data={"_csrf_token": su})
    assert r.status_code == 303
    assert 'data-org="busy"' not in (await http.get("/superuser?tab=orgs")).text
    r = await http.post("/superuser/organizations/bobcorp/delete", data={"_csrf_token": su})
    assert r.status_code == 303
    assert 'data-org="bobcorp"' not in (await http.get("/superuser?tab=orgs")).text
    r = await http.post("/superuser/organizations/bobcorp/delete", data={"_csrf_token": su})
    assert r.status_code == 404


# --- service keys --------------------------------------------------------------------------------

async def test_service_keys(ctx, http, su):
    r = await http.post("/superuser/keys", data={"service": "", "_csrf_token": su})
    assert r.status_code == 400 and "Enter the service" in r.text
    r = await http.post("/superuser/keys", data={"service": "builder", "expiration": "2001-01-01", "_csrf_token": su})
    assert r.status_code == 400 and "cannot be in the past" in r.text
    r = await http.post("/superuser/keys", data={"service": "builder", "name": "ci key", "expiration": "tomorrow",
                                                 "_csrf_token": su})
    assert r.status_code == 400 and "YYYY-MM-DD" in r.text
    expires = (utcnow() + timedelta(days=30)).date().isoformat()
    r = await http.post("/superuser/keys", data={"service": "builder", "name": "ci key", "expiration": expires,
                                                 "_csrf_token": su})
    assert r.status_code == 200 and "-----BEGIN RSA PRIVATE KEY-----" in r.text
    kid = re.search(r'id="new-key-kid" type="text" readonly value="([^"]+)"', r.text).group(1)
    page = await http.get("/superuser?tab=keys")
    assert f'data-kid="{kid}"' in page.text and "PRIVATE KEY" not in page.text
    # a key waiting for approval
    async with ctx.db.write() as session:
        pending = await superuser.create_key(session, name="pending", service="builder", expiration=None,
                                             metadata={}, approver="alice")
        pending.row.approved_date = None
        pending_kid = pending.row.kid
    page = await http.get("/superuser?tab=keys")
    assert re.search(rf'data-kid="{re.escape(pending_kid)}".*?pending</span>', page.text, re.DOTALL)
    r = await http.post(f"/superuser/keys/{pending_kid}/approve", data={"_csrf_token": su})
    assert r.status_code == 303
    async with ctx.db.read() as session:
        assert (await superuser.require_key(session, pending_kid)).approved_date is not None
    r = await http.post(f"/superuser/keys/{kid}/delete", data={"_csrf_token": su})
    assert r.status_code == 303
    assert f'data-kid="{kid}"' not in (await http.get("/superuser?tab=keys")).text
    r = await http.post(f"/superuser/keys/{kid}/delete", data={"_csrf_token": su})
    assert r.status_code == 404


# --- logs ----------------------------------------------------------------------------------------

async def test_registry_logs_are_paged(ctx, http, su):
    for i in range(25):
        ctx.audit.record("create_message", performer_id=None, metadata={"uuid": f"m{i}", "message": f"note {i}"})
    page = await http.get("/superuser?tab=logs")
    assert page.status_code == 200 and '<svg class="chart"' in page.text
    assert page.text.count("<tr data-kind=") == 20
    older = re.search(r'href="/superuser\?tab=logs&amp;before=([^"]+)">Older', page.text).group(1)
    page = await http.get(f"/superuser?tab=logs&before={older.replace('&amp;', '&')}")
    assert page.status_code == 200 and page.text.count("<tr data-kind=") >= 5 and ">Newest<" in page.text


# --- global messages -----------------------------------------------------------------------------

async def test_messages_are_banners_for_everyone(ctx, http, su, bob, anon):
    r = await http.post("/superuser/messages", data={"severity": "warning", "content": "  ", "_csrf_token": su})
    assert r.status_code == 400 and "Write the message" in r.text
    r = await http.post("/superuser/messages", data={"severity": "loud", "content": "x", "_csrf_token": su})
    assert r.status_code == 400 and "Choose normal, warning or error" in r.text
    r = await http.post("/superuser/messages", data={"severity": "warning", "content": "Maintenance <b>tonight</b>",
                                                     "_csrf_token": su})
    assert r.status_code == 303
    for client, path in ((anon, "/signin"), (anon, "/repository/"), (bob, "/repository/"), (http, "/superuser")):
        page = await client.get(path)
        assert 'class="banner banner-warning"' in page.text, path
        assert "Maintenance &lt;b&gt;tonight&lt;/b&gt;" in page.text, path
    page = await http.get("/superuser?tab=messages")
    uuid = re.search(r'data-message="([0-9a-f-]{36})"', page.text).group(1)
    r = await http.post(f"/superuser/messages/{uuid}/delete", data={"_csrf_token": su})
    assert r.status_code == 303
    assert "banner-warning" not in (await anon.get("/repository/")).text
    assert "No messages" in (await http.get("/superuser?tab=messages")).text
    r = await http.post(f"/superuser/messages/{uuid}/delete", data={"_csrf_token": su})
    assert r.status_code == 404


# --- fresh sign-in -------------------------------------------------------------------------------

async def test_changes_need_a_recent_signin(ctx, http, su, monkeypatch):
    later = time.time() + 3600
    monkeypatch.setattr(api_auth, "time", SimpleNamespace(time=lambda: later))
    page = await http.get("/superuser?tab=messages")
    assert "Confirm your password to make changes" in page.text
    r = await http.post("/superuser/messages", data={"severity": "info", "content": "hello", "_csrf_token": su})
    assert r.status_code == 403 and "Confirm your password above" in r.text and "hello</textarea>" in r.text
    r = await http.post("/superuser/confirm", data={"confirm_password": "nope-nope", "tab": "messages",
                                                    "_csrf_token": su})
    assert r.status_code == 403 and "not correct" in r.text
    r = await http.post("/superuser/confirm", data={"confirm_password": "alice-password", "tab": "messages",
                                                    "_csrf_token": su})
    assert r.status_code == 303 and r.headers["location"] == "/superuser?tab=messages"
    page = await http.get("/superuser?tab=messages")
    assert "Confirm your password to make changes" not in page.text and "Password confirmed" in page.text
    r = await http.post("/superuser/messages", data={"severity": "info", "content": "hello",
                                                     "_csrf_token": csrf_of(page.text)})
    assert r.status_code == 303


async def test_changelog_tab(http, su):
    page = await http.get("/superuser?tab=changelog")
    assert page.status_code == 200 and ("No change log" in page.text or 'class="changelog"' in page.text)
