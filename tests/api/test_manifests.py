"""Manifests and labels under /api/v1: the manifest with its layer history from the image config,
labels taken from `config.Labels` at push, and API labels added, read and removed."""

import json

from protocol.v2client import V2Client

from quaymaster.accounts import permissions
from quaymaster.accounts import service as users
from quaymaster.oci import mediatypes as mt

from .helpers import assert_error, signin
from .repohelpers import API, log_entries, make_repo, push, push_index, repo_id

REPO = f"{API}/repository/alice/app"
HISTORY = [
    {"created": "2024-03-01T10:00:00.123456789Z", "created_by": "/bin/sh -c #(nop) ADD file:abc in / ",
     "author": "alice"},
    {"created": "2024-03-01T10:00:01Z", "created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]", "empty_layer": True},
    {"created": "2024-03-02T11:30:00+02:00", "created_by": "RUN make install", "comment": "buildkit.dockerfile.v0"},
]


async def test_manifest_with_layer_history(http, ctx):
    digest = await push(http, "alice/app", "v1", layers=2, history=HISTORY)
    await signin(http, "alice")
    r = await http.get(f"{REPO}/manifest/{digest}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["digest"] == digest and body["is_manifest_list"] is False
    assert body["config_media_type"] == "application/vnd.oci.image.config.v1+json"
    manifest = json.loads(body["manifest_data"])
    first, second = body["layers"]
    assert first == {"index": 0, "compressed_size": 512, "is_remote": False, "urls": None,
                     "command": ["/bin/sh -c #(nop) ADD file:abc in / "], "comment": None, "author": "alice",
                     "blob_digest": manifest["layers"][0]["digest"],
                     "created_datetime": "Fri, 01 Mar 2024 10:00:00 -0000"}
    # The empty-layer history step is skipped; times are converted to UTC.
    assert second["command"] == ["RUN make install"] and second["comment"] == "buildkit.dockerfile.v0"
    assert second["created_datetime"] == "Sat, 02 Mar 2024 09:30:00 -0000"


async def test_manifest_lists_and_missing_manifests(http, ctx):
    child = await push(http, "alice/app", None)
    index = await push_index(http, "alice/app", "multi", [child])
    await signin(http, "alice")
    body = (await http.get(f"{REPO}/manifest/{index}")).json()
    assert body["is_manifest_list"] is True and body["layers"] is None and body["config_media_type"] is None
    assert_error(await http.get(f"{REPO}/manifest/sha256:{'0' * 64}"), 404)
    assert_error(await http.get(f"{REPO}/manifest/not-a-digest"), 404)
    http.cookies.clear()
    assert_error(await http.get(f"{REPO}/manifest/{index}"), 404)  # private repository


async def test_a_manifest_without_history_still_lists_its_layers(http, ctx):
    digest = await push(http, "alice/app", "v1")
    await signin(http, "alice")
    (layer,) = (await http.get(f"{REPO}/manifest/{digest}")).json()["layers"]
    assert layer["command"] is None and layer["created_datetime"] is None and layer["compressed_size"] == 512


async def test_labels_come_from_the_image_config(http, ctx):
    labels = {"org.opencontainers.image.title": "app", "Maintainer": "Alice <a@example.com>",
              "com.example.meta": '{"tier": "web"}', "": "ignored"}
    digest = await push(http, "alice/app", "v1", labels=labels)
    await signin(http, "alice")
    found = (await http.get(f"{REPO}/manifest/{digest}/labels")).json()["labels"]
    by_key = {label["key"]: label for label in found}
    assert set(by_key) == {"org.opencontainers.image.title", "Maintainer", "com.example.meta"}
    assert all(label["source_type"] == "manifest" for label in found)
    assert by_key["com.example.meta"]["media_type"] == "application/json"
    assert by_key["Maintainer"]["media_type"] == "text/plain" and by_key["Maintainer"]["value"] == labels["Maintainer"]
    filtered = (await http.get(f"{REPO}/manifest/{digest}/labels", params={"filter": "org."})).json()["labels"]
    assert [label["key"] for label in filtered] == ["org.opencontainers.image.title"]
    one = by_key["Maintainer"]
    assert (await http.get(f"{REPO}/manifest/{digest}/labels/{one['id']}")).json() == one
    # Labels that came with the image cannot be removed.
    csrf = await signin(http, "alice")
    assert_error(await http.delete(f"{REPO}/manifest/{digest}/labels/{one['id']}", headers=csrf), 400)
    # Pushing the same manifest again to another tag adds no duplicates.
    headers = await V2Client(http).auth("alice/app")
    raw = (await http.get(f"/v2/alice/app/manifests/{digest}", headers=headers)).content
    r = await http.put("/v2/alice/app/manifests/v2", content=raw, headers={**headers, "Content-Type": mt.OCI_MANIFEST})
    assert r.status_code == 201
    assert len((await http.get(f"{REPO}/manifest/{digest}/labels")).json()["labels"]) == 3


async def test_api_labels(http, ctx):
    digest = await push(http, "alice/app", "v1")
    base = f"{REPO}/manifest/{digest}/labels"
    csrf = await signin(http, "alice")
    r = await http.post(base, json={"key": "owner", "value": "team-a", "media_type": "text/plain"}, headers=csrf)
    assert r.status_code == 201, r.text
    label = r.json()["label"]
    assert label["key"] == "owner" and label["source_type"] == "api" and label["media_type"] == "text/plain"
    assert r.headers["Location"].endswith(f"/labels/{label['id']}")
    r = await http.post(base, json={"key": "conf", "value": '["a"]', "media_type": None}, headers=csrf)
    assert r.json()["label"]["media_type"] == "application/json"
    assert (await http.get(f"{base}/{label['id']}")).json() == label
    assert (await http.delete(f"{base}/{label['id']}", headers=csrf)).status_code == 204
    assert_error(await http.get(f"{base}/{label['id']}"), 404)
    assert_error(await http.delete(f"{base}/{label['id']}", headers=csrf), 404)
    assert [e.metadata_json["key"] for e in await log_entries(ctx, "manifest_label_add")] == ["owner", "conf"]
    assert [e.metadata_json["key"] for e in await log_entries(ctx, "manifest_label_delete")] == ["owner"]
    # Invalid keys, reserved prefixes and media types.
    for body in ({"key": "Upper", "value": "x"}, {"key": "bad..key", "value": "x"},
                 {"key": "quay.expires-after", "value": "1h"}, {"key": "com.docker.x", "value": "x"},
                 {"key": "fine", "value": "x", "media_type": "text/html"}, {"key": "nokey"}):
        assert_error(await http.post(base, json=body, headers=csrf), 400)
    assert_error(await http.post(f"{REPO}/manifest/sha256:{'2' * 64}/labels", json={"key": "a", "value": "b"},
                                 headers=csrf), 404)


async def test_label_permissions(http, ctx):
    await make_repo(ctx, "alice/app", "public")
    digest = await push(http, "alice/app", "v1", labels={"a": "b"})
    base = f"{REPO}/manifest/{digest}/labels"
    assert len((await http.get(base)).json()["labels"]) == 1  # anonymous may read a public repository
    assert_error(await http.post(base, json={"key": "x", "value": "y"}), 401)
    csrf = await signin(http, "bob")
    assert_error(await http.post(base, json={"key": "x", "value": "y"}, headers=csrf), 403)
    async with ctx.db.write() as session:
        await permissions.set_permission(session, await repo_id(ctx, "alice/app"), "write",
                                         user=await users.get_user(session, "bob"))
    assert (await http.post(base, json={"key": "x", "value": "y"}, headers=csrf)).status_code == 201
