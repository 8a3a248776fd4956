"""AUTHENTICATION_TYPE: LDAP against a real slapd: /api/v1/signin and /v2/auth with directory
credentials, accounts made on the first sign-in, filters, superusers, and a directory that is down.

The directory (tests/support/slapd.py): alice, bob, carol (in registry-admins), Frank.Mueller under
ou=people, dave under ou=contractors; each password is `<uid>-ldap-pw`. The app here has no local
users but `localuser`, who has a database password that LDAP mode must not accept.
"""

import base64
import logging
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from support.certs import TestCA
from support.servers import free_port
from support.slapd import ADMINS_GROUP, USERS_GROUP, slapd_server

from quaymaster.accounts import ldap
from quaymaster.accounts import service as accounts
from quaymaster.accounts.models import FederatedLogin, User
from quaymaster.app import bind_context, create_app, start_context
from quaymaster.settings.model import settings_from_dict

from .helpers import assert_error, bearer

HOST = "registry.test"
sqlite_only = pytest.mark.parametrize("db_uri", ["sqlite"], indirect=True)


def pw(uid: str) -> str:
    return f"{uid}-ldap-pw"


@pytest.fixture(scope="module")
def slapd():
    with slapd_server() as server:
        yield server


@pytest.fixture
def ldap_overrides() -> dict:
    """LDAP_* keys a test changes (parametrize this fixture)."""
    return {}


@pytest.fixture
def config(config: dict, slapd, ldap_overrides: dict) -> dict:
    return {**config, "AUTHENTICATION_TYPE": "LDAP", **slapd.quay_config(**ldap_overrides)}


@pytest.fixture
async def ctx(config: dict, monkeypatch):
    monkeypatch.setattr(accounts, "BCRYPT_ROUNDS", 4)
    settings = settings_from_dict(config)
    app = create_app(settings)
    context = await start_context(settings)
    bind_context(app, context)
    async with context.db.write() as session:
        await accounts.create_user(session, "localuser", "localuser@example.com", "localuser-password")
    context.app = app
    yield context
    await context.audit.flush()
    await context.db.dispose()


