"""Storage quotas: the /api/v1 quota resources, usage in the organization and repository views,
and enforcement on push (Warning logs once per crossing, Reject refuses with 403 DENIED and
leaves nothing behind), on SQLite and PostgreSQL.

alice is the superuser; bob owns the organization acme; carol is a plain member of it; dave is
an outsider."""

import json
import os

import pytest
from protocol.v2client import V2Client, digest_of, error_code
from sqlalchemy import text, update
from sqlalchemy.dialects import sqlite

from quaymaster.accounts import service as accounts
from quaymaster.content import gc, quota
from quaymaster.content import service as content
from quaymaster.content.models import Tag, UploadedBlob
from quaymaster.db.base import now_ms, utcnow
from quaymaster.oci import mediatypes as mt

from .helpers import assert_error, bearer
from .repohelpers import log_entries, log_kinds, make_org, make_repo, set_window

API = "/api/v1"
QUOTA = f"{API}/organization/acme/quota"
LIMIT = 20_000  # bytes: Warning at 50% (10 000), Reject at 100%


@pytest.fixture
def config(config):
    return {**config, "SUPER_USERS": ["alice"], "FEATURE_QUOTA_MANAGEMENT": True}


@pytest.fixture
async def acme(ctx):
    async with ctx.db.write() as session:
        for name in ("carol", "dave"):
            await accounts.create_user(session, name, f"{name}@example.com", f"{name}-password")
    await make_org(ctx, "acme", owner="bob", teams={"readers": ("member", ["carol"])})
    await make_repo(ctx, "acme/app")
    await make_repo(ctx, "acme/other")


@pytest.fixture
async def su(ctx) -> dict:
    return await bearer(ctx, "alice")


@pytest.fixture
async def bob(ctx) -> dict:
    return await bearer(ctx, "bob")


async def set_quota(http, su, limit_bytes: int = LIMIT, limits=(("Warning", 50), ("Reject", 100)),
                    path: str = QUOTA) -> int:
    r = await http.post(path, json={"limit_bytes": limit_bytes}, headers=su)
    assert r.status_code == 201, r.text
    r = await http.get(path, headers=su)
    quota_id = r.json()[0]["id"]
    for kind, percent in limits:
        r = await http.post(f"{QUOTA}/{quota_id}/limit", json={"type": kind, "threshold_percent": percent},
                            headers=su)
        assert r.status_code == 201, r.text
    return quota_id


class Image:
    """An OCI image pushed blob by blob, keeping the sizes of what it uploaded."""

    def __init__(self, *layers: bytes):
        self.layers = list(layers)
        self.config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex(),
                                  "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        body = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                "config": {"mediaType": mt.OCI_CONFIG, "digest": digest_of(self.config), "size": len(self.config)},
                "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": digest_of(b), "size": len(b)}
                           for b in self.layers]}
        self.manifest = json.dumps(body).encode()
        self.digest = digest_of(self.manifest)

    @property
    def blobs(self) -> dict[str, int]:
        return {digest_of(b): len(b) for b in [*self.layers, self.config]}

    async def push(self, http, repo: str, tag: str, user: str = "bob"):
        """Upload every blob, then PUT the manifest; returns the PUT's response."""
        client = V2Client(http)
        headers = await client.auth(repo, user=user)
        for blob in [*self.layers, self.config]:
            await client.upload(repo, blob, headers)
        return await http.put(f"/v2/{repo}/manifests/{tag}", content=self.manifest,
                              headers={**headers, "Content-Type": mt.OCI_MANIFEST})


def usage_of(*images: Image) -> int:
    """Bytes of the distinct blobs of these images (shared blobs once)."""
    blobs: dict[str, int] = {}
    for image in images:
        blobs.update(image.blobs)
    return sum(blobs.values())


