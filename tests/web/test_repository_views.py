"""Repository pages in-process: listing and creation, every tab's access rules, tag actions,
settings forms with CSRF, the manifest view, and a 10,000-tag repository staying fast."""

import json
import time

import pytest
from api.repohelpers import make_org, make_repo, push, push_index, repo_id
from protocol.v2client import V2Client, digest_of
from sqlalchemy import insert, select

from quaymaster.accounts import service as accounts
from quaymaster.content import quota as quotas
from quaymaster.content.models import Manifest, Tag
from quaymaster.db.base import now_ms
from quaymaster.oci import mediatypes as mt
from quaymaster.web.render import humansize, shortdigest
from web.conftest import browser_session

PAGES = ("", "?tab=info", "?tab=tags", "?tab=history", "/tags-table", "/history-table")
HX = {"HX-Request": "true"}
ADMIN_PAGES = ("?tab=logs", "?tab=settings")


@pytest.fixture
async def repos(ctx, http):
    """alice/private (with tag v1), alice/public (with tag v1)."""
    await make_repo(ctx, "alice/private", "private")
    await make_repo(ctx, "alice/public", "public")
    digests = {"private": await push(http, "alice/private", "v1", layers=2),
               "public": await push(http, "alice/public", "v1")}
    http.cookies.clear()
    return digests


def main_of(html: str) -> str:
    return html.split('<main id="main"', 1)[1].split("</main>", 1)[0]


# --- listing and creation ------------------------------------------------------------------------

async def test_list_shows_what_each_visitor_may_read(ctx, http, anon, repos):
    page = await anon.get("/repository/")
    assert "alice/public" in page.text and "alice/private" not in page.text
    await browser_session(http, "alice")
    page = await http.get("/repository/")
    assert "alice/public" in page.text and "alice/private" in page.text


async def test_list_live_filter_returns_a_fragment(ctx, http, repos):
    await browser_session(http, "alice")
    r = await http.get("/repository/?q=priv", headers={"HX-Request": "true", "HX-Target": "repo-results"})
    assert r.status_code == 200 and "<html" not in r.text
    assert "alice/private" in r.text and "alice/public" not in r.text
    r = await http.get("/repository/?q=zzz", headers={"HX-Request": "true", "HX-Target": "repo-results"})
    assert "No repositories match" in r.text


async def test_list_empty_state(ctx, http):
    page = await http.get("/repository/")
    assert "No repositories yet" in page.text


async def test_anonymous_access_off_requires_signin(ctx, http, repos):
    ctx.settings.FEATURE_ANONYMOUS_ACCESS = False
    r = await http.get("/repository/")
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")
    r = await http.get("/repository/alice/public")
    assert r.status_code == 303


async def test_create_repository(ctx, http, anon):
    r = await anon.post("/repository/", data={"name": "x"})
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")
    token = await browser_session(http, "alice")
    assert (await http.post("/repository/", data={"name": "new", "namespace": "alice"})).status_code == 403
    page = await http.get("/repository/")
    assert '<option value="alice"' in page.text
    r = await http.post("/repository/", data={"_csrf_token": token, "namespace": "alice", "name": "Bad Name",
                                              "visibility": "private"})
    assert r.status_code == 400 and "lowercase" in r.text
    r = await http.post("/repository/", data={"_csrf_token": token, "namespace": "alice", "name": "new",
                                              "visibility": "public", "description": "hi"})
    assert r.status_code == 303 and r.headers["location"] == "/repository/alice/new"
    r = await http.post("/repository/", data={"_csrf_token": token, "namespace": "alice", "name": "new",
                                              "visibility": "public"})
    assert r.status_code == 400 and "already exists" in r.text


