"""Repository search never shows what the caller may not read; the entity picker stays in scope."""

from quaymaster.accounts import orgs, permissions, robots
from quaymaster.accounts import service as accounts
from quaymaster.content import service as content

from .helpers import assert_error, bearer


async def make_repo(ctx, owner: str, name: str, visibility: str = "private", description: str | None = None) -> int:
    async with ctx.db.write() as session:
        ns = await accounts.get_namespace(session, owner)
        return (await content.create_repository(session, ns, name, visibility, description)).id


async def found(http, query: str, headers: dict | None = None, **params) -> list[str]:
    r = await http.get("/api/v1/find/repositories", params={"query": query, **params}, headers=headers or {})
    assert r.status_code == 200, r.text
    return sorted(f"{hit['namespace']['name']}/{hit['name']}" for hit in r.json()["results"])


async def test_private_repositories_of_others_stay_hidden(http, ctx):
    await make_repo(ctx, "alice", "secret-app")
    await make_repo(ctx, "alice", "public-app", "public", "the app everyone pulls")
    await make_repo(ctx, "bob", "hidden-app")
    as_alice, as_bob = await bearer(ctx, "alice"), await bearer(ctx, "bob")
    assert await found(http, "app", as_bob) == ["alice/public-app", "bob/hidden-app"]
    assert await found(http, "app", as_alice) == ["alice/public-app", "alice/secret-app"]
    assert await found(http, "app") == ["alice/public-app"]
    # A token without any repository scope finds only what everyone may read.
    assert await found(http, "app", await bearer(ctx, "bob", "user:read")) == ["alice/public-app"]
    assert await found(http, "everyone pulls", as_bob) == ["alice/public-app"]  # descriptions match too
    assert await found(http, "alice/", as_bob) == ["alice/public-app"]  # ns/name narrows to a namespace

    r = await http.get("/api/v1/find/repositories", params={"query": "public"})
    body = r.json()
    assert body["page"] == 1 and body["page_size"] == 10 and body["start_index"] == 0
    assert body["has_additional"] is False
    [hit] = body["results"]
    assert hit["kind"] == "repository" and hit["is_public"] is True and hit["stars"] == 0
    assert hit["description"] == "the app everyone pulls" and hit["href"] == "/repository/alice/public-app"
    assert hit["namespace"]["name"] == "alice" and hit["namespace"]["kind"] == "user"
    assert "avatar" in hit["namespace"] and isinstance(hit["score"], (int, float))


async def test_granted_repositories_are_found(http, ctx):
    direct = await make_repo(ctx, "alice", "granted")
    async with ctx.db.write() as session:
        alice = await accounts.get_user(session, "alice")
        bob = await accounts.get_user(session, "bob")
        await permissions.set_permission(session, direct, "read", user=bob)
        org = await orgs.create_org(session, "acme", None, alice)
        team, _ = await orgs.upsert_team(session, org, "readers", "member")
        await orgs.add_team_member(session, org, team, bob)
    by_team = await make_repo(ctx, "acme", "team-granted")
    await make_repo(ctx, "acme", "org-only")
    async with ctx.db.write() as session:
        team = await orgs.get_team(session, await orgs.get_org(session, "acme"), "readers")
        await permissions.set_permission(session, by_team, "read", team=team)
    as_bob = await bearer(ctx, "bob")
    assert await found(http, "", as_bob) == ["acme/team-granted", "alice/granted"]
    # Admins of an organization see all of its repositories.
    async with ctx.db.write() as session:
        org = await orgs.get_org(session, "acme")
        owners = await orgs.get_team(session, org, "owners")
        await orgs.add_team_member(session, org, owners, await accounts.get_user(session, "bob"))
    assert await found(http, "acme/", as_bob) == ["acme/org-only", "acme/team-granted"]


async def test_pages_of_ten_up_to_ten_pages(http, ctx):
    for i in range(25):
        await make_repo(ctx, "alice", f"lib-{i:02d}", "public")

    async def page(n) -> dict:
        return (await http.get("/api/v1/find/repositories", params={"query": "lib", "page": n})).json()

    first, third = await page(1), await page(3)
    assert len(first["results"]) == 10 and first["has_additional"] is True
    assert len(third["results"]) == 5 and third["has_additional"] is False and third["start_index"] == 20
    names = {r["name"] for p in (first, await page(2), third) for r in p["results"]}
    assert len(names) == 25
    assert (await page(0))["page"] == 1 and (await page(99))["page"] == 10
    assert_error(await http.get("/api/v1/find/repositories", params={"page": "two"}), 400)


