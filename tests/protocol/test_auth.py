"""Docker token auth: the /v2/ challenge, /v2/auth grants, and bearer checks on /v2 routes."""

import jwt
import pytest

from quaymaster.content import service as content

from .v2client import HOST, error_code


async def test_ping_challenges_then_accepts_a_token(client):
    r = await client.http.get("/v2/")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == f'Bearer realm="http://{HOST}/v2/auth",service="{HOST}"'
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert error_code(r) == "UNAUTHORIZED"
    token = await client.token(None)
    r = await client.http.get("/v2/", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200


async def test_basic_auth_is_not_accepted_on_v2_routes(client):
    r = await client.http.get("/v2/", auth=("alice", "alice-password"))
    assert r.status_code == 401


async def test_wrong_password_is_401_and_logged(client, ctx):
    r = await client.http.get("/v2/auth", params={"service": HOST}, auth=("alice", "nope"))
    assert r.status_code == 401
    assert error_code(r) == "UNAUTHORIZED"
    r = await client.http.get("/v2/auth", params={"service": HOST}, auth=("ghost", "whatever1"))
    assert r.status_code == 401
    await ctx.audit.flush()
    from quaymaster.auditlog.service import entries

    async with ctx.db.read() as session:
        kinds = [e.kind for e in await entries(session)]
    assert kinds.count("login_failure") == 2


async def test_anonymous_without_scope_is_refused(client):
    r = await client.http.get("/v2/auth", params={"service": HOST})
    assert r.status_code == 401


async def test_token_claims_and_push_creates_private_repo(client, ctx):
    token = await client.token("repository:alice/new:pull,push")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "quay" and claims["aud"] == HOST and claims["sub"] == "alice"
    assert claims["access"] == [{"type": "repository", "name": "alice/new", "actions": ["pull", "push"]}]
    assert jwt.get_unverified_header(token)["kid"] == ctx.keys.kid
    async with ctx.db.read() as session:
        repo = await content.get_repository(session, "alice", "new")
    assert repo is not None and repo.visibility == "private"


async def test_no_grants_in_someone_elses_namespace(client, ctx):
    await client.token("repository:alice/mine:pull,push")
    token = await client.token("repository:alice/mine:pull,push", user="bob")
    assert jwt.decode(token, options={"verify_signature": False})["access"][0]["actions"] == []
    token = await client.token("repository:alice/other:pull,push", user="bob")
    assert jwt.decode(token, options={"verify_signature": False})["access"][0]["actions"] == []
    async with ctx.db.read() as session:
        assert await content.get_repository(session, "alice", "other") is None


async def test_private_repo_is_indistinguishable_from_a_missing_one(client):
    headers = await client.auth("alice/secret")
    await client.push_image("alice/secret", "v1", headers)
    bob = await client.auth("alice/secret", "pull", user="bob")
    hidden = await client.http.get("/v2/alice/secret/manifests/v1", headers=bob)
    bob_missing = await client.auth("alice/nothing", "pull", user="bob")
    missing = await client.http.get("/v2/alice/nothing/manifests/v1", headers=bob_missing)
    assert hidden.status_code == missing.status_code == 401
    assert hidden.json() == missing.json()
    assert 'scope="repository:alice/secret:pull"' in hidden.headers["WWW-Authenticate"]


async def test_public_repo_pulls_anonymously(client, ctx):
    headers = await client.auth("alice/open")
    digest, raw = await client.push_image("alice/open", "v1", headers)
    async with ctx.db.write() as session:
        from sqlalchemy import update

        from quaymaster.content.models import Repository

        await session.execute(update(Repository).where(Repository.name == "open").values(visibility="public"))
    anon = await client.auth("alice/open", "pull", user=None)
    r = await client.http.get("/v2/alice/open/manifests/v1", headers=anon)
    assert r.status_code == 200 and r.content == raw
    anon_push = await client.auth("alice/open", "pull,push", user=None)
    r = await client.http.post("/v2/alice/open/blobs/uploads/", headers=anon_push)
    assert r.status_code == 401


async def test_forged_and_foreign_tokens_are_rejected(client, ctx):
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"iss": "quay", "aud": HOST, "sub": "alice", "access": []}, key, algorithm="RS256",
                        headers={"kid": ctx.keys.kid})
    r = await client.http.get("/v2/", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401
    r = await client.http.get("/v2/", headers={"Authorization": "Bearer not.a.jwt"})
    assert r.status_code == 401


async def test_read_only_repository_refuses_pushes_with_403(client, ctx):
    headers = await client.auth("alice/frozen")
    await client.push_image("alice/frozen", "v1", headers)
    from sqlalchemy import update

    from quaymaster.content.models import Repository, RepositoryState

    async with ctx.db.write() as session:
        await session.execute(update(Repository).where(Repository.name == "frozen")
                              .values(state=RepositoryState.READ_ONLY))
    r = await client.http.post("/v2/alice/frozen/blobs/uploads/", headers=headers)
    assert r.status_code == 403 and error_code(r) == "DENIED"
    assert "read-only" in r.json()["errors"][0]["message"]
    r = await client.http.get("/v2/alice/frozen/manifests/v1", headers=headers)
    assert r.status_code == 200


async def test_admin_scope_implies_pull_and_push(client):
    headers = await client.auth("alice/adm")
    digest, _ = await client.push_image("alice/adm", "v1", headers)
    star = await client.auth("alice/adm", "*")
    r = await client.http.get("/v2/alice/adm/manifests/v1", headers=star)
    assert r.status_code == 200
    r = await client.http.delete(f"/v2/alice/adm/manifests/{digest}", headers=star)
    assert r.status_code == 202


async def test_owner_gets_name_unknown_for_a_missing_repository(client):
    headers = await client.auth("alice/notyet", "pull")
    r = await client.http.get("/v2/alice/notyet/tags/list", headers=headers)
    assert r.status_code == 404 and error_code(r) == "NAME_UNKNOWN"


async def test_concurrent_push_tokens_create_the_repository_once(client, ctx):
    import asyncio

    tokens = await asyncio.gather(*[client.token("repository:alice/race:pull,push") for _ in range(8)])
    for token in tokens:
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["access"][0]["actions"] == ["pull", "push"]


class TestCreateNamespaceOnPush:
    @pytest.fixture
    def config(self, config):
        return {**config, "CREATE_NAMESPACE_ON_PUSH": True}

    async def test_push_to_a_missing_namespace_creates_an_org(self, client, ctx):
        headers = await client.auth("newteam/app")
        await client.push_image("newteam/app", "v1", headers)
        from quaymaster.accounts import orgs, permissions
        from quaymaster.accounts import service as users
        from quaymaster.accounts.service import Identity

        async with ctx.db.read() as session:
            org = await orgs.get_org(session, "newteam")
            alice = Identity(user_id=(await users.get_user(session, "alice")).id, username="alice")
            assert org is not None and await permissions.is_org_admin(session, alice, org)
        bob = await client.auth("newteam/app", user="bob")
        r = await client.http.get("/v2/newteam/app/manifests/v1", headers=bob)
        assert r.status_code == 401


async def test_no_namespace_is_created_by_default(client, ctx):
    token = await client.token("repository:ghostns/app:pull,push")
    assert jwt.decode(token, options={"verify_signature": False})["access"][0]["actions"] == []