def basic(name: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


async def v2_auth(http: httpx.AsyncClient, name: str, password: str, scope: str | None = None) -> httpx.Response:
    params = {"service": HOST, **({"scope": scope} if scope else {})}
    return await http.get("/v2/auth", params=params, headers=basic(name, password))


async def signin(http: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    return await http.post("/api/v1/signin", json={"username": name, "password": password})


async def local_user(ctx, username: str) -> User | None:
    async with ctx.db.read() as session:
        return await accounts.get_user(session, username)


async def user_count(ctx) -> int:
    async with ctx.db.read() as session:
        return await accounts.count_users(session)


async def test_signin_creates_the_user_on_first_login(ctx, http):
    assert await local_user(ctx, "alice") is None
    r = await signin(http, "alice", pw("alice"))
    assert r.status_code == 200, r.text
    me = (await http.get("/api/v1/user/")).json()
    assert (me["username"], me["email"], me["super_user"]) == ("alice", "alice@example.org", False)

    user = await local_user(ctx, "alice")
    assert user.password_hash is None  # no local password: only the directory can sign alice in
    async with ctx.db.read() as session:
        link = await session.scalar(select(FederatedLogin).where(FederatedLogin.user_id == user.id))
    assert (link.service, link.service_ident) == ("ldap", "alice")

    count = await user_count(ctx)
    http.cookies.clear()
    assert (await signin(http, "alice", pw("alice"))).status_code == 200
    assert await user_count(ctx) == count  # the same account, not a second one


@sqlite_only
async def test_v2_auth_creates_the_user_and_grants_their_namespace(ctx, http):
    r = await v2_auth(http, "bob", pw("bob"))
    assert r.status_code == 200, r.text
    assert (await local_user(ctx, "bob")).email == "bob@example.org"

    r = await v2_auth(http, "bob", pw("bob"), scope="repository:bob/app:pull,push")
    assert r.status_code == 200, r.text
    claims = await ctx.keys.verify(r.json()["token"])
    assert claims.subject == "bob"
    assert set(claims.actions_for("bob/app")) == {"pull", "push"}


@sqlite_only
async def test_wrong_password_empty_password_and_unknown_user_are_refused(ctx, http, caplog):
    caplog.set_level(logging.DEBUG)
    for name, password in [("alice", "not-her-password"), ("alice", ""), ("nobody", "whatever-pw"),
                           ("ali*", pw("alice")), ("*", pw("alice")), ("alice)(uid=*", pw("alice"))]:
        assert_error(await signin(http, name, password), 403, "invalid_credentials")
        r = await v2_auth(http, name, password)
        assert r.status_code == 401, (name, r.text)
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert await user_count(ctx) == 1  # only localuser: failed sign-ins create nobody
    assert "not-her-password" not in caplog.text and pw("alice") not in caplog.text


@sqlite_only
async def test_local_database_passwords_are_not_accepted(ctx, http):
    assert_error(await signin(http, "localuser", "localuser-password"), 403, "invalid_credentials")
    assert (await v2_auth(http, "localuser", "localuser-password")).status_code == 401
    # Nor can anyone make a local password account, or set a local password, in LDAP mode.
    assert_error(await http.post("/api/v1/user/", json={"username": "sneaky", "password": "sneaky-password"}), 400)
    await signin(http, "alice", pw("alice"))
    csrf = (await http.get("/api/v1/csrf_token")).json()["csrf_token"]
    r = await http.put("/api/v1/user/", json={"password": "a-local-password"}, headers={"X-CSRF-Token": csrf})
    assert_error(r, 400)


@sqlite_only
async def test_robots_and_tokens_keep_working(ctx, http):
    assert (await signin(http, "alice", pw("alice"))).status_code == 200
    csrf = {"X-CSRF-Token": (await http.get("/api/v1/csrf_token")).json()["csrf_token"]}
    robot = await http.put("/api/v1/user/robots/ci", json={"description": "builds"}, headers=csrf)
    assert robot.status_code == 201, robot.text
    app_token = await http.post("/api/v1/user/apptoken", json={"title": "laptop"}, headers=csrf)
    assert app_token.status_code == 200, app_token.text

    r = await v2_auth(http, "alice+ci", robot.json()["token"])
    assert r.status_code == 200, r.text
    r = await v2_auth(http, "$app", app_token.json()["token"]["token_code"], scope="repository:alice/app:pull,push")
    assert r.status_code == 200, r.text
    assert set((await ctx.keys.verify(r.json()["token"])).actions_for("alice/app")) == {"pull", "push"}
    http.cookies.clear()
    r = await http.get("/api/v1/user/", headers=await bearer(ctx, "alice"))
    assert r.json()["username"] == "alice"


@sqlite_only
@pytest.mark.parametrize("ldap_overrides", [{"LDAP_USER_FILTER": f"(memberOf={USERS_GROUP})"},
                                            {"LDAP_USER_FILTER": f"memberOf={USERS_GROUP}"}])
async def test_user_filter_excludes_who_it_does_not_match(ctx, http):
    assert_error(await signin(http, "bob", pw("bob")), 403, "invalid_credentials")
    assert (await v2_auth(http, "bob", pw("bob"))).status_code == 401
    assert await local_user(ctx, "bob") is None
    assert (await signin(http, "alice", pw("alice"))).status_code == 200
    assert (await v2_auth(http, "alice", pw("alice"))).status_code == 200


@sqlite_only
@pytest.mark.parametrize("ldap_overrides", [{"LDAP_SUPERUSER_FILTER": f"(memberOf={ADMINS_GROUP})"}])
async def test_superuser_filter_makes_superusers(ctx, http):
    assert (await signin(http, "carol", pw("carol"))).status_code == 200
    assert (await http.get("/api/v1/user/")).json()["super_user"] is True
    r = await http.get("/api/v1/superuser/users/")
    assert r.status_code == 200, r.text
    assert "carol" in {u["username"] for u in r.json()["users"]}
    # A token of carol's is a superuser's too (checked against the directory, not the session).
    http.cookies.clear()
    assert (await http.get("/api/v1/superuser/users/", headers=await bearer(ctx, "carol"))).status_code == 200

    assert (await signin(http, "alice", pw("alice"))).status_code == 200
    assert (await http.get("/api/v1/user/")).json()["super_user"] is False
    assert_error(await http.get("/api/v1/superuser/users/"), 403)


@sqlite_only
@pytest.mark.parametrize("ldap_overrides", [{"LDAP_SUPERUSER_FILTER": f"(memberOf={ADMINS_GROUP})"}])
async def test_super_users_key_still_counts(ctx, http):
    ctx.settings.SUPER_USERS.append("alice")
    assert (await signin(http, "alice", pw("alice"))).status_code == 200
    assert (await http.get("/api/v1/superuser/users/")).status_code == 200


@sqlite_only
@pytest.mark.parametrize("ldap_overrides", [
    {"LDAP_URI": f"ldap://127.0.0.1:{free_port()}"},  # nothing listens there
    {"LDAP_ADMIN_PASSWD": "not-the-admin-password"},
    {"LDAP_USER_FILTER": "(unbalanced"},
], ids=["server-down", "bad-admin-password", "bad-filter"])
async def test_unreachable_directory_is_a_clear_refusal(ctx, http, caplog):
    caplog.set_level(logging.DEBUG)
    r = await signin(http, "alice", pw("alice"))
    body = assert_error(r, 403, "authentication_unavailable")
    assert "authentication service unavailable" in body["error_message"]
    r = await v2_auth(http, "alice", pw("alice"))
    assert r.status_code == 401, r.text
    assert "authentication service unavailable" in r.json()["errors"][0]["message"]
    # Robots and tokens do not need the directory.
    assert (await http.get("/api/v1/user/", headers=await bearer(ctx, "localuser"))).status_code == 200
    assert pw("alice") not in caplog.text and "not-the-admin-password" not in caplog.text


@sqlite_only
async def test_email_follows_the_directory(ctx, http, slapd):
    assert (await signin(http, "alice", pw("alice"))).status_code == 200
    slapd.set_mail("alice", "alice@new.example.org")
    try:
        assert (await v2_auth(http, "alice", pw("alice"))).status_code == 200
        assert (await local_user(ctx, "alice")).email == "alice@new.example.org"
    finally:
        slapd.set_mail("alice", "alice@example.org")


@sqlite_only
async def test_usernames_follow_quay_rules_and_never_take_an_existing_account(ctx, http):
    async with ctx.db.write() as session:
        await accounts.create_user(session, "bob", "bob@elsewhere.example.com", "local-bob-password")
    assert (await signin(http, "Frank.Mueller", pw("Frank.Mueller"))).status_code == 200
    assert (await http.get("/api/v1/user/")).json()["username"] == "frank.mueller"
    http.cookies.clear()
    # The directory's bob is not the local bob: he gets a name of his own, and keeps it.
    for _ in range(2):
        r = await v2_auth(http, "bob", pw("bob"))
        assert r.status_code == 200, r.text
        assert (await ctx.keys.verify(r.json()["token"])).subject == "bob1"
    assert (await local_user(ctx, "bob")).password_hash is not None


@sqlite_only
async def test_fresh_login_checks_the_directory_password(ctx, http):
    assert (await signin(http, "frank.mueller", pw("Frank.Mueller"))).status_code == 200
    csrf = {"X-CSRF-Token": (await http.get("/api/v1/csrf_token")).json()["csrf_token"]}
    r = await http.post("/api/v1/signin/verify", json={"password": "wrong-password"}, headers=csrf)
    assert_error(r, 403, "invalid_credentials")
    r = await http.post("/api/v1/signin/verify", json={"password": pw("Frank.Mueller")}, headers=csrf)
    assert r.status_code == 200, r.text


@sqlite_only
async def test_repeated_failures_throttle_the_account(ctx, http):
    assert (await signin(http, "alice", pw("alice"))).status_code == 200
    for _ in range(accounts.THROTTLE_AFTER):
        assert (await signin(http, "alice", "wrong-password")).status_code == 403
    r = await signin(http, "alice", pw("alice"))
    assert_error(r, 429)
    assert (await v2_auth(http, "alice", pw("alice"))).status_code == 429


@sqlite_only
@pytest.mark.parametrize("ldap_overrides", [{"LDAP_SECONDARY_USER_RDNS": ["ou=contractors"]}])
async def test_secondary_user_rdns_are_searched(ctx, http):
    assert (await signin(http, "dave", pw("dave"))).status_code == 200
    assert (await signin(http, "alice", pw("alice"))).status_code == 200


@sqlite_only
async def test_without_secondary_rdns_other_branches_are_not_searched(ctx, http):
    assert_error(await signin(http, "dave", pw("dave")), 403, "invalid_credentials")


# --- ldaps:// ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("Quaymaster LDAP Test CA")


@pytest.fixture(scope="module")
def slapd_tls(ca: TestCA):
    issued = ca.issue("localhost", "127.0.0.1")
    with slapd_server(ldaps=(issued.cert_pem, issued.key_pem)) as server:
        yield server


@pytest.fixture
def tls_config(config: dict, slapd_tls) -> dict:
    return {**config, "LDAP_URI": slapd_tls.ldaps_uri}


async def _signin_with(config: dict, monkeypatch) -> httpx.Response:
    settings = settings_from_dict(config)
    app = create_app(settings)
    context = await start_context(settings)
    bind_context(app, context)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{HOST}") as client:
            return await signin(client, "alice", pw("alice"))
    finally:
        await context.audit.flush()
        await context.db.dispose()


@sqlite_only
async def test_ldaps_trusts_ldap_crt_from_the_config_dir(tls_config, ca, tmp_path: Path, monkeypatch):
    assert_error(await _signin_with(tls_config, monkeypatch), 403, "authentication_unavailable")  # unknown CA
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / ldap.CA_FILE_NAME).write_bytes(ca.cert_pem)
    monkeypatch.setenv(ldap.CONFIG_DIR_ENV, str(config_dir))
    r = await _signin_with(tls_config, monkeypatch)
    assert r.status_code == 200, r.text


@sqlite_only
async def test_ldaps_insecure_fallback_accepts_an_unverified_certificate(tls_config, monkeypatch):
    r = await _signin_with({**tls_config, "LDAP_ALLOW_INSECURE_FALLBACK": True}, monkeypatch)
    assert r.status_code == 200, r.text


async def test_first_logins_racing_make_one_account(ctx, http):
    import asyncio

    results = await asyncio.gather(*(v2_auth(http, "carol", pw("carol")) for _ in range(4)))
    assert [r.status_code for r in results] == [200] * 4
    async with ctx.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(User).where(User.username.like("carol%"))) == 1