async def test_create_only_in_namespaces_you_may_create_in(ctx, http):
    await make_org(ctx, "acme", owner="bob", teams={"readers": ("member", ["alice"])})
    await make_org(ctx, "builders", owner="bob", teams={"makers": ("creator", ["alice"])})
    token = await browser_session(http, "alice")
    page = await http.get("/repository/")
    assert '<option value="builders"' in page.text and '<option value="acme"' not in page.text
    for ns in ("bob", "acme"):
        r = await http.post("/repository/", data={"_csrf_token": token, "namespace": ns, "name": "sneaky",
                                                  "visibility": "private"})
        assert r.status_code == 400 and "may not create" in r.text, ns
    r = await http.post("/repository/", data={"_csrf_token": token, "namespace": "builders", "name": "tool",
                                              "visibility": "private"})
    assert r.status_code == 303


# --- access to a repository's pages --------------------------------------------------------------

async def test_private_repository_is_the_same_404_as_a_missing_one(ctx, http, anon, repos):
    await browser_session(anon, "bob")
    for suffix in (*PAGES, *ADMIN_PAGES, f"/manifest/{repos['private']}"):
        private = await anon.get(f"/repository/alice/private{suffix}", headers=HX)
        missing = await anon.get(f"/repository/alice/missing{suffix}", headers=HX)
        assert private.status_code == missing.status_code == 404, suffix
        assert main_of(private.text) == main_of(missing.text), suffix
        assert "private" not in main_of(private.text)
    http.cookies.clear()
    assert (await http.get("/repository/alice/private")).status_code == 404


async def test_reader_sees_public_tabs_but_not_admin_tabs(ctx, http, anon, repos):
    await browser_session(anon, "bob")
    for suffix in PAGES:
        assert (await anon.get(f"/repository/alice/public{suffix}", headers=HX)).status_code == 200, suffix
    for suffix in ADMIN_PAGES:
        assert (await anon.get(f"/repository/alice/public{suffix}")).status_code == 403, suffix
    tags = await anon.get("/repository/alice/public?tab=tags")
    assert "Delete tag" not in tags.text and "Usage logs" not in tags.text
    http.cookies.clear()
    assert (await http.get("/repository/alice/public?tab=tags")).status_code == 200
    assert (await http.get("/repository/alice/public?tab=settings")).status_code == 403


async def test_owner_sees_every_tab(ctx, http, repos):
    await browser_session(http, "alice")
    for suffix in (*PAGES, *ADMIN_PAGES):
        r = await http.get(f"/repository/alice/private{suffix}", headers=HX)
        assert r.status_code == 200, suffix
    info = await http.get("/repository/alice/private")
    assert "podman pull registry.test/alice/private:v1" in info.text


async def test_tags_tab_shows_size_digest_and_multi_arch(ctx, http, repos):
    index = await push_index(http, "alice/private", "multi", [repos["private"]])
    await browser_session(http, "alice")
    page = await http.get("/repository/alice/private?tab=tags")
    row = page.text.split('data-tag="v1"')[1].split("</tr>")[0]
    assert shortdigest(repos["private"]) in row and humansize(1024) in row
    multi = page.text.split('data-tag="multi"')[1].split("</tr>")[0]
    assert "multi-arch" in multi and shortdigest(index) in multi
    frag = await http.get("/repository/alice/private/tags-table?filter=mul", headers=HX)
    assert "<html" not in frag.text and 'data-tag="multi"' in frag.text and 'data-tag="v1"' not in frag.text
    direct = await http.get("/repository/alice/private/tags-table?filter=mul&sort=name")
    assert direct.status_code == 302
    assert direct.headers["location"] == "/repository/alice/private?tab=tags&filter=mul&sort=name"


async def test_manifest_page(ctx, http, anon, repos):
    index = await push_index(http, "alice/private", "multi", [repos["private"]])
    await browser_session(http, "alice")
    page = await http.get(f"/repository/alice/private/manifest/{repos['private']}")
    assert page.status_code == 200 and "Layers" in page.text and page.text.count(humansize(512)) >= 2
    page = await http.get(f"/repository/alice/private/manifest/{index}")
    assert "Platforms" in page.text and "linux/amd64" in page.text
    assert (await http.get("/repository/alice/private/manifest/sha256:" + "0" * 64)).status_code == 404
    assert (await anon.get(f"/repository/alice/public/manifest/{repos['public']}")).status_code == 200


