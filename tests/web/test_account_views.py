"""Account pages in-process: sign in/up/out, account settings, app tokens, CSRF and who may see what."""

import pytest
from api.repohelpers import log_entries

from quaymaster.superuser import service as superuser
from web.conftest import browser_session, csrf_of, page_csrf


async def test_signin_form_signs_in_and_follows_next(ctx, http):
    page = await http.get("/signin?next=/repository/alice/x")
    assert page.status_code == 200
    assert 'label for="f-username"' in page.text and 'label for="f-password"' in page.text
    token = csrf_of(page.text)
    r = await http.post("/signin", data={"username": "alice", "password": "alice-password", "_csrf_token": token,
                                         "next": "/repository/alice/x"})
    assert r.status_code == 303 and r.headers["location"] == "/repository/alice/x"
    home = await http.get("/repository/")
    assert "alice" in home.text and "Sign out" in home.text


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
async def test_signin_never_redirects_off_site(ctx, http, target):
    token = await page_csrf(http)
    r = await http.post("/signin", data={"username": "alice", "password": "alice-password", "_csrf_token": token,
                                         "next": target})
    assert r.status_code == 303 and r.headers["location"] == "/repository/"


async def test_signin_errors_are_shown_in_place(ctx, http):
    token = await page_csrf(http)
    r = await http.post("/signin", data={"username": "alice", "password": "wrong", "_csrf_token": token})
    assert r.status_code == 403
    assert "Invalid username or password" in r.text and 'value="alice"' in r.text


