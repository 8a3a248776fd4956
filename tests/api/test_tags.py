"""Tags under /api/v1: history listing and filters, create/retarget, expiration, delete, the
time-machine restore inside and outside the namespace's window, `quay.expires-after`, and
READ_ONLY repositories refusing tag changes here and pushes on /v2."""

import time

from quaymaster.accounts import permissions
from quaymaster.accounts import service as users
from quaymaster.db.base import now_ms

from .helpers import assert_error, signin
from .repohelpers import (
    API,
    log_entries,
    log_kinds,
    make_repo,
    pull_status,
    push,
    push_index,
    repo_id,
    set_window,
    shift_tag_end,
)

REPO = f"{API}/repository/alice/app"
TAGS = f"{REPO}/tag/"


async def _tags(http, **params) -> list[dict]:
    r = await http.get(TAGS, params=params)
    assert r.status_code == 200, r.text
    return r.json()["tags"]


async def test_list_shape_and_access(http, ctx):
    digest = await push(http, "alice/app", "v1", layers=2)
    assert_error(await http.get(TAGS), 404)  # private, anonymous
    await signin(http, "bob")
    assert_error(await http.get(TAGS), 404)
    await signin(http, "alice")
    r = await http.get(TAGS)
    body = r.json()
    assert body["page"] == 1 and body["has_additional"] is False
    (tag,) = body["tags"]
    assert set(tag) == {"name", "reversion", "start_ts", "manifest_digest", "is_manifest_list", "size",
                        "last_modified"}
    assert tag["name"] == "v1" and tag["manifest_digest"] == digest and tag["reversion"] is False
    assert tag["is_manifest_list"] is False and tag["size"] == 1024
    assert abs(tag["start_ts"] - time.time()) < 60 and tag["last_modified"].endswith("-0000")


async def test_history_filters_and_paging(http, ctx):
    first = await push(http, "alice/app", "latest")
    second = await push(http, "alice/app", "latest")
    await push(http, "alice/app", "stable")
    await signin(http, "alice")
    rows = await _tags(http)
    assert [(t["name"], t["manifest_digest"]) for t in rows] == [
        ("stable", rows[0]["manifest_digest"]), ("latest", second), ("latest", first)]
    ended = rows[2]
    assert "end_ts" in ended and "expiration" in ended and ended["end_ts"] >= ended["start_ts"]
    assert [t["name"] for t in await _tags(http, onlyActiveTags="true")] == ["stable", "latest"]
    assert [t["manifest_digest"] for t in await _tags(http, specificTag="latest")] == [second, first]
    assert [t["name"] for t in await _tags(http, filter_tag_name="like:tab")] == ["stable"]
    assert [t["name"] for t in await _tags(http, filter_tag_name="eq:latest", onlyActiveTags="true")] == ["latest"]
    assert_error(await http.get(TAGS, params={"filter_tag_name": "regex:x"}), 400)
    page1 = (await http.get(TAGS, params={"limit": 2})).json()
    page2 = (await http.get(TAGS, params={"limit": 2, "page": 2})).json()
    assert len(page1["tags"]) == 2 and page1["has_additional"] is True
    assert len(page2["tags"]) == 1 and page2["has_additional"] is False and page2["page"] == 2
    far = (await http.get(TAGS, params={"page": 10**30})).json()
    assert far["tags"] == [] and far["has_additional"] is False
    # Hidden tags (manifests pushed by digest) are never listed.
    await push(http, "alice/app", None)
    assert len(await _tags(http)) == 3


async def test_create_and_move_tags(http, ctx):
    one = await push(http, "alice/app", "one")
    two = await push(http, "alice/app", "two")
    csrf = await signin(http, "alice")
    r = await http.put(f"{TAGS}prod", json={"manifest_digest": one}, headers=csrf)
    assert r.status_code == 201 and r.json() == "Updated"
    r = await http.put(f"{TAGS}prod", json={"manifest_digest": two}, headers=csrf)
    assert r.status_code == 201
    assert await pull_status(http, "alice/app", "prod") == 200
    assert [t["manifest_digest"] for t in await _tags(http, specificTag="prod")] == [two, one]
    assert (await log_kinds(ctx, await repo_id(ctx, "alice/app")))[-2:] == ["create_tag", "move_tag"]
    moved = (await log_entries(ctx, "move_tag"))[0].metadata_json
    assert moved["original_manifest_digest"] == one and moved["manifest_digest"] == two
    assert moved["username"] == "alice" and moved["tag"] == "prod"
    # Errors.
    assert_error(await http.put(f"{TAGS}prod", json={"manifest_digest": "sha256:" + "0" * 64}, headers=csrf), 404)
    assert_error(await http.put(f"{TAGS}.bad", json={"manifest_digest": one}, headers=csrf), 400)
    assert_error(await http.put(f"{TAGS}prod", json={}, headers=csrf), 400)
    http.cookies.clear()
    assert_error(await http.put(f"{TAGS}prod", json={"manifest_digest": one}), 401)
    csrf = await signin(http, "bob")
    assert_error(await http.put(f"{TAGS}prod", json={"manifest_digest": one}, headers=csrf), 404)
    async with ctx.db.write() as session:
        await permissions.set_permission(session, await repo_id(ctx, "alice/app"), "read",
                                         user=await users.get_user(session, "bob"))
    assert_error(await http.put(f"{TAGS}prod", json={"manifest_digest": one}, headers=csrf), 403)
    assert_error(await http.delete(f"{TAGS}prod", headers=csrf), 403)