async def test_manifest_page_lists_referrers(ctx, http, repos):
    client = V2Client(http)
    headers = await client.auth("alice/private")
    subject = (await http.get(f"/v2/alice/private/manifests/{repos['private']}",
                              headers={**headers, "Accept": mt.OCI_MANIFEST})).content
    empty = await client.upload("alice/private", b"{}", headers)
    sig = await client.upload("alice/private", b"signature-bytes", headers)
    body = json.dumps({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": {"mediaType": mt.OCI_EMPTY, "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sig, "size": 15}],
        "subject": {"mediaType": mt.OCI_MANIFEST, "digest": repos["private"], "size": len(subject)},
    }).encode()
    r = await http.put(f"/v2/alice/private/manifests/{digest_of(body)}", content=body,
                       headers={**headers, "Content-Type": mt.OCI_MANIFEST})
    assert r.status_code == 201, r.text
    http.cookies.clear()
    await browser_session(http, "alice")
    page = await http.get(f"/repository/alice/private/manifest/{repos['private']}")
    referrers = page.text.split('id="referrers-h"')[1]
    assert "Signature (cosign)" in referrers and shortdigest(digest_of(body)) in referrers
    artifact = await http.get(f"/repository/alice/private/manifest/{digest_of(body)}")
    assert artifact.status_code == 200 and "Refers to" in artifact.text


# --- tag actions ---------------------------------------------------------------------------------

async def test_delete_and_restore_tag(ctx, http, anon, repos):
    bob = await browser_session(anon, "bob")
    assert (await anon.post("/repository/alice/public/tag/v1/delete", data={"_csrf_token": bob})).status_code == 403
    assert (await anon.post("/repository/alice/private/tag/v1/delete", data={"_csrf_token": bob})).status_code == 404
    token = await browser_session(http, "alice")
    assert (await http.post("/repository/alice/private/tag/v1/delete", data={})).status_code == 403
    r = await http.post("/repository/alice/private/tag/v1/delete", data={"_csrf_token": token})
    assert r.status_code == 303
    tags = await http.get("/repository/alice/private?tab=tags")
    assert 'data-tag="v1"' not in tags.text and "Tag v1 deleted" in tags.text
    r = await http.post("/repository/alice/private/tag/v1/delete", data={"_csrf_token": token})
    assert r.status_code == 404 and "no tag v1" in r.text
    history = await http.get("/repository/alice/private?tab=history")
    assert "Restore" in history.text and "ended" in history.text
    r = await http.post("/repository/alice/private/tag/v1/restore",
                        data={"_csrf_token": token, "manifest_digest": repos["private"]})
    assert r.status_code == 303
    assert 'data-tag="v1"' in (await http.get("/repository/alice/private?tab=tags")).text
    r = await http.post("/repository/alice/private/tag/v1/restore",
                        data={"_csrf_token": token, "manifest_digest": "sha256:" + "1" * 64})
    assert r.status_code == 404 and "no longer restorable" in r.text


async def test_retarget_tag(ctx, http, repos):
    other = await push(http, "alice/private", "v2")
    http.cookies.clear()
    token = await browser_session(http, "alice")
    r = await http.post("/repository/alice/private/tag/v1/retarget",
                        data={"_csrf_token": token, "manifest_digest": other})
    assert r.status_code == 303
    row = (await http.get("/repository/alice/private?tab=tags")).text.split('data-tag="v1"')[1].split("</tr>")[0]
    assert shortdigest(other) in row
    r = await http.post("/repository/alice/private/tag", data={"_csrf_token": token, "tag": "-bad",
                                                               "manifest_digest": other})
    assert r.status_code == 400 and "not a valid tag name" in r.text
    r = await http.post("/repository/alice/private/tag", data={"_csrf_token": token, "tag": "new",
                                                               "manifest_digest": "sha256:" + "2" * 64})
    assert r.status_code == 404


