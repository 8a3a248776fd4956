"""Repositories under /api/v1: create, list (visibility, stars, paging), view, describe, visibility,
state, delete with the name freed at once, and stars."""

from sqlalchemy import select

from quaymaster.accounts import orgs, permissions
from quaymaster.accounts import service as users
from quaymaster.content.models import Repository, RepositoryState

from .helpers import assert_error, bearer, signin
from .repohelpers import (
    API,
    create_repo,
    log_kinds,
    make_org,
    make_repo,
    pull_status,
    push,
    registry_actions,
    repo_id,
)

REPO = f"{API}/repository"


async def test_create_and_view_a_repository(http, ctx):
    csrf = await signin(http, "alice")
    r = await create_repo(http, csrf, "web")
    assert r.status_code == 201 and r.json() == {"namespace": "alice", "name": "web", "kind": "image"}
    r = await http.get(f"{REPO}/alice/web")
    assert r.status_code == 200
    view = r.json()
    assert view == {
        "namespace": "alice", "name": "web", "kind": "image", "description": "", "is_public": False,
        "is_organization": False, "is_starred": False, "status_token": "", "trust_enabled": False,
        "tag_expiration_s": 1209600, "is_free_account": True, "state": "NORMAL", "can_write": True,
        "can_admin": True, "tags": {}}
    assert await log_kinds(ctx, await repo_id(ctx, "alice/web")) == ["create_repo"]


async def test_create_errors(http, ctx):
    assert_error(await create_repo(http, {}, "web"), 401)
    csrf = await signin(http, "alice")
    assert (await create_repo(http, csrf, "web")).status_code == 201
    body = assert_error(await create_repo(http, csrf, "web"), 400)
    assert body["error_message"] == "Repository already exists"
    assert_error(await create_repo(http, csrf, "Bad Name"), 400)
    assert_error(await create_repo(http, csrf, "-dash"), 400)
    assert_error(await http.post(REPO, json={"repository": "x", "visibility": "secret"}, headers=csrf), 400)
    assert_error(await create_repo(http, csrf, "web", namespace="bob"), 403)
    assert_error(await create_repo(http, csrf, "web", namespace="nobody"), 404)


async def test_create_needs_the_repo_create_scope(http, ctx):
    assert_error(await create_repo(http, await bearer(ctx, "alice", "repo:read repo:write"), "web"), 403)
    r = await create_repo(http, await bearer(ctx, "alice", "repo:create"), "web", visibility="public")
    assert r.status_code == 201
    assert (await http.get(f"{REPO}/alice/web")).json()["is_public"] is True


async def test_organization_repositories_get_default_permissions(http, ctx):
    await make_org(ctx, "acme")
    async with ctx.db.write() as session:
        org = await orgs.get_org(session, "acme")
        await orgs.create_prototype(session, org, "read", delegate_user=await users.get_user(session, "bob"))
    r = await create_repo(http, await signin(http, "alice"), "svc", namespace="acme")
    assert r.status_code == 201
    view = (await http.get(f"{REPO}/acme/svc")).json()
    assert view["is_organization"] is True and view["can_admin"] is True
    assert await registry_actions(http, "bob", "acme/svc") == ["pull"]
    await signin(http, "bob")
    view = (await http.get(f"{REPO}/acme/svc")).json()
    assert view["can_write"] is False and view["can_admin"] is False


async def test_private_repository_looks_missing_to_others(http, ctx):
    await make_repo(ctx, "alice/secret")
    anonymous = assert_error(await http.get(f"{REPO}/alice/secret"), 404)
    await signin(http, "bob")
    hidden = assert_error(await http.get(f"{REPO}/alice/secret"), 404)
    missing = assert_error(await http.get(f"{REPO}/alice/nope"), 404)
    assert hidden == anonymous
    assert {k: v for k, v in hidden.items() if k not in ("error_message", "detail")} == \
        {k: v for k, v in missing.items() if k not in ("error_message", "detail")}
    assert hidden["error_message"].replace("secret", "nope") == missing["error_message"]
    # Writes to it look the same: a 404, never a 403 that would confirm it exists.
    csrf = await signin(http, "bob")
    assert_error(await http.put(f"{REPO}/alice/secret", json={"description": "x"}, headers=csrf), 404)
    assert_error(await http.delete(f"{REPO}/alice/secret", headers=csrf), 404)


