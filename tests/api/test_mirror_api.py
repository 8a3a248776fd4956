"""/api/v1/repository/{ns}/{repo}/mirror: Quay's JSON, who may use it, the feature switch, and the
mirror robot being the only account that can push into a MIRROR repository through /v2."""

import pytest
from protocol.v2client import V2Client

from quaymaster.accounts import robots
from quaymaster.accounts import service as accounts
from quaymaster.auditlog import service as auditlog
from quaymaster.content import service as content
from quaymaster.mirroring import service

from .helpers import assert_error, bearer
from .test_orgs import grant, make_org

MIRROR = "/api/v1/repository/acme/mirror/mirror"
PASSWORD = "upstream-s3cret"


@pytest.fixture
def config(config):
    return {**config, "FEATURE_REPO_MIRROR": True}


@pytest.fixture
async def alice(ctx) -> dict:
    return await bearer(ctx, "alice")


@pytest.fixture
async def bob(ctx) -> dict:
    return await bearer(ctx, "bob")


@pytest.fixture
async def acme(http, ctx, alice) -> str:
    """Organization acme (admin alice) with robot acme+mirror and repository acme/mirror in MIRROR state."""
    await make_org(http, alice)
    r = await http.put("/api/v1/organization/acme/robots/mirror", headers=alice)
    assert r.status_code == 201, r.text
    r = await http.post("/api/v1/repository", json={"namespace": "acme", "repository": "mirror",
                                                    "visibility": "private", "description": ""}, headers=alice)
    assert r.status_code == 201, r.text
    r = await http.put("/api/v1/repository/acme/mirror/changestate", json={"state": "MIRROR"}, headers=alice)
    assert r.status_code == 200, r.text
    return "acme"


def body(**overrides) -> dict:
    data = {
        "external_reference": "quay.io/upstream/app", "external_registry_username": "puller",
        "external_registry_password": PASSWORD, "sync_interval": 86400, "sync_start_date": "2030-01-02T03:04:05Z",
        "robot_username": "acme+mirror", "root_rule": {"rule_kind": "tag_glob_csv", "rule_value": ["v1.*", "latest"]},
        "external_registry_config": {"verify_tls": True, "unsigned_images": False,
                                     "proxy": {"http_proxy": None, "https_proxy": None, "no_proxy": None}},
        "skopeo_timeout_interval": 300, "architecture_filter": [], "is_enabled": True,
    }
    data.update(overrides)
    return data


async def test_create_get_update_in_quays_shape_without_the_password(http, ctx, alice, acme):
    r = await http.post(MIRROR, json=body(), headers=alice)
    assert r.status_code == 201, r.text
    got = (await http.get(MIRROR, headers=alice)).json()
    assert got == {
        "is_enabled": True, "mirror_type": "PULL", "external_reference": "quay.io/upstream/app",
        "external_registry_username": "puller",
        "external_registry_config": {"verify_tls": True, "unsigned_images": False,
                                     "proxy": {"http_proxy": None, "https_proxy": None, "no_proxy": None}},
        "sync_interval": 86400, "sync_start_date": "2030-01-02T03:04:05Z", "sync_expiration_date": None,
        "sync_retries_remaining": 3, "sync_status": "NEVER_RUN",
        "root_rule": {"rule_kind": "tag_glob_csv", "rule_value": ["v1.*", "latest"]},
        "robot_username": "acme+mirror", "skopeo_timeout_interval": 300, "architecture_filter": [],
    }
    assert PASSWORD not in r.text

    r = await http.put(MIRROR, json={"is_enabled": False, "root_rule": {"rule_kind": "tag_glob_csv",
                                                                          "rule_value": ["v2.*"]},
                                     "architecture_filter": ["arm64"]}, headers=alice)
    assert r.status_code == 201, r.text
    updated = r.json()
    assert updated["is_enabled"] is False and updated["root_rule"]["rule_value"] == ["v2.*"]
    assert updated["architecture_filter"] == ["arm64"] and updated["external_registry_username"] == "puller"
    async with ctx.db.read() as session:  # the password was kept, encrypted
        repo = await content.get_repository(session, "acme", "mirror")
        stored = (await service.get_config(session, repo.id)).external_registry_password
    assert ctx.cipher.decrypt(stored) == PASSWORD

    # The robot was granted write so its pushes are accepted; the log says so, and never the password.
    perms = (await http.get("/api/v1/repository/acme/mirror/permissions/user/", headers=alice)).json()
    assert perms["permissions"]["acme+mirror"]["role"] == "write"
    await ctx.audit.flush()
    async with ctx.db.read() as session:
        entries = await auditlog.entries(session, repository_id=repo.id)
    kinds = [e.kind for e in reversed(entries)]
    assert "repo_mirror_enabled" in kinds and "repo_mirror_disabled" in kinds and "add_repo_permission" in kinds
    assert "repo_mirror_config_changed" in kinds
    assert all(PASSWORD not in str(e.metadata_json) for e in entries)


async def test_who_may_use_it(http, ctx, alice, bob, acme):
    assert_error(await http.get(MIRROR), 401)
    assert_error(await http.post(MIRROR, json=body()), 401)
    assert_error(await http.get(MIRROR, headers=bob), 404)  # bob cannot even see the repository
    async with ctx.db.read() as session:
        repo = await content.get_repository(session, "acme", "mirror")
    await grant(ctx, repo.id, "write", user="bob")
    for method, path in (("GET", MIRROR), ("POST", MIRROR), ("PUT", MIRROR), ("POST", MIRROR + "/sync-now"),
                         ("POST", MIRROR + "/sync-cancel")):
        r = await http.request(method, path, json=body() if method != "GET" else None, headers=bob)
        assert_error(r, 403)
    assert_error(await http.get(MIRROR, headers=alice), 404)  # no configuration yet
    reader = await bearer(ctx, "alice", "repo:read")
    assert_error(await http.post(MIRROR, json=body(), headers=reader), 403)