async def test_read_only_repository_refuses_tag_changes_in_place(ctx, http, repos):
    token = await browser_session(http, "alice")
    assert (await http.post("/repository/alice/private/state",
                            data={"_csrf_token": token, "state": "READ_ONLY"})).status_code == 303
    r = await http.post("/repository/alice/private/tag/v1/delete", data={"_csrf_token": token})
    assert r.status_code == 409 and "read-only" in r.text
    assert "Delete tag" not in (await http.get("/repository/alice/private?tab=tags")).text


async def test_mirror_state_needs_mirroring_enabled(ctx, http, repos):
    token = await browser_session(http, "alice")
    settings = (await http.get("/repository/alice/private?tab=settings")).text
    assert 'value="READ_ONLY"' in settings and 'value="MIRROR"' not in settings
    r = await http.post("/repository/alice/private/state", data={"_csrf_token": token, "state": "MIRROR"})
    assert r.status_code == 400 and "FEATURE_REPO_MIRROR" in r.text


# --- settings ------------------------------------------------------------------------------------

SETTINGS_POSTS = {
    "visibility": {"visibility": "public"},
    "state": {"state": "READ_ONLY"},
    "permissions": {"kind": "user", "name": "bob", "role": "admin"},
    "permissions/remove": {"kind": "user", "name": "bob"},
    "delete": {"confirm_name": "public"},
    "description": {"description": "mine now"},
}


async def test_settings_posts_need_admin_and_csrf(ctx, http, anon, repos):
    bob = await browser_session(anon, "bob")
    for path, data in SETTINGS_POSTS.items():
        r = await anon.post(f"/repository/alice/public/{path}", data={**data, "_csrf_token": bob})
        assert r.status_code == 403, path  # a reader of a public repository
        r = await anon.post(f"/repository/alice/private/{path}", data={**data, "_csrf_token": bob})
        assert r.status_code == 404, path  # no access at all: as if missing
    await browser_session(http, "alice")
    for path, data in SETTINGS_POSTS.items():
        assert (await http.post(f"/repository/alice/public/{path}", data=data)).status_code == 403, path
    anon.cookies.clear()
    r = await anon.post("/repository/alice/public/visibility", data={"visibility": "private"})
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")


async def test_permissions_visibility_and_delete(ctx, http, anon, repos):
    token = await browser_session(http, "alice")
    base = "/repository/alice/private"
    r = await http.post(f"{base}/permissions", data={"_csrf_token": token, "kind": "user", "name": "nobody",
                                                     "role": "read"})
    assert r.status_code == 400 and "Invalid username" in r.text
    r = await http.post(f"{base}/permissions", data={"_csrf_token": token, "kind": "user", "name": "bob",
                                                     "role": "write"})
    assert r.status_code == 303
    settings = await http.get(f"{base}?tab=settings")
    assert "bob" in settings.text
    bob = await browser_session(anon, "bob")
    assert (await anon.get(base)).status_code == 200
    assert (await anon.post(f"{base}/tag/v1/delete", data={"_csrf_token": bob})).status_code == 303
    r = await http.post(f"{base}/permissions/remove", data={"_csrf_token": token, "kind": "user", "name": "bob"})
    assert r.status_code == 303
    assert (await anon.get(base)).status_code == 404

    r = await http.post(f"{base}/visibility", data={"_csrf_token": token, "visibility": "public"})
    assert r.status_code == 303
    assert (await anon.get(base)).status_code == 200
    r = await http.post(f"{base}/delete", data={"_csrf_token": token, "confirm_name": "wrong"})
    assert r.status_code == 400 and "to confirm" in r.text
    r = await http.post(f"{base}/delete", data={"_csrf_token": token, "confirm_name": "private"})
    assert r.status_code == 303 and r.headers["location"] == "/repository/"
    assert (await http.get(base)).status_code == 404