async def org_report(http, headers) -> dict:
    r = await http.get(f"{API}/organization/acme", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["quota_report"]


async def repo_report(http, headers, repo: str = "acme/app") -> dict:
    r = await http.get(f"{API}/repository/{repo}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["quota_report"]


# --- the quota resources ------------------------------------------------------------------------

async def test_quota_and_limits_round_trip_in_quays_shapes(ctx, http, acme, su):
    assert (await http.get(QUOTA, headers=su)).json() == []
    r = await http.post(QUOTA, json={"limit_bytes": 10 * 1024**3}, headers=su)
    assert r.status_code == 201 and r.json() == "Created"
    (view,) = (await http.get(QUOTA, headers=su)).json()
    quota_id = view["id"]
    assert view == {"id": quota_id, "limit_bytes": 10 * 1024**3, "limit": "10.0 GiB", "default_config": False,
                    "limits": [], "default_config_exists": False}

    for kind, percent in (("Warning", 50), ("Reject", 100)):
        r = await http.post(f"{QUOTA}/{quota_id}/limit", json={"type": kind, "threshold_percent": percent},
                            headers=su)
        assert r.status_code == 201, r.text
    limits = (await http.get(f"{QUOTA}/{quota_id}/limit", headers=su)).json()
    assert [(li["type"], li["limit_percent"]) for li in limits] == [("Warning", 50), ("Reject", 100)]
    warning_id = limits[0]["id"]
    assert (await http.get(f"{QUOTA}/{quota_id}/limit/{warning_id}", headers=su)).json() == limits[0]

    r = await http.put(f"{QUOTA}/{quota_id}/limit/{warning_id}", json={"threshold_percent": 80}, headers=su)
    assert r.status_code == 200, r.text
    assert [(li["type"], li["limit_percent"]) for li in r.json()["limits"]] == [("Warning", 80), ("Reject", 100)]

    r = await http.put(f"{QUOTA}/{quota_id}", json={"limit": "512M"}, headers=su)
    assert r.status_code == 200 and r.json()["limit_bytes"] == 512 * 1024**2 and r.json()["limit"] == "512.0 MiB"
    r = await http.put(f"{QUOTA}/{quota_id}", json={"limit_bytes": 1536}, headers=su)
    assert r.json()["limit"] == "1.5 KiB"
    assert (await http.get(f"{QUOTA}/{quota_id}", headers=su)).json() == r.json()

    assert (await http.delete(f"{QUOTA}/{quota_id}/limit/{warning_id}", headers=su)).status_code == 204
    assert_error(await http.get(f"{QUOTA}/{quota_id}/limit/{warning_id}", headers=su), 404)
    assert (await http.delete(f"{QUOTA}/{quota_id}", headers=su)).status_code == 204
    assert (await http.get(QUOTA, headers=su)).json() == []
    assert_error(await http.get(f"{QUOTA}/{quota_id}", headers=su), 404)

    assert [kind for kind in await log_kinds(ctx) if "quota" in kind] == [
        "org_create_quota", "org_create_quota_limit", "org_create_quota_limit", "org_change_quota_limit",
        "org_change_quota", "org_change_quota", "org_delete_quota_limit", "org_delete_quota"]


async def test_bad_input_is_refused_with_quays_error_shape(ctx, http, acme, su):
    for body in ({"limit_bytes": -1}, {"limit_bytes": 0}, {"limit_bytes": 2**64}, {"limit": "lots"}, {},
                 {"limit_bytes": "many"}):
        assert_error(await http.post(QUOTA, json=body, headers=su), 400)
    quota_id = await set_quota(http, su, limits=[("Warning", 50)])
    assert "already exists" in assert_error(await http.post(QUOTA, json={"limit_bytes": 5}, headers=su),
                                            400)["error_message"]
    assert_error(await http.put(f"{QUOTA}/{quota_id}", json={"limit_bytes": -5}, headers=su), 400)

    limit_path = f"{QUOTA}/{quota_id}/limit"
    for body in ({"type": "Warning", "threshold_percent": 0}, {"type": "Warning", "threshold_percent": 101},
                 {"type": "Maybe", "threshold_percent": 10}, {"type": "Reject"}, {"threshold_percent": 10}):
        assert_error(await http.post(limit_path, json=body, headers=su), 400)
    body = assert_error(await http.post(limit_path, json={"type": "Warning", "threshold_percent": 50}, headers=su),
                        400)
    assert body["error_message"] == "Quota limit already exists"
    assert (await http.post(limit_path, json={"type": "reject", "threshold_percent": 90}, headers=su)).status_code == 201
    assert_error(await http.post(limit_path, json={"type": "Reject", "threshold_percent": 100}, headers=su), 400)
    limits = (await http.get(limit_path, headers=su)).json()
    assert [(li["type"], li["limit_percent"]) for li in limits] == [("Warning", 50), ("Reject", 90)]
    # Changing a limit into a duplicate, or out of range, is refused too.
    warning_id, reject_id = limits[0]["id"], limits[1]["id"]
    assert_error(await http.put(f"{limit_path}/{reject_id}", json={"type": "Warning", "threshold_percent": 50},
                                headers=su), 400)
    assert_error(await http.put(f"{limit_path}/{warning_id}", json={"threshold_percent": 200}, headers=su), 400)

    # Ids that are not numbers, or belong to another namespace, name nothing.
    for path in (f"{QUOTA}/abc", f"{QUOTA}/{quota_id}/limit/xyz", f"{QUOTA}/{quota_id + 1000}",
                 f"{QUOTA}/{10**20}", f"{QUOTA}/{quota_id}/limit/{10**20}",
                 f"{API}/organization/nope/quota", f"{API}/organization/bob/quota",
                 f"{API}/organization/bob/quota/{quota_id}"):
        assert_error(await http.get(path, headers=su), 404)


async def test_only_superusers_change_quotas(ctx, http, acme, su, bob, monkeypatch):
    carol, dave = await bearer(ctx, "carol"), await bearer(ctx, "dave")
    no_super_scope = await bearer(ctx, "alice", "org:admin user:admin repo:admin")
    quota_id = await set_quota(http, su)
    limit_id = (await http.get(f"{QUOTA}/{quota_id}/limit", headers=su)).json()[0]["id"]
    writes = [("POST", QUOTA, {"limit_bytes": 1}), ("PUT", f"{QUOTA}/{quota_id}", {"limit_bytes": 10**12}),
              ("DELETE", f"{QUOTA}/{quota_id}", None),
              ("POST", f"{QUOTA}/{quota_id}/limit", {"type": "Warning", "threshold_percent": 90}),
              ("PUT", f"{QUOTA}/{quota_id}/limit/{limit_id}", {"threshold_percent": 99}),
              ("DELETE", f"{QUOTA}/{quota_id}/limit/{limit_id}", None),
              ("POST", f"{API}/superuser/organization/acme/quota", {"limit_bytes": 1}),
              ("PUT", f"{API}/superuser/organization/acme/quota/{quota_id}", {"limit_bytes": 10**12}),
              ("DELETE", f"{API}/superuser/users/bob/quota/{quota_id}", None)]
    reads = [QUOTA, f"{QUOTA}/{quota_id}", f"{QUOTA}/{quota_id}/limit", f"{QUOTA}/{quota_id}/limit/{limit_id}"]

    for method, path, body in writes:
        assert_error(await http.request(method, path, json=body), 401)
        for who in (bob, carol, dave, no_super_scope):  # the org admin included
            assert_error(await http.request(method, path, json=body, headers=who), 403)
    for path in reads:
        assert_error(await http.get(path), 401)
        assert_error(await http.get(path, headers=dave), 403)
        for who in (su, bob, carol):
            assert (await http.get(path, headers=who)).status_code == 200, path
    assert_error(await http.get(f"{API}/superuser/organization/acme/quota", headers=bob), 403)
    # Nothing above changed the quota.
    (view,) = (await http.get(QUOTA, headers=carol)).json()
    assert view["limit_bytes"] == LIMIT and len(view["limits"]) == 2
    # Members see the organization's usage; outsiders do not.
    assert (await org_report(http, carol))["configured_quota"] == LIMIT
    assert "quota_report" not in (await http.get(f"{API}/organization/acme", headers=dave)).json()

    monkeypatch.setattr(ctx.settings, "FEATURE_EDIT_QUOTA", False)
    assert_error(await http.put(f"{QUOTA}/{quota_id}", json={"limit_bytes": 1}, headers=su), 403)
    assert_error(await http.get(f"{API}/superuser/organization/acme/quota", headers=su), 404)
    assert (await http.get(QUOTA, headers=carol)).status_code == 200

    monkeypatch.setattr(ctx.settings, "FEATURE_QUOTA_MANAGEMENT", False)
    for path in reads + ["/api/v1/user/quota"]:
        assert_error(await http.get(path, headers=su), 404)
    assert_error(await http.post(QUOTA, json={"limit_bytes": 1}, headers=su), 404)
    assert "quota_report" not in (await http.get(f"{API}/organization/acme", headers=bob)).json()
    assert "quota_report" not in (await http.get(f"{API}/repository/acme/app", headers=bob)).json()


async def test_user_quota_is_set_by_a_superuser_and_read_by_the_user(ctx, http, acme, su, bob):
    assert (await http.get(f"{API}/user/quota", headers=bob)).json() == []
    assert_error(await http.post(f"{API}/superuser/users/bob/quota", json={"limit_bytes": 1000}, headers=bob), 403)
    r = await http.post(f"{API}/superuser/users/bob/quota", json={"limit": "1G"}, headers=su)
    assert r.status_code == 201, r.text
    (listed,) = (await http.get(f"{API}/superuser/users/bob/quota", headers=su)).json()
    (view,) = (await http.get(f"{API}/user/quota", headers=bob)).json()
    assert view == listed and view["limit_bytes"] == 1024**3
    # Limits on a user's quota go through the organization paths, as in Quay.
    r = await http.post(f"{API}/organization/bob/quota/{view['id']}/limit",
                        json={"type": "Reject", "threshold_percent": 100}, headers=su)
    assert r.status_code == 201, r.text
    limits = (await http.get(f"{API}/user/quota/{view['id']}/limit", headers=bob)).json()
    assert [(li["type"], li["limit_percent"]) for li in limits] == [("Reject", 100)]
    assert (await http.get(f"{API}/user/quota/{view['id']}/limit/{limits[0]['id']}", headers=bob)).json() == limits[0]
    assert (await http.get(f"{API}/user/quota/{view['id']}", headers=bob)).json()["limits"] == limits
    # carol sees neither bob's quota nor acme's through her own paths.
    carol = await bearer(ctx, "carol")
    assert (await http.get(f"{API}/user/quota", headers=carol)).json() == []
    assert_error(await http.get(f"{API}/user/quota/{view['id']}", headers=carol), 404)
    assert_error(await http.get(f"{API}/organization/bob/quota/{view['id']}", headers=carol), 403)

    r = await http.put(f"{API}/superuser/users/bob/quota/{view['id']}", json={"limit_bytes": 2048}, headers=su)
    assert r.status_code == 200 and r.json()["limit_bytes"] == 2048
    assert (await http.delete(f"{API}/superuser/users/bob/quota/{view['id']}", headers=su)).status_code == 204
    assert (await http.get(f"{API}/user/quota", headers=bob)).json() == []


# --- usage and enforcement ------------------------------------------------------------------------

async def test_pushes_are_held_to_the_quota(ctx, http, acme, su, bob):
    quota_id = await set_quota(http, su)
    assert await org_report(http, bob) == {"quota_bytes": 0, "configured_quota": LIMIT, "percent_consumed": 0.0}

    base = os.urandom(6000)
    a = Image(base)
    assert (await a.push(http, "acme/app", "a")).status_code == 201
    assert (await org_report(http, bob))["quota_bytes"] == usage_of(a) < LIMIT // 2
    assert await log_entries(ctx, "quota_warning") == []

    # A second image sharing the first one's layer: the shared layer counts once, and the push
    # crosses the Warning limit: accepted, and logged once.
    b = Image(base, os.urandom(4500))
    assert (await b.push(http, "acme/app", "b")).status_code == 201
    used = usage_of(a, b)
    assert used < usage_of(a) + usage_of(b) and used > LIMIT // 2
    assert await org_report(http, bob) == {"quota_bytes": used, "configured_quota": LIMIT,
                                           "percent_consumed": round(used * 100 / LIMIT, 2)}
    assert (await repo_report(http, bob))["quota_bytes"] == used
    (warning,) = await log_entries(ctx, "quota_warning")
    assert warning.metadata_json["threshold_percent"] == 50 and warning.metadata_json["usage_bytes"] == used
    # Above the Warning limit already: a further push does not log again.
    small = Image(base)
    assert (await small.push(http, "acme/other", "small")).status_code == 201
    used = usage_of(a, b, small)
    assert (await org_report(http, bob))["quota_bytes"] == used
    assert (await repo_report(http, bob, "acme/other"))["quota_bytes"] == usage_of(small)
    assert len(await log_entries(ctx, "quota_warning")) == 1

    # Over the Reject limit: 403 DENIED with Quay's message; no tag, no manifest, usage unchanged.
    c = Image(base, os.urandom(LIMIT - used + 1))
    r = await c.push(http, "acme/app", "c")
    assert r.status_code == 403 and error_code(r) == "DENIED", r.text
    assert r.json()["errors"][0]["message"] == "Quota has been exceeded on namespace acme"
    headers = await V2Client(http).auth("acme/app", "pull", user="bob")
    assert (await http.get("/v2/acme/app/manifests/c", headers=headers)).status_code == 404
    assert (await http.get(f"/v2/acme/app/manifests/{c.digest}", headers=headers)).status_code == 404
    async with ctx.db.read() as session:
        repo = await content.get_repository(session, "acme", "app")
        assert not await content.manifest_exists(session, repo.id, c.digest)
    tags = (await http.get(f"{API}/repository/acme/app/tag/", headers=bob)).json()["tags"]
    assert sorted(t["name"] for t in tags) == ["a", "b"]
    assert (await org_report(http, bob))["quota_bytes"] == used
    # Tagging an image the namespace already holds costs nothing and is accepted.
    push = await V2Client(http).auth("acme/app", user="bob")
    assert (await http.put("/v2/acme/app/manifests/again", content=a.manifest,
                           headers={**push, "Content-Type": mt.OCI_MANIFEST})).status_code == 201

    # At or over the Reject limit, new uploads are refused before any byte is sent.
    r = await http.put(f"{QUOTA}/{quota_id}", json={"limit_bytes": used}, headers=su)
    assert r.status_code == 200
    r = await http.post("/v2/acme/app/blobs/uploads/", headers=push)
    assert r.status_code == 403 and error_code(r) == "DENIED"
    assert "Quota has been exceeded on namespace acme" in r.text
    # Other namespaces are not affected.
    assert (await Image(os.urandom(100)).push(http, "bob/mine", "v1")).status_code == 201
    await http.put(f"{QUOTA}/{quota_id}", json={"limit_bytes": LIMIT}, headers=su)

    # Deleting tag b and collecting garbage gives b's own blobs back; crossing the Warning
    # limit again logs again.
    assert (await http.delete("/v2/acme/app/manifests/b", headers=push)).status_code == 202
    assert (await org_report(http, bob))["quota_bytes"] == used  # until garbage collection
    await set_window(ctx, "acme", 0)
    await _expire_claims(ctx)
    await gc.collect_garbage(ctx)
    assert (await org_report(http, bob))["quota_bytes"] == usage_of(a, small) < LIMIT // 2
    b2 = Image(base, os.urandom(4500))
    assert (await b2.push(http, "acme/app", "b")).status_code == 201
    assert len(await log_entries(ctx, "quota_warning")) == 2


async def _expire_claims(ctx) -> None:
    """Upload claims and temporary tags end now, as an hour of waiting would make them."""
    async with ctx.db.write() as session:
        await session.execute(update(UploadedBlob).values(expires_at=utcnow()))
        await session.execute(update(Tag).where(Tag.hidden.is_(True)).values(lifetime_end_ms=now_ms() - 1))


async def test_usage_counts_shared_blobs_once_and_skips_deleted_repositories(ctx, http, acme, su, bob):
    shared = os.urandom(3000)
    one, two = Image(shared, os.urandom(1000)), Image(shared)
    assert (await one.push(http, "acme/app", "v1")).status_code == 201
    assert (await two.push(http, "acme/other", "v1")).status_code == 201
    # Without a quota the usage is still reported; configured_quota is null.
    assert await org_report(http, bob) == {"quota_bytes": usage_of(one, two), "configured_quota": None,
                                           "percent_consumed": None}
    assert (await repo_report(http, bob, "acme/app"))["quota_bytes"] == usage_of(one)
    assert (await repo_report(http, bob, "acme/other"))["quota_bytes"] == usage_of(two)
    assert (await http.delete(f"{API}/repository/acme/other", headers=bob)).status_code == 204
    assert (await org_report(http, bob))["quota_bytes"] == usage_of(one)


async def test_system_default_reject_applies_without_a_quota(ctx, http, acme, su, bob, monkeypatch):
    monkeypatch.setattr(ctx.settings, "DEFAULT_SYSTEM_REJECT_QUOTA_BYTES", 4096)
    (view,) = (await http.get(QUOTA, headers=bob)).json()
    assert view["default_config"] is True and view["default_config_exists"] is True
    assert view["limit_bytes"] == 4096 and view["limits"] == [{"id": None, "type": "Reject", "limit_percent": 100}]
    assert (await Image(os.urandom(1000)).push(http, "acme/app", "small")).status_code == 201
    r = await Image(os.urandom(4000)).push(http, "acme/app", "big")
    assert r.status_code == 403 and error_code(r) == "DENIED"
    assert (await org_report(http, bob))["configured_quota"] == 4096
    # A quota of the namespace's own replaces the default.
    await set_quota(http, su, limit_bytes=100_000)
    assert (await Image(os.urandom(4000)).push(http, "acme/app", "big")).status_code == 201
    (view,) = (await http.get(QUOTA, headers=bob)).json()
    assert view["default_config"] is False and view["default_config_exists"] is True


async def test_quota_not_enforced_without_verify_quota(ctx, http, acme, su, monkeypatch):
    await set_quota(http, su, limit_bytes=1000)
    monkeypatch.setattr(ctx.settings, "FEATURE_VERIFY_QUOTA", False)
    assert (await Image(os.urandom(2000)).push(http, "acme/app", "v1")).status_code == 201
    monkeypatch.setattr(ctx.settings, "FEATURE_VERIFY_QUOTA", True)
    r = await http.post("/v2/acme/app/blobs/uploads/", headers=await V2Client(http).auth("acme/app", user="bob"))
    assert r.status_code == 403 and error_code(r) == "DENIED"


@pytest.mark.parametrize("db_uri", ["sqlite"], indirect=True)  # PostgreSQL plans follow table statistics
async def test_usage_query_walks_indexes(ctx, db_uri):
    """One statement, through the repository and manifestblob indexes (no table scans)."""
    from sqlalchemy import func, select

    from quaymaster.content.models import Blob
    statement = select(func.coalesce(func.sum(Blob.size), 0)).where(Blob.id.in_(quota._namespace_blob_ids(1)))
    sql = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    async with ctx.db.read() as session:
        plan = [row[-1] for row in (await session.execute(text(f"EXPLAIN QUERY PLAN {sql}"))).all()]
    assert not [step for step in plan if step.startswith("SCAN")], plan
    assert any("ix_manifestblob_repository_id_blob_id" in step for step in plan), plan
    assert any("ix_repository_namespace_user_id" in step for step in plan), plan


async def test_deleting_a_namespace_takes_its_quota_along(ctx, http, acme, su, bob):
    await set_quota(http, su)
    assert (await http.delete(f"{API}/repository/acme/app", headers=bob)).status_code == 204
    assert (await http.delete(f"{API}/repository/acme/other", headers=bob)).status_code == 204
    await gc.collect_garbage(ctx)
    r = await http.delete(f"{API}/organization/acme", headers=bob)
    assert r.status_code == 204, r.text
    assert_error(await http.get(QUOTA, headers=su), 404)
    # A user with a quota and an image: deleted through garbage collection.
    assert (await http.post(f"{API}/superuser/users/dave/quota", json={"limit_bytes": 10**6}, headers=su)).status_code == 201
    assert (await Image(os.urandom(100)).push(http, "dave/mine", "v1", user="dave")).status_code == 201
    assert (await http.delete(f"{API}/superuser/users/dave", headers=su)).status_code == 204
    await gc.collect_garbage(ctx)
    await gc.collect_garbage(ctx)
    async with ctx.db.read() as session:
        assert await accounts.get_user(session, "dave") is None
        assert (await session.scalar(text("SELECT count(*) FROM quota"))) == 0