@sqlite_only
async def test_a_deleted_account_is_made_afresh_at_the_next_sign_in(ctx, http):
    assert (await signin(http, "alice", pw("alice"))).status_code == 200
    async with ctx.db.write() as session:
        first = await accounts.require_user(session, "alice")
        first_uuid = first.uuid
        await accounts.delete_user(session, first)
    http.cookies.clear()
    assert (await signin(http, "alice", pw("alice"))).status_code == 200
    assert (await local_user(ctx, "alice")).uuid != first_uuid


@pytest.mark.parametrize(("uid", "expected"), [
    ("alice", ["alice", "alice1", "alice2"]),
    ("Frank.Mueller", ["frank.mueller", "frank.mueller1", "frank.mueller2"]),
    ("Émile O'Brien", ["emile_o_brien", "emile_o_brien1", "emile_o_brien2"]),
    ("--x__y..z--", ["x_y.z", "x_y.z1", "x_y.z2"]),
    ("a", ["a0", "a01", "a02"]),
    ("日本", ["user", "user1", "user2"]),
])
def test_usernames_from_directory_names(uid: str, expected: list[str]):
    import itertools

    names = list(itertools.islice(accounts.username_candidates(uid), 3))
    assert names == expected
    for name in names:
        accounts.validate_username(name)