async def test_posts_without_csrf_are_rejected(ctx, http):
    await http.get("/signin")  # a session exists, but the form token is missing or wrong
    for data in ({"username": "alice", "password": "alice-password"},
                 {"username": "alice", "password": "alice-password", "_csrf_token": "forged"}):
        r = await http.post("/signin", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
    token = await browser_session(http, "alice")
    for path in ("/signout", "/user/alice/password", "/user/alice/email", "/user/alice/apptoken"):
        r = await http.post(path, data={"title": "x", "email": "a@b.cd"})
        assert r.status_code == 403, path
    assert (await http.get("/user/alice?tab=settings")).status_code == 200  # still signed in
    assert token


async def test_csrf_token_from_another_session_is_rejected(ctx, http, anon):
    alice_token = await browser_session(http, "alice")
    await browser_session(anon, "bob")
    r = await anon.post("/signout", data={"_csrf_token": alice_token})
    assert r.status_code == 403


async def test_signup_creates_and_signs_in(ctx, http):
    token = await page_csrf(http, "/signup")
    r = await http.post("/signup", data={"username": "carol", "email": "carol@example.com", "password": "carol-pass",
                                         "confirm_password": "carol-pass", "_csrf_token": token})
    assert r.status_code == 303
    page = await http.get("/repository/")
    assert "Welcome, carol" in page.text
    assert "Welcome, carol" not in (await http.get("/repository/")).text  # a flash shows once


async def test_signup_errors_in_place(ctx, http):
    token = await page_csrf(http, "/signup")
    r = await http.post("/signup", data={"username": "alice", "email": "new@example.com", "password": "long-enough",
                                         "confirm_password": "long-enough", "_csrf_token": token})
    assert r.status_code == 409 and "already taken" in r.text
    r = await http.post("/signup", data={"username": "dave", "email": "dave@example.com", "password": "long-enough",
                                         "confirm_password": "different", "_csrf_token": token})
    assert r.status_code == 400 and "do not match" in r.text and 'aria-invalid="true"' in r.text


async def test_signup_disabled_without_user_creation(ctx, http):
    ctx.settings.FEATURE_USER_CREATION = False
    assert (await http.get("/signup")).status_code == 404
    assert "Create Account" not in (await http.get("/signin")).text


async def test_signout_ends_the_session(ctx, http):
    token = await browser_session(http, "alice")
    r = await http.post("/signout", data={"_csrf_token": token})
    assert r.status_code == 303
    r = await http.get("/user/alice?tab=settings")
    assert r.status_code == 303 and r.headers["location"].startswith("/signin?next=")


async def test_settings_only_for_yourself(ctx, http, anon):
    r = await anon.get("/user/alice?tab=settings")
    assert r.status_code == 303 and r.headers["location"] == "/signin?next=/user/alice%3Ftab%3Dsettings"
    await browser_session(anon, "bob")
    r = await anon.get("/user/alice?tab=settings")
    assert r.status_code == 303 and r.headers["location"] == "/repository/?namespace=alice"
    bob_token = await page_csrf(anon, "/repository/")
    for path in ("/user/alice/password", "/user/alice/email", "/user/alice/apptoken"):
        r = await anon.post(path, data={"_csrf_token": bob_token, "current_password": "bob-password",
                                        "new_password": "whatever-1", "confirm_password": "whatever-1",
                                        "email": "x@example.com", "title": "t"})
        assert r.status_code == 404, path
    await browser_session(http, "alice")
    page = await http.get("/user/alice?tab=settings")
    assert page.status_code == 200
    assert "podman login registry.test" in page.text and "docker login registry.test" in page.text


async def test_change_password_needs_the_current_one(ctx, http, anon):
    token = await browser_session(http, "alice")
    r = await http.post("/user/alice/password", data={"_csrf_token": token, "current_password": "nope",
                                                      "new_password": "brand-new-pw",
                                                      "confirm_password": "brand-new-pw"})
    assert r.status_code == 400 and "current password is not correct" in r.text
    r = await http.post("/user/alice/password", data={"_csrf_token": token, "current_password": "alice-password",
                                                      "new_password": "brand-new-pw",
                                                      "confirm_password": "brand-new-pw"})
    assert r.status_code == 303
    await browser_session(anon, "alice", "brand-new-pw")
    # the session was renewed: the old form token no longer works
    r = await http.post("/user/alice/email", data={"_csrf_token": token, "current_password": "brand-new-pw",
                                                   "email": "new@example.com"})
    assert r.status_code == 403


async def test_change_email(ctx, http):
    token = await browser_session(http, "alice")
    r = await http.post("/user/alice/email", data={"_csrf_token": token, "current_password": "alice-password",
                                                   "email": "bob@example.com"})
    assert r.status_code == 400 and "already in use" in r.text
    r = await http.post("/user/alice/email", data={"_csrf_token": token, "current_password": "alice-password",
                                                   "email": "alice2@example.com"})
    assert r.status_code == 303
    assert "alice2@example.com" in (await http.get("/user/alice?tab=settings")).text


async def test_app_token_shown_once_then_revoked(ctx, http, anon):
    token = await browser_session(http, "alice")
    r = await http.post("/user/alice/apptoken", data={"_csrf_token": token, "title": "laptop"})
    assert r.status_code == 303
    first = await http.get(r.headers["location"])
    assert 'id="new-token-value"' in first.text
    secret = first.text.split('id="new-token-value" type="text" readonly value="')[1].split('"')[0]
    assert len(secret) == 120
    again = await http.get("/user/alice?tab=settings")
    assert 'id="new-token-value"' not in again.text and "laptop" in again.text
    assert (await anon.get("/v2/auth", params={"service": "registry.test"}, auth=("$app", secret))).status_code == 200
    uuid = again.text.split("/user/alice/apptoken/")[1].split("/revoke")[0]
    bob_token = await browser_session(anon, "bob")
    assert (await anon.post(f"/user/alice/apptoken/{uuid}/revoke", data={"_csrf_token": bob_token})).status_code == 404
    r = await http.post(f"/user/alice/apptoken/{uuid}/revoke", data={"_csrf_token": token})
    assert r.status_code == 303
    assert "No tokens yet." in (await http.get("/user/alice?tab=settings")).text


async def test_global_messages_on_every_page_for_everyone(ctx, http):
    async with ctx.db.write() as session:
        await superuser.create_message(session, "Maintenance <b>tonight</b>", "text/plain", "warning")
        await superuser.create_message(session, "All good", "text/plain", "info")
    for path in ("/signin", "/repository/", "/no/such/page"):
        page = await http.get(path)
        assert "banner-warning" in page.text and "Maintenance &lt;b&gt;tonight&lt;/b&gt;" in page.text, path
        assert "banner-info" in page.text


async def test_unknown_page_is_an_html_404(ctx, http):
    r = await http.get("/definitely/not/here")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "Not found" in r.text


async def test_static_assets(ctx, http):
    css = await http.get("/static/style.css")
    assert css.status_code == 200 and ":focus-visible" in css.text
    js = await http.get("/static/htmx.min.js")
    assert js.status_code == 200 and "Zero-Clause BSD" in js.text[:200]


async def test_directory_accounts_have_no_local_password_forms(ctx, http):
    token = await browser_session(http, "alice")
    ctx.settings.AUTHENTICATION_TYPE = "LDAP"  # the session stays; passwords now live in the directory
    assert (await http.get("/signup")).status_code == 404
    page = await http.get("/user/alice?tab=settings")
    assert "managed by the organization's directory" in page.text and "Change password" not in page.text
    for path in ("/user/alice/password", "/user/alice/email"):
        r = await http.post(path, data={"_csrf_token": token, "current_password": "alice-password",
                                        "new_password": "brand-new-pw", "confirm_password": "brand-new-pw",
                                        "email": "z@example.com"})
        assert r.status_code == 404, path


async def test_time_machine_window(ctx, http, monkeypatch):
    token = await browser_session(http, "alice")
    page = await http.get("/user/alice?tab=settings")
    assert 'id="time-machine"' in page.text and 'name="tag_expiration_s"' in page.text
    assert "Now: <strong>2 weeks</strong>" in page.text
    for value in ("12345", "nonsense"):
        r = await http.post("/user/alice/expiration", data={"tag_expiration_s": value, "_csrf_token": token})
        assert r.status_code == 400 and "Choose one of the offered windows" in r.text
    r = await http.post("/user/alice/expiration", data={"tag_expiration_s": "86400"})
    assert r.status_code == 403  # no CSRF token
    r = await http.post("/user/alice/expiration", data={"tag_expiration_s": "86400", "_csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/user/alice?tab=settings#time-machine"
    page = await http.get("/user/alice?tab=settings")
    assert "Time machine window set to 1 day" in page.text and "Now: <strong>1 day</strong>" in page.text
    assert 'value="86400" checked>' in page.text
    entries = await log_entries(ctx, "user_change_tag_expiration")
    assert [e.metadata_json for e in entries] == [{"tag_expiration": 86400}]
    r = await http.post("/user/bob/expiration", data={"tag_expiration_s": "0", "_csrf_token": token})
    assert r.status_code == 404  # nobody changes another account's window

    monkeypatch.setattr(ctx.settings, "FEATURE_CHANGE_TAG_EXPIRATION", False)
    page = await http.get("/user/alice?tab=settings")
    assert "Now: <strong>1 day</strong>" in page.text and 'name="tag_expiration_s"' not in page.text
    r = await http.post("/user/alice/expiration", data={"tag_expiration_s": "0", "_csrf_token": token})
    assert r.status_code == 403