async def test_description_visibility_and_state(http, ctx):
    rid = await make_repo(ctx, "alice/web")
    csrf = await signin(http, "alice")
    r = await http.put(f"{REPO}/alice/web", json={"description": "Our web image"}, headers=csrf)
    assert r.status_code == 200 and r.json() == {"success": True}
    r = await http.post(f"{REPO}/alice/web/changevisibility", json={"visibility": "public"}, headers=csrf)
    assert r.status_code == 200
    r = await http.put(f"{REPO}/alice/web/changestate", json={"state": "READ_ONLY"}, headers=csrf)
    assert r.status_code == 200
    view = (await http.get(f"{REPO}/alice/web")).json()
    assert view["description"] == "Our web image" and view["is_public"] is True
    assert view["state"] == "READ_ONLY" and view["can_write"] is False and view["can_admin"] is True
    assert_error(await http.put(f"{REPO}/alice/web/changestate", json={"state": "BROKEN"}, headers=csrf), 400)
    # As in Quay, only a registry with FEATURE_REPO_MIRROR lets a repository become a mirror.
    refused = await http.put(f"{REPO}/alice/web/changestate", json={"state": "MIRROR"}, headers=csrf)
    assert_error(refused, 400)
    assert "FEATURE_REPO_MIRROR" in refused.json()["error_message"]
    assert_error(await http.post(f"{REPO}/alice/web/changevisibility", json={"visibility": "x"}, headers=csrf), 400)
    assert await log_kinds(ctx, rid) == ["set_repo_description", "change_repo_visibility", "change_repo_state"]
    # Public now: anyone reads it, nobody else changes it.
    http.cookies.clear()
    assert (await http.get(f"{REPO}/alice/web")).json()["can_write"] is False
    assert_error(await http.put(f"{REPO}/alice/web", json={"description": "x"}), 401)
    csrf = await signin(http, "bob")
    assert_error(await http.put(f"{REPO}/alice/web", json={"description": "x"}, headers=csrf), 403)
    assert_error(await http.post(f"{REPO}/alice/web/changevisibility", json={"visibility": "private"},
                                 headers=csrf), 403)


async def test_settings_need_admin_and_description_needs_write(http, ctx):
    rid = await make_repo(ctx, "alice/web")
    async with ctx.db.write() as session:
        await permissions.set_permission(session, rid, "write", user=await users.get_user(session, "bob"))
    csrf = await signin(http, "bob")
    assert (await http.put(f"{REPO}/alice/web", json={"description": "by bob"}, headers=csrf)).status_code == 200
    assert_error(await http.put(f"{REPO}/alice/web/changestate", json={"state": "READ_ONLY"}, headers=csrf), 403)
    assert_error(await http.delete(f"{REPO}/alice/web", headers=csrf), 403)
    # A token capped at repo:read cannot write, even for the owner.
    token = await bearer(ctx, "alice", "repo:read")
    assert (await http.get(f"{REPO}/alice/web", headers=token)).json()["can_admin"] is False
    assert_error(await http.put(f"{REPO}/alice/web", json={"description": "x"}, headers=token), 403)
    token = await bearer(ctx, "alice", "repo:write")
    assert_error(await http.delete(f"{REPO}/alice/web", headers=token), 403)


async def test_delete_frees_the_name_and_a_push_recreates_it(http, ctx):
    await push(http, "alice/app", "v1")
    old_id = await repo_id(ctx, "alice/app")
    csrf = await signin(http, "alice")
    assert (await http.delete(f"{REPO}/alice/app", headers=csrf)).status_code == 204
    assert_error(await http.get(f"{REPO}/alice/app"), 404)
    assert await pull_status(http, "alice/app", "v1") == 404
    async with ctx.db.read() as session:
        old = await session.get(Repository, old_id)
        assert old.state == RepositoryState.MARKED_FOR_DELETION and old.name != "app" and len(old.name) == 36
    assert (await log_kinds(ctx, old_id))[-1] == "delete_repo"
    # The name is free at once: a push makes a fresh, empty repository...
    await push(http, "alice/app", "v2")
    assert await repo_id(ctx, "alice/app") != old_id
    tags = (await http.get(f"{REPO}/alice/app/tag/")).json()["tags"]
    assert [t["name"] for t in tags] == ["v2"]
    # ...and so does the API after another delete.
    assert (await http.delete(f"{REPO}/alice/app", headers=csrf)).status_code == 204
    assert (await create_repo(http, csrf, "app")).status_code == 201
    assert (await http.get(f"{REPO}/alice/app/tag/")).json()["tags"] == []
    async with ctx.db.read() as session:
        hidden = (await session.scalars(select(Repository).where(
            Repository.state == RepositoryState.MARKED_FOR_DELETION))).all()
    assert len(hidden) == 2


