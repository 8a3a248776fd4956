"""The signed-in user, sign-in/out with CSRF, fresh login, lockout, app tokens, first-user bootstrap."""

import pytest

from .helpers import assert_error, bearer, signin


async def test_signin_session_and_csrf(http):
    assert_error(await http.get("/api/v1/user/"), 401)
    csrf = await signin(http, "alice")
    r = await http.get("/api/v1/user/")
    assert r.status_code == 200 and r.json()["username"] == "alice" and r.json()["anonymous"] is False
    # Writes from a browser session need the CSRF token.
    assert_error(await http.post("/api/v1/user/apptoken", json={"title": "ci"}), 403)
    r = await http.post("/api/v1/user/apptoken", json={"title": "ci"}, headers=csrf)
    assert r.status_code == 200
    await http.post("/api/v1/signout", headers=csrf)
    assert_error(await http.get("/api/v1/user/"), 401)


async def test_wrong_password_and_lockout(http):
    for _ in range(5):
        assert_error(await http.post("/api/v1/signin", json={"username": "alice", "password": "wrong-one"}), 403)
    r = await http.post("/api/v1/signin", json={"username": "alice", "password": "alice-password"})
    body = assert_error(r, 429)
    assert "try again in" in body["error_message"] and int(r.headers["Retry-After"]) >= 1


async def test_create_account_and_duplicates(http):
    r = await http.post("/api/v1/user/", json={"username": "carol", "password": "carol-password",
                                               "email": "carol@example.com"})
    assert r.status_code == 201 and r.json()["username"] == "carol"
    assert_error(await http.post("/api/v1/user/", json={"username": "carol", "password": "another-pass"}), 409)
    assert_error(await http.post("/api/v1/user/", json={"username": "Bad Name", "password": "another-pass"}), 400)
    assert_error(await http.post("/api/v1/user/", json={"username": "dave"}), 400)


async def test_password_change_needs_fresh_login_only_for_sessions(http, ctx):
    csrf = await signin(http, "alice")
    r = await http.put("/api/v1/user/", json={"password": "alice-new-password"}, headers=csrf)
    assert r.status_code == 200
    r = await http.post("/api/v1/signin", json={"username": "alice", "password": "alice-new-password"})
    assert r.status_code == 200
    token = await bearer(ctx, "bob", "user:admin")
    r = await http.put("/api/v1/user/", json={"email": "bob2@example.com"}, headers=token)
    assert r.status_code == 200 and r.json()["email"] == "bob2@example.com"


async def test_time_machine_window_is_one_of_the_offered_options(http, ctx):
    token = await bearer(ctx, "bob", "user:admin")
    r = await http.put("/api/v1/user/", json={"tag_expiration_s": 0}, headers=token)
    assert r.status_code == 200 and r.json()["tag_expiration_s"] == 0
    body = assert_error(await http.put("/api/v1/user/", json={"tag_expiration_s": 12345}, headers=token), 400)
    assert "tag_expiration_s must be one of" in body["error_message"]


async def test_token_scopes_are_enforced(http, ctx):
    read_only = await bearer(ctx, "alice", "user:read")
    assert (await http.get("/api/v1/user/", headers=read_only)).status_code == 200
    assert_error(await http.get("/api/v1/user/apptoken", headers=read_only), 403)
    assert_error(await http.get("/api/v1/user/", headers={"Authorization": "Bearer " + "x" * 40}), 401)


async def test_app_token_lifecycle_and_registry_login(http, ctx):
    token = await bearer(ctx, "alice", "user:admin")
    r = await http.post("/api/v1/user/apptoken", json={"title": "laptop"}, headers=token)
    created = r.json()["token"]
    assert len(created["token_code"]) == 120
    listed = (await http.get("/api/v1/user/apptoken", headers=token)).json()["tokens"]
    assert [t["title"] for t in listed] == ["laptop"] and "token_code" not in listed[0]
    r = await http.get(f"/api/v1/user/apptoken/{created['uuid']}", headers=token)
    assert r.json()["token"]["token_code"] == created["token_code"]
    # The token logs in to the registry as `$app`.
    r = await http.get("/v2/auth", params={"service": "registry.test"}, auth=("$app", created["token_code"]))
    assert r.status_code == 200
    assert (await http.delete(f"/api/v1/user/apptoken/{created['uuid']}", headers=token)).status_code == 204
    r = await http.get("/v2/auth", params={"service": "registry.test"}, auth=("$app", created["token_code"]))
    assert r.status_code == 401


@pytest.fixture
def config(config):
    return {**config, "FEATURE_USER_INITIALIZE": True}


async def test_initialize_refuses_once_users_exist(http):
    # The ctx fixture already created alice and bob.
    r = await http.post("/api/v1/user/initialize", json={"username": "first", "password": "first-password",
                                                         "access_token": True})
    assert_error(r, 400)


async def test_discovery_is_openapi(http):
    r = await http.get("/api/v1/discovery")
    assert r.status_code == 200 and "/user/" in r.json()["paths"]