async def test_feature_off_is_404(http, ctx, alice, acme, monkeypatch):
    assert (await http.post(MIRROR, json=body(), headers=alice)).status_code == 201
    monkeypatch.setattr(ctx.settings, "FEATURE_REPO_MIRROR", False)
    for method, path in (("GET", MIRROR), ("PUT", MIRROR), ("POST", MIRROR + "/sync-now")):
        assert_error(await http.request(method, path, json={}, headers=alice), 404)


async def test_refusals(http, ctx, alice, acme):
    r = await http.put("/api/v1/repository/acme/mirror/changestate", json={"state": "NORMAL"}, headers=alice)
    assert r.status_code == 200
    message = assert_error(await http.post(MIRROR, json=body(), headers=alice), 400)["error_message"]
    assert "MIRROR state" in message
    await http.put("/api/v1/repository/acme/mirror/changestate", json={"state": "MIRROR"}, headers=alice)

    r = await http.put("/api/v1/user/robots/own", headers=alice)
    assert r.status_code == 201
    message = assert_error(await http.post(MIRROR, json=body(robot_username="alice+own"), headers=alice),
                           400)["error_message"]
    assert "not a robot account of acme" in message
    for bad in ({"external_reference": "registry.test/acme/other"}, {"external_reference": "ftp://x/y"},
                {"sync_interval": 10}, {"skopeo_timeout_interval": 100}, {"root_rule": {"rule_value": []}},
                {"sync_start_date": "soon"}, {"architecture_filter": ["vax"]}):
        assert_error(await http.post(MIRROR, json=body(**bad), headers=alice), 400)
    assert_error(await http.post(MIRROR, json=["not", "an", "object"], headers=alice), 400)
    assert_error(await http.put(MIRROR, json={"sync_interval": 600}, headers=alice), 404)

    assert (await http.post(MIRROR, json=body(), headers=alice)).status_code == 201
    assert_error(await http.post(MIRROR, json=body(), headers=alice), 409)


async def test_sync_now_and_cancel(http, ctx, alice, acme):
    assert_error(await http.post(MIRROR + "/sync-now", headers=alice), 404)
    assert (await http.post(MIRROR, json=body(), headers=alice)).status_code == 201
    assert_error(await http.post(MIRROR + "/sync-cancel", headers=alice), 400)  # nothing queued
    r = await http.post(MIRROR + "/sync-now", headers=alice)
    assert r.status_code == 204, r.text
    assert (await http.get(MIRROR, headers=alice)).json()["sync_status"] == "SYNC_NOW"
    assert (await http.post(MIRROR + "/sync-now", headers=alice)).status_code == 204  # asking twice is fine
    assert (await http.post(MIRROR + "/sync-cancel", headers=alice)).status_code == 204
    got = (await http.get(MIRROR, headers=alice)).json()
    assert (got["sync_status"], got["sync_start_date"], got["sync_retries_remaining"]) == ("CANCEL", None, 0)
    await ctx.audit.flush()
    async with ctx.db.read() as session:
        repo = await content.get_repository(session, "acme", "mirror")
        kinds = [e.kind for e in await auditlog.entries(session, repository_id=repo.id)]
    assert "repo_mirror_sync_now_requested" in kinds


async def test_only_the_mirror_robot_pushes_into_a_mirror_repository(http, ctx, alice, acme):
    assert (await http.post(MIRROR, json=body(), headers=alice)).status_code == 201
    async with ctx.db.read() as session:
        org = await accounts.get_namespace(session, "acme")
        robot = await robots.require_robot(session, org, "mirror")
        token = robots.reveal_token(ctx.cipher, await robots.robot_token_row(session, robot))
    client = V2Client(http)
    robot_headers = {"Authorization": f"Bearer {await client.token('repository:acme/mirror:pull,push', 'acme+mirror', token)}"}
    await client.push_image("acme/mirror", "v1.0", robot_headers)

    admin_headers = await client.auth("acme/mirror", user="alice")
    r = await http.post("/v2/acme/mirror/blobs/uploads/", headers=admin_headers)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED", r.text
    assert "mirror" in r.json()["errors"][0]["message"]
    # Another robot with write permission is refused too: only the configured one may write.
    r = await http.put("/api/v1/organization/acme/robots/other", headers=alice)
    other_token = r.json()["token"]
    async with ctx.db.read() as session:
        repo = await content.get_repository(session, "acme", "mirror")
    await grant(ctx, repo.id, "write", user="acme+other")
    other = {"Authorization": f"Bearer {await client.token('repository:acme/mirror:pull,push', 'acme+other', other_token)}"}
    r = await http.post("/v2/acme/mirror/blobs/uploads/", headers=other)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"


MALFORMED = [
    None, {"sync_interval": 10**30}, {"root_rule": "x"}, {"root_rule": {"rule_value": [None]}},
    {"external_registry_config": []}, {"external_registry_config": {"proxy": []}}, {"architecture_filter": [1]},
    {"robot_username": 5}, {"external_registry_username": 5}, {"external_registry_password": ["x"]},
    {"sync_start_date": 5}, {"sync_start_date": "0001-01-01T00:00:00+01:00"}, {"skopeo_timeout_interval": "x"},
    {"external_reference": 5}, {"external_reference": "a" * 5000},
]


async def test_malformed_bodies_are_400_never_500(http, alice, acme):
    for bad in MALFORMED:
        r = await http.post(MIRROR, json=body(**bad) if bad else None, headers=alice)
        assert r.status_code == 400, (bad, r.text)
        assert_error(r, 400)