async def test_expiration(http, ctx):
    digest = await push(http, "alice/app", "v1")
    csrf = await signin(http, "alice")
    later = int(time.time()) + 3600
    r = await http.put(f"{TAGS}v1", json={"expiration": later}, headers=csrf)
    assert r.status_code == 201
    (tag,) = await _tags(http)
    assert tag["end_ts"] == later and tag["expiration"].endswith("-0000")
    assert await pull_status(http, "alice/app", "v1") == 200  # alive until then
    assert (await _tags(http, onlyActiveTags="true"))[0]["name"] == "v1"
    assert_error(await http.put(f"{TAGS}v1", json={"expiration": int(time.time()) - 10}, headers=csrf), 400)
    assert_error(await http.put(f"{TAGS}v1", json={"expiration": 1e30}, headers=csrf), 400)
    assert_error(await http.put(f"{TAGS}v1", json={"expiration": "soon"}, headers=csrf), 400)
    assert (await http.put(f"{TAGS}v1", json={"expiration": None}, headers=csrf)).status_code == 201
    assert "end_ts" not in (await _tags(http))[0]
    assert_error(await http.put(f"{TAGS}nope", json={"expiration": later}, headers=csrf), 404)
    assert [e.metadata_json["tag"] for e in await log_entries(ctx, "change_tag_expiration")] == ["v1", "v1"]
    # Once the end passes the tag is gone from /v2 and listed only as history.
    await shift_tag_end(ctx, "alice/app", "v1", now_ms() - 1000)
    assert await pull_status(http, "alice/app", "v1") == 404
    assert await _tags(http, onlyActiveTags="true") == []
    assert (await _tags(http))[0]["manifest_digest"] == digest
    assert_error(await http.put(f"{TAGS}v1", json={"expiration": later}, headers=csrf), 404)


async def test_delete_and_restore_within_the_window(http, ctx):
    digest = await push(http, "alice/app", "v1")
    csrf = await signin(http, "alice")
    assert (await http.delete(f"{TAGS}v1", headers=csrf)).status_code == 204
    assert await pull_status(http, "alice/app", "v1") == 404
    assert_error(await http.delete(f"{TAGS}v1", headers=csrf), 404)
    (row,) = await _tags(http)
    assert "end_ts" in row
    r = await http.post(f"{TAGS}v1/restore", json={"manifest_digest": digest}, headers=csrf)
    assert r.status_code == 200 and r.json() == {}
    assert await pull_status(http, "alice/app", "v1") == 200
    restored = (await _tags(http))[0]
    assert restored["reversion"] is True and "end_ts" not in restored
    assert (await log_kinds(ctx, await repo_id(ctx, "alice/app")))[-2:] == ["delete_tag", "revert_tag"]
    # A restore may also point another tag name at a recently untagged manifest.
    assert (await http.post(f"{TAGS}old/restore", json={"manifest_digest": digest}, headers=csrf)).status_code == 200
    assert_error(await http.post(f"{TAGS}v1/restore", json={}, headers=csrf), 400)
    assert_error(await http.post(f"{TAGS}v1/restore", json={"manifest_digest": "sha256:" + "1" * 64},
                                 headers=csrf), 404)