async def test_listing_shows_only_what_the_caller_may_read(http, ctx):
    await make_repo(ctx, "alice/private1")
    await make_repo(ctx, "alice/public1", "public")
    bobs = await make_repo(ctx, "bob/mine")
    assert_error(await http.get(REPO), 400)

    def names(r):
        assert r.status_code == 200, r.text
        return sorted(f"{x['namespace']}/{x['name']}" for x in r.json()["repositories"])

    assert names(await http.get(REPO, params={"public": "true"})) == ["alice/public1"]
    assert names(await http.get(REPO, params={"namespace": "alice"})) == []
    assert_error(await http.get(REPO, params={"starred": "true"}), 400)
    await signin(http, "alice")
    r = await http.get(REPO, params={"namespace": "alice"})
    assert names(r) == ["alice/private1", "alice/public1"]
    first = r.json()["repositories"][0]
    assert set(first) == {"namespace", "name", "description", "is_public", "kind", "state", "is_starred"}
    assert names(await http.get(REPO, params={"namespace": "bob"})) == []
    # public=true adds public repositories to the caller's own.
    assert names(await http.get(REPO, params={"public": "true"})) == ["alice/private1", "alice/public1"]
    async with ctx.db.write() as session:
        await permissions.set_permission(session, bobs, "read", user=await users.get_user(session, "alice"))
    assert names(await http.get(REPO, params={"namespace": "bob"})) == ["bob/mine"]
    # A token without any repo scope sees nothing private.
    assert_error(await http.get(REPO, params={"namespace": "alice"}, headers=await bearer(ctx, "alice", "user:read")),
                 403)


async def test_listing_extras_and_paging(http, ctx):
    await push(http, "alice/pushed", "v1")
    for i in range(102):
        await make_repo(ctx, f"alice/r{i:03d}")
    await signin(http, "alice")
    r = await http.get(REPO, params={"namespace": "alice", "last_modified": "true", "popularity": "true"})
    body = r.json()
    assert len(body["repositories"]) == 100 and body["next_page"]
    pushed = body["repositories"][0]
    assert pushed["name"] == "pushed" and isinstance(pushed["last_modified"], int) and pushed["popularity"] == 0.0
    assert body["repositories"][1]["last_modified"] is None
    r = await http.get(REPO, params={"namespace": "alice", "next_page": body["next_page"]})
    rest = r.json()
    assert [x["name"] for x in rest["repositories"]] == ["r099", "r100", "r101"] and "next_page" not in rest
    assert_error(await http.get(REPO, params={"namespace": "alice", "next_page": "forged"}), 400)


async def test_stars(http, ctx):
    await make_repo(ctx, "alice/web")
    await make_repo(ctx, "bob/hidden")
    await make_repo(ctx, "bob/open", "public")
    assert_error(await http.get(f"{API}/user/starred"), 401)
    csrf = await signin(http, "alice")
    for repo in ("web", "web"):
        r = await http.post(f"{API}/user/starred", json={"namespace": "alice", "repository": repo}, headers=csrf)
        assert r.status_code == 201 and r.json() == {"namespace": "alice", "repository": "web"}
    r = await http.post(f"{API}/user/starred", json={"namespace": "bob", "repository": "open"}, headers=csrf)
    assert r.status_code == 201
    assert_error(await http.post(f"{API}/user/starred", json={"namespace": "bob", "repository": "hidden"},
                                 headers=csrf), 404)
    starred = (await http.get(f"{API}/user/starred")).json()["repositories"]
    assert [(s["namespace"], s["name"], s["is_public"]) for s in starred] == [("alice", "web", False),
                                                                              ("bob", "open", True)]
    r = await http.get(REPO, params={"starred": "true"})
    assert [x["name"] for x in r.json()["repositories"]] == ["web", "open"]
    assert all(x["is_starred"] for x in r.json()["repositories"])
    assert (await http.get(f"{REPO}/alice/web")).json()["is_starred"] is True
    assert (await http.delete(f"{API}/user/starred/alice/web", headers=csrf)).status_code == 204
    assert (await http.get(f"{REPO}/alice/web")).json()["is_starred"] is False
    assert [s["name"] for s in (await http.get(f"{API}/user/starred")).json()["repositories"]] == ["open"]
    assert_error(await http.delete(f"{API}/user/starred/bob/hidden", headers=csrf), 404)
    # Starring needs the user:admin scope, as in Quay.
    assert_error(await http.get(f"{API}/user/starred", headers=await bearer(ctx, "alice", "repo:read")), 403)