async def test_usage_logs_chart(ctx, http, repos):
    token = await browser_session(http, "alice")
    await http.post("/repository/alice/private/tag/v1/delete", data={"_csrf_token": token})
    page = await http.get("/repository/alice/private?tab=logs")
    assert page.status_code == 200
    assert '<svg class="chart"' in page.text and 'class="bar"' in page.text
    assert "delete tag" in page.text


async def test_ten_thousand_tags_page_fast(ctx, http):
    rid = await make_repo(ctx, "alice/big", "public")
    digest = await push(http, "alice/big", "seed")
    async with ctx.db.write() as session:
        manifest_id = await session.scalar(select(Manifest.id).where(Manifest.digest == digest))
        start = now_ms() - 10_000_000
        await session.execute(insert(Tag), [
            {"repository_id": rid, "name": f"t{i:05d}", "manifest_id": manifest_id, "lifetime_start_ms": start + i,
             "hidden": False, "reversion": False} for i in range(10_000)])
    assert rid == await repo_id(ctx, "alice/big")
    for query in ("sort=name&page=200&limit=50", "sort=recent&page=1", "sort=-name&page=150&limit=25&filter=t0",
                  "sort=oldest&page=400"):
        began = time.perf_counter()
        r = await http.get(f"/repository/alice/big/tags-table?{query}", headers=HX)
        elapsed = time.perf_counter() - began
        assert r.status_code == 200 and elapsed < 1.5, (query, elapsed)
        assert r.text.count("data-tag=") <= 100
    # "seed" sorts first, so the last page of 50 (the 201st) holds t09999 alone
    page = (await http.get("/repository/alice/big/tags-table?sort=name&page=201&limit=50", headers=HX)).text
    assert page.count("data-tag=") == 1 and 'data-tag="t09999"' in page and "Next" not in page


async def test_info_tab_shows_storage_quota_to_the_namespace_only(ctx, http, anon, repos, monkeypatch):
    await browser_session(http, "alice")
    async with ctx.db.read() as session:
        alice = await accounts.get_namespace(session, "alice")
        used = await quotas.repository_usage(session, await repo_id(ctx, "alice/private"))
        total = await quotas.namespace_usage(session, alice.id)
    assert 1024 < used < 2048 and total > used  # two 512-byte layers and a config; alice/public too
    page = await http.get("/repository/alice/private?tab=info")
    assert page.status_code == 200 and 'id="quota-h"' not in page.text  # the feature is off

    monkeypatch.setattr(ctx.settings, "FEATURE_QUOTA_MANAGEMENT", True)
    page = await http.get("/repository/alice/private")
    assert 'id="quota-h"' in page.text and "alice has no\n    storage quota" in page.text
    assert f"Used by this repository: <strong>{used / 1024:.1f} KiB</strong>" in page.text

    async with ctx.db.write() as session:
        quota = await quotas.create_quota(session, alice, 4 * total)
        await quotas.add_limit(session, quota, quotas.WARNING, 20)
        await quotas.add_limit(session, quota, quotas.REJECT, 90)
    page = await http.get("/repository/alice/private?tab=info")
    assert f"Used by this repository: <strong>{used / 1024:.1f} KiB</strong>" in page.text
    assert f"<strong>{total / 1024:.1f} KiB of " in page.text and "KiB (25%)</strong>" in page.text  # the namespace
    assert 'data-quota-level="warning"' in page.text and "flash flash-warning" in page.text

    async with ctx.db.write() as session:
        await quotas.set_limit_bytes(session, await quotas.get_quota(session, alice.id), total)
    page = await http.get("/repository/alice/private?tab=info")
    assert 'data-quota-level="error"' in page.text and "(100%)" in page.text and 'role="alert"' in page.text

    # a reader outside the namespace and anonymous visitors see the repository, not the quota
    assert 'id="quota-h"' not in (await anon.get("/repository/alice/public")).text
    await browser_session(anon, "bob")
    page = await anon.get("/repository/alice/public")
    assert page.status_code == 200 and 'id="quota-h"' not in page.text