async def test_restore_outside_the_window_is_refused(http, ctx):
    digest = await push(http, "alice/app", "v1")
    csrf = await signin(http, "alice")
    assert (await http.delete(f"{TAGS}v1", headers=csrf)).status_code == 204
    # Three weeks ago is past the default two-week window: gone from history, not restorable.
    await shift_tag_end(ctx, "alice/app", "v1", now_ms() - 21 * 86400 * 1000)
    assert await _tags(http) == []
    assert_error(await http.post(f"{TAGS}v1/restore", json={"manifest_digest": digest}, headers=csrf), 404)
    # A wider window brings it back.
    await set_window(ctx, "alice", 4 * 7 * 86400)
    assert len(await _tags(http)) == 1
    assert (await http.post(f"{TAGS}v1/restore", json={"manifest_digest": digest}, headers=csrf)).status_code == 200


async def test_a_zero_window_means_no_time_machine(http, ctx):
    digest = await push(http, "alice/app", "v1")
    await set_window(ctx, "alice", 0)
    csrf = await signin(http, "alice")
    assert (await http.delete(f"{TAGS}v1", headers=csrf)).status_code == 204
    assert await _tags(http) == []
    assert_error(await http.post(f"{TAGS}v1/restore", json={"manifest_digest": digest}, headers=csrf), 404)


async def test_expires_after_label_sets_the_tag_end(http, ctx):
    digest = await push(http, "alice/app", "short", labels={"quay.expires-after": "2h"})
    await signin(http, "alice")
    (tag,) = await _tags(http)
    assert tag["end_ts"] - tag["start_ts"] in (7199, 7200, 7201)
    assert await pull_status(http, "alice/app", "short") == 200
    # Restoring is a reversion: the label does not shorten the restored tag.
    csrf = await signin(http, "alice")
    assert (await http.delete(f"{TAGS}short", headers=csrf)).status_code == 204
    assert (await http.post(f"{TAGS}short/restore", json={"manifest_digest": digest}, headers=csrf)).status_code == 200
    assert "end_ts" not in (await _tags(http, onlyActiveTags="true"))[0]
    # Retargeting through the API applies it, as a push does.
    assert (await http.put(f"{TAGS}other", json={"manifest_digest": digest}, headers=csrf)).status_code == 201
    assert "end_ts" in (await _tags(http, specificTag="other"))[0]


async def test_expires_after_shared_by_every_child_applies_to_an_index(http, ctx):
    children = [await push(http, "alice/app", None, labels={"quay.expires-after": "1d"}) for _ in range(2)]
    await push_index(http, "alice/app", "multi", children)
    mixed = [children[0], await push(http, "alice/app", None)]
    await push_index(http, "alice/app", "mixed", mixed)
    await signin(http, "alice")
    (multi,) = await _tags(http, specificTag="multi")
    assert multi["is_manifest_list"] is True and multi["size"] is None
    assert multi["end_ts"] - multi["start_ts"] in (86399, 86400, 86401)
    assert "end_ts" not in (await _tags(http, specificTag="mixed"))[0]


async def test_read_only_refuses_tag_changes_and_pushes(http, ctx):
    digest = await push(http, "alice/app", "v1")
    csrf = await signin(http, "alice")
    r = await http.put(f"{REPO}/changestate", json={"state": "READ_ONLY"}, headers=csrf)
    assert r.status_code == 200
    assert_error(await http.put(f"{TAGS}v2", json={"manifest_digest": digest}, headers=csrf), 503)
    assert_error(await http.delete(f"{TAGS}v1", headers=csrf), 503)
    assert_error(await http.post(f"{TAGS}v1/restore", json={"manifest_digest": digest}, headers=csrf), 503)
    assert_error(await http.post(f"{REPO}/manifest/{digest}/labels", json={"key": "a", "value": "b"},
                                 headers=csrf), 503)
    from protocol.v2client import V2Client, error_code

    client = V2Client(http)
    headers = await client.auth("alice/app")
    r = await http.post("/v2/alice/app/blobs/uploads/", headers=headers)
    assert r.status_code == 403 and error_code(r) == "DENIED"
    assert await pull_status(http, "alice/app", "v1") == 200  # reads still work
    assert (await http.put(f"{REPO}/changestate", json={"state": "NORMAL"}, headers=csrf)).status_code == 200
    assert (await http.put(f"{TAGS}v2", json={"manifest_digest": digest}, headers=csrf)).status_code == 201
    await push(http, "alice/app", "v3")


async def test_public_repository_tags_are_readable_anonymously(http, ctx):
    await make_repo(ctx, "alice/open", "public")
    await push(http, "alice/open", "v1")
    r = await http.get(f"{API}/repository/alice/open/tag/")
    assert r.status_code == 200 and [t["name"] for t in r.json()["tags"]] == ["v1"]
    assert_error(await http.delete(f"{API}/repository/alice/open/tag/v1"), 401)
