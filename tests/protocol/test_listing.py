"""Tag listing and the catalog with n/last pagination; action logs of pushes and pulls."""

from quaymaster.auditlog.service import entries
from quaymaster.oci import mediatypes as mt

from .v2client import error_code

REPO = "alice/tags"


async def test_tags_list_paginates_with_link(client):
    headers = await client.auth(REPO)
    _, raw = await client.push_image(REPO, "t0", headers)
    names = ["t0"] + [f"t{i}" for i in range(1, 7)]
    for name in names[1:]:
        r = await client.http.put(f"/v2/{REPO}/manifests/{name}", content=raw,
                                  headers={**headers, "Content-Type": mt.OCI_MANIFEST})
        assert r.status_code == 201
    r = await client.http.get(f"/v2/{REPO}/tags/list", headers=headers)
    assert r.json() == {"name": REPO, "tags": sorted(names)}
    assert "Link" not in r.headers
    seen, url = [], f"/v2/{REPO}/tags/list?n=3"
    while url:
        r = await client.http.get(url, headers=headers)
        page = r.json()["tags"]
        assert len(page) <= 3
        seen += page
        link = r.headers.get("Link")
        url = link[1:link.index(">")] if link else None
    assert seen == sorted(names)
    r = await client.http.get(f"/v2/{REPO}/tags/list", params={"n": 0}, headers=headers)
    assert r.json()["tags"] == []
    r = await client.http.get(f"/v2/{REPO}/tags/list", params={"n": "-1"}, headers=headers)
    assert r.status_code == 400
    r = await client.http.get(f"/v2/{REPO}/tags/list", params={"last": "t4"}, headers=headers)
    assert r.json()["tags"] == ["t5", "t6"]


async def test_hidden_tags_never_listed(client):
    headers = await client.auth(REPO)
    await client.push_image(REPO, None, headers)  # pushed by digest: held by a hidden tag
    r = await client.http.get(f"/v2/{REPO}/tags/list", headers=headers)
    assert r.json()["tags"] == []


async def test_catalog_shows_only_what_the_caller_may_see(client):
    for repo in ("alice/a1", "alice/a2", "alice/a3"):
        await client.push_image(repo, "v1", await client.auth(repo))
    await client.push_image("bob/b1", "v1", await client.auth("bob/b1", user="bob"))
    token = await client.token("registry:catalog:*")
    auth = {"Authorization": f"Bearer {token}"}
    r = await client.http.get("/v2/_catalog", headers=auth)
    assert r.json() == {"repositories": ["alice/a1", "alice/a2", "alice/a3"]}
    r = await client.http.get("/v2/_catalog", params={"n": 2}, headers=auth)
    assert r.json()["repositories"] == ["alice/a1", "alice/a2"]
    assert r.headers["Link"] == '</v2/_catalog?n=2&last=alice%2Fa2>; rel="next"'
    r = await client.http.get("/v2/_catalog", params={"n": 2, "last": "alice/a2"}, headers=auth)
    assert r.json()["repositories"] == ["alice/a3"]
    r = await client.http.get("/v2/_catalog")
    assert r.json() == {"repositories": []}


async def test_push_pull_and_login_are_logged(client, ctx):
    r = await client.http.get("/v2/auth", params={"service": "registry.test"}, auth=("alice", "alice-password"))
    assert r.status_code == 200
    headers = await client.auth(REPO)
    digest, _ = await client.push_image(REPO, "v1", headers)
    await client.http.get(f"/v2/{REPO}/manifests/v1", headers=headers)
    await ctx.audit.flush()
    async with ctx.db.read() as session:
        logged = await entries(session)
    kinds = [e.kind for e in logged]
    for kind in ("login_success", "create_repo", "push_repo", "pull_repo"):
        assert kind in kinds, kinds
    push = next(e for e in logged if e.kind == "push_repo")
    assert push.metadata_json["tag"] == "v1" and push.metadata_json["manifest_digest"] == digest
    assert push.performer_id is not None and push.repository_id is not None


async def test_unknown_routes_are_404(client):
    headers = await client.auth(REPO)
    r = await client.http.get(f"/v2/{REPO}/nothing-here", headers=headers)
    assert r.status_code == 404
    r = await client.http.get(f"/v2/{REPO}/tags/list", params={"n": "abc"}, headers=headers)
    assert r.status_code == 400 and error_code(r) == "PAGINATION_NUMBER_INVALID"