async def test_anonymous_search_follows_anonymous_access(http, ctx, monkeypatch):
    await make_repo(ctx, "alice", "open", "public")
    monkeypatch.setattr(ctx.settings, "FEATURE_ANONYMOUS_ACCESS", False)
    assert await found(http, "open") == []
    assert await found(http, "open", await bearer(ctx, "bob")) == ["alice/open"]


async def test_entities_match_users_by_prefix(http, ctx):
    async with ctx.db.write() as session:
        await accounts.create_user(session, "bobby", "bobby@example.com", "bobby-password")
        gone = await accounts.create_user(session, "bobsleigh", None, "bobsleigh-password")
        await accounts.set_enabled(session, gone, False)
    assert_error(await http.get("/api/v1/entities/bo"), 401)
    r = await http.get("/api/v1/entities/BO", headers=await bearer(ctx, "alice"))
    assert r.status_code == 200
    results = r.json()["results"]
    assert [e["name"] for e in results] == ["bob", "bobby"]  # disabled accounts are left out
    assert results[0] == {"name": "bob", "kind": "user", "is_robot": False, "avatar": {"name": "bob", "kind": "user"}}


async def test_robots_only_of_the_given_namespace_and_only_for_its_owner(http, ctx):
    async with ctx.db.write() as session:
        alice = await accounts.get_user(session, "alice")
        await robots.create_robot(session, ctx.cipher, alice, "builder")
    as_alice, as_bob = await bearer(ctx, "alice"), await bearer(ctx, "bob")

    async def names(prefix, headers, **params):
        r = await http.get(f"/api/v1/entities/{prefix}", params=params, headers=headers)
        assert r.status_code == 200, r.text
        return [(e["name"], e.get("is_robot")) for e in r.json()["results"]]

    assert await names("build", as_alice, namespace="alice") == [("alice+builder", True)]
    assert await names("alice+bu", as_alice, namespace="alice") == [("alice+builder", True)]
    assert await names("build", as_alice) == []
    assert await names("build", as_bob, namespace="alice") == []


async def test_teams_only_of_the_given_org_and_only_for_its_members(http, ctx):
    async with ctx.db.write() as session:
        alice = await accounts.get_user(session, "alice")
        org = await orgs.create_org(session, "acme", None, alice)
        await orgs.upsert_team(session, org, "deployers", "member")
        await robots.create_robot(session, ctx.cipher, org, "deploybot")
        other = await orgs.create_org(session, "other", None, alice)
        await orgs.upsert_team(session, other, "devs", "member")
    params = {"namespace": "acme", "includeTeams": "true", "includeOrgs": "true"}
    r = await http.get("/api/v1/entities/d", params=params, headers=await bearer(ctx, "alice"))
    results = r.json()["results"]
    assert [(e["name"], e["kind"]) for e in results] == [("deployers", "team"), ("acme+deploybot", "user")]
    assert all(e["is_org_member"] for e in results)
    r = await http.get("/api/v1/entities/a", params=params, headers=await bearer(ctx, "alice"))
    assert [(e["name"], e["kind"], e.get("is_org_member")) for e in r.json()["results"]] == [
        ("alice", "user", True), ("acme", "org", True)]
    r = await http.get("/api/v1/entities/b", params=params, headers=await bearer(ctx, "alice"))
    assert [(e["name"], e["is_org_member"]) for e in r.json()["results"]] == [("bob", False)]
    # bob is no member: no teams, no robots, no org entry, no membership hints.
    r = await http.get("/api/v1/entities/d", params=params, headers=await bearer(ctx, "bob"))
    assert r.json()["results"] == []
    r = await http.get("/api/v1/entities/a", params=params, headers=await bearer(ctx, "bob"))
    assert r.json()["results"] == [{"name": "alice", "kind": "user", "is_robot": False,
                                    "avatar": {"name": "alice", "kind": "user"}}]
