"""Garbage collection: what a pass reclaims, what it must keep, and how a racing push is refused."""

import json
import os
from datetime import timedelta

from sqlalchemy import func, select, update

from quaymaster.accounts import orgs
from quaymaster.accounts.models import User
from quaymaster.accounts.tokens import InstanceKeys
from quaymaster.content import gc
from quaymaster.content import service as content
from quaymaster.content.models import (
    Blob,
    BlobDeletion,
    BlobUpload,
    DeletedNamespace,
    Manifest,
    Repository,
    Tag,
    UploadedBlob,
)
from quaymaster.content.repositories import mark_for_deletion
from quaymaster.db.base import now_ms, utcnow
from quaymaster.oci import mediatypes as mt
from quaymaster.superuser import service as superuser

from .v2client import digest_of, error_code


async def _window(ctx, username: str, seconds: int) -> None:
    async with ctx.db.write() as session:
        await session.execute(update(User).where(User.username == username).values(removed_tag_expiration_s=seconds))


async def _expire_claims_and_temp_tags(ctx) -> None:
    """Move every upload claim and hidden tag's end into the past, as an hour of waiting would."""
    async with ctx.db.write() as session:
        await session.execute(update(UploadedBlob).values(expires_at=utcnow() - timedelta(seconds=1)))
        await session.execute(update(Tag).where(Tag.hidden.is_(True), Tag.lifetime_end_ms.is_not(None))
                              .values(lifetime_end_ms=now_ms() - 1))


async def _count(ctx, model) -> int:
    async with ctx.db.read() as session:
        return await session.scalar(select(func.count()).select_from(model))


def _stored(ctx, digest: str) -> bool:
    path = ctx.storage.preferred.local_path(digest)
    return path is not None and os.path.exists(path)


async def test_deleted_tag_is_kept_for_the_time_machine_window(ctx, client, http):
    h = await client.auth("alice/app")
    digest, _ = await client.push_image("alice/app", "v1", h)
    assert (await http.delete("/v2/alice/app/manifests/v1", headers=h)).status_code == 202
    await _expire_claims_and_temp_tags(ctx)
    report = await gc.collect_garbage(ctx)
    assert report.manifests == 0 and report.blobs == 0
    async with ctx.db.read() as session:
        repo = await content.get_repository(session, "alice", "app")
        assert await content.manifest_exists(session, repo.id, digest)  # restorable


async def test_expired_history_manifests_and_blobs_are_reclaimed_everywhere(ctx, client, http):
    await _window(ctx, "alice", 0)
    h = await client.auth("alice/app")
    digest, raw = await client.push_image("alice/app", "v1", h, layers=2)
    keep, _ = await client.push_image("alice/app", "v2", h)
    blobs = [d["digest"] for d in json.loads(raw)["layers"]] + [json.loads(raw)["config"]["digest"]]
    assert all(_stored(ctx, b) for b in blobs)
    assert (await http.delete("/v2/alice/app/manifests/v1", headers=h)).status_code == 202
    await _expire_claims_and_temp_tags(ctx)

    report = await gc.collect_garbage(ctx)
    assert report.tags == 1 and report.manifests == 1
    assert report.blobs == 3 and report.bytes == 2 * 1024 + json.loads(raw)["config"]["size"]
    assert not any(_stored(ctx, b) for b in blobs)
    r = await http.get(f"/v2/alice/app/manifests/{digest}", headers={**h, "Accept": mt.OCI_MANIFEST})
    assert r.status_code == 404
    r = await http.get("/v2/alice/app/manifests/v2", headers={**h, "Accept": mt.OCI_MANIFEST})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == keep
    assert (await gc.collect_garbage(ctx)).total() == 0  # nothing left to do


async def test_space_comes_back_at_once_after_a_delete(ctx, client, http):
    """Blobs a manifest took over keep no upload claim: a deleted image's space is reclaimed by the
    next pass, not an hour later."""
    await _window(ctx, "alice", 0)
    h = await client.auth("alice/app")
    await client.push_image("alice/app", "v1", h, layers=2)
    assert (await http.delete("/v2/alice/app/manifests/v1", headers=h)).status_code == 202
    report = await gc.collect_garbage(ctx)
    assert report.manifests == 1 and report.blobs == 3
    assert await _count(ctx, Blob) == 0 and await _count(ctx, UploadedBlob) == 0


async def test_a_blob_another_repository_uses_is_kept(ctx, client, http):
    await _window(ctx, "alice", 0)
    h = await client.auth("alice/one")
    layer = os.urandom(2048)
    layer_digest = await client.upload("alice/one", layer, h)
    h2 = await client.auth("alice/two")
    assert await client.upload("alice/two", layer, h2) == layer_digest  # the same bytes: one blob
    for repo, headers in (("alice/one", h), ("alice/two", h2)):
        config = b'{"architecture":"amd64","os":"linux"}'
        manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                    "config": {"mediaType": mt.OCI_CONFIG, "digest": await client.upload(repo, config, headers),
                               "size": len(config)},
                    "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": layer_digest, "size": len(layer)}]}
        r = await http.put(f"/v2/{repo}/manifests/latest", json=manifest,
                           headers={**headers, "Content-Type": mt.OCI_MANIFEST})
        assert r.status_code == 201, r.text
    assert (await http.delete("/v2/alice/one/manifests/latest", headers=h)).status_code == 202
    await _expire_claims_and_temp_tags(ctx)
    report = await gc.collect_garbage(ctx)
    assert report.manifests == 1 and report.blobs == 0  # the config is shared too (same bytes)
    r = await http.get(f"/v2/alice/two/blobs/{layer_digest}", headers=h2)
    assert r.status_code == 200 and r.content == layer


async def test_a_fresh_upload_is_claimed_until_its_claim_expires(ctx, client, http):
    h = await client.auth("alice/app")
    digest = await client.upload("alice/app", os.urandom(512), h)
    assert (await gc.collect_garbage(ctx)).blobs == 0
    assert (await http.head(f"/v2/alice/app/blobs/{digest}", headers=h)).status_code == 200
    await _expire_claims_and_temp_tags(ctx)
    report = await gc.collect_garbage(ctx)
    assert report.blobs == 1 and not _stored(ctx, digest)
    assert (await http.head(f"/v2/alice/app/blobs/{digest}", headers=h)).status_code == 404


async def test_an_index_and_its_children_go_together(ctx, client, http):
    await _window(ctx, "alice", 0)
    h = await client.auth("alice/multi")
    children = [await client.push_image("alice/multi", None, h) for _ in range(2)]
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
             "manifests": [{"mediaType": mt.OCI_MANIFEST, "digest": d, "size": len(raw),
                            "platform": {"architecture": arch, "os": "linux"}}
                           for (d, raw), arch in zip(children, ("amd64", "arm64"))]}
    r = await http.put("/v2/alice/multi/manifests/latest", json=index, headers={**h, "Content-Type": mt.OCI_INDEX})
    assert r.status_code == 201
    await _expire_claims_and_temp_tags(ctx)
    report = await gc.collect_garbage(ctx)
    assert report.manifests == 0 and report.blobs == 0  # the tagged index holds its children
    r = await http.get(f"/v2/alice/multi/manifests/{children[0][0]}", headers={**h, "Accept": mt.OCI_MANIFEST})
    assert r.status_code == 200

    assert (await http.delete("/v2/alice/multi/manifests/latest", headers=h)).status_code == 202
    report = await gc.collect_garbage(ctx)
    assert report.manifests == 3 and report.blobs == 4
    assert await _count(ctx, Manifest) == 0 and await _count(ctx, Blob) == 0


async def test_referrers_live_as_long_as_their_subject(ctx, client, http):
    await _window(ctx, "alice", 0)
    h = await client.auth("alice/signed")
    subject, raw = await client.push_image("alice/signed", "v1", h)
    empty = b"{}"
    sig = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
           "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": await client.upload(
               "alice/signed", empty, h), "size": 2},
           "layers": [], "subject": {"mediaType": mt.OCI_MANIFEST, "digest": subject, "size": len(raw)}}
    r = await http.put(f"/v2/alice/signed/manifests/{digest_of(json.dumps(sig).encode())}",
                       content=json.dumps(sig).encode(), headers={**h, "Content-Type": mt.OCI_MANIFEST})
    assert r.status_code == 201, r.text
    async with ctx.db.write() as session:  # past the grace a referrer gets to wait for its subject
        await session.execute(update(Tag).where(Tag.hidden.is_(True)).values(lifetime_start_ms=now_ms() - 7200_000))
    await _expire_claims_and_temp_tags(ctx)
    assert (await gc.collect_garbage(ctx)).manifests == 0  # subject alive: the signature stays
    assert (await http.delete("/v2/alice/signed/manifests/v1", headers=h)).status_code == 202
    report = await gc.collect_garbage(ctx)
    assert report.manifests == 2
    assert await _count(ctx, Manifest) == 0


async def test_a_push_racing_a_deletion_gets_a_retryable_error(ctx, client, http):
    h = await client.auth("alice/app")
    data = os.urandom(700)
    digest = digest_of(data)
    async with ctx.db.write() as session:
        session.add(BlobDeletion(digest=digest))
    r = await http.post("/v2/alice/app/blobs/uploads/", params={"digest": digest}, content=data, headers=h)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert error_code(r) == "BLOB_UPLOAD_INVALID"
    async with ctx.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Blob).where(Blob.digest == digest)) == 0
    # The deletion finishes (here: by a later pass, as if the first died); then the push succeeds.
    async with ctx.db.write() as session:
        await session.execute(update(BlobDeletion).values(started=utcnow() - timedelta(minutes=5)))
    await gc.collect_garbage(ctx)
    assert await _count(ctx, BlobDeletion) == 0
    assert await client.upload("alice/app", data, h) == digest
    assert (await http.get(f"/v2/alice/app/blobs/{digest}", headers=h)).content == data


async def test_a_push_finds_its_bytes_gone_and_is_told_to_retry(ctx, client, http, monkeypatch):
    """The bytes went between the storage commit and the database record (a pass finished a
    deletion of the same digest in between): the push must not record a blob without bytes."""
    h = await client.auth("alice/app")
    data = os.urandom(300)
    store = ctx.storage.preferred
    original = store.commit_upload

    async def commit_then_lose(upload_id, metadata, digest, length):
        await original(upload_id, metadata, digest, length)
        await store.delete(digest)

    monkeypatch.setattr(store, "commit_upload", commit_then_lose)
    r = await http.post("/v2/alice/app/blobs/uploads/", params={"digest": digest_of(data)}, content=data, headers=h)
    assert r.status_code == 503 and error_code(r) == "BLOB_UPLOAD_INVALID"
    assert await _count(ctx, Blob) == 0


async def test_stale_uploads_are_cleaned(ctx, client, http):
    h = await client.auth("alice/app")
    r = await http.post("/v2/alice/app/blobs/uploads/", headers=h)
    location = r.headers["Location"]
    assert (await http.patch(location, content=b"x" * 100, headers=h)).status_code == 202
    async with ctx.db.write() as session:
        await session.execute(update(BlobUpload).values(created=utcnow() - timedelta(days=3)))
    report = await gc.collect_garbage(ctx)
    assert report.uploads == 1 and await _count(ctx, BlobUpload) == 0
    r = await http.patch(location, content=b"y", headers=h)
    assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN"


async def test_deleted_repository_is_purged(ctx, client, http):
    h = await client.auth("alice/gone")
    digest, _ = await client.push_image("alice/gone", "v1", h, layers=2)
    async with ctx.db.write() as session:
        repo = await content.get_repository(session, "alice", "gone")
        await mark_for_deletion(session, repo.id)
    # The name is free at once; a new repository of that name shares nothing with the old one.
    h = await client.auth("alice/gone")
    await client.push_image("alice/gone", "v1", h)
    report = await gc.collect_garbage(ctx)
    assert report.repositories == 1 and report.manifests == 1 and report.blobs == 3
    async with ctx.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Repository)) == 1
    r = await http.get("/v2/alice/gone/manifests/v1", headers={**h, "Accept": mt.OCI_MANIFEST})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] != digest


async def test_deleted_namespace_goes_after_its_repositories(ctx, client, http):
    async with ctx.db.write() as session:
        alice = await session.scalar(select(User).where(User.username == "alice"))
        await orgs.create_org(session, "acme", "acme@example.com", alice)
    h = await client.auth("acme/app")
    await client.push_image("acme/app", "v1", h)
    async with ctx.db.write() as session:
        org = await orgs.get_org(session, "acme")
        org_id = org.id
        await superuser.delete_org(session, org)
    async with ctx.db.read() as session:
        assert await orgs.get_org(session, "acme") is None  # the name is free at once
        assert await session.scalar(select(func.count()).select_from(DeletedNamespace)) == 1
    report = await gc.collect_garbage(ctx)
    assert report.repositories == 1 and report.namespaces == 1 and report.blobs == 2
    async with ctx.db.read() as session:
        assert await session.get(User, org_id) is None
        assert await session.scalar(select(func.count()).select_from(DeletedNamespace)) == 0


async def test_new_namespaces_get_the_configured_time_machine_window(config):
    from quaymaster.accounts import service as accounts
    from quaymaster.app import start_context
    from quaymaster.settings.model import settings_from_dict

    context = await start_context(settings_from_dict({**config, "DEFAULT_TAG_EXPIRATION": "1d"}))
    try:
        async with context.db.write() as session:
            carol = await accounts.create_user(session, "carol", "carol@example.com", "carol-password")
            org = await orgs.create_org(session, "carolco", None, carol)
            assert carol.removed_tag_expiration_s == org.removed_tag_expiration_s == 86400
    finally:
        await context.db.dispose()


async def test_one_failing_repository_does_not_stop_the_pass(ctx, client, http, monkeypatch):
    await _window(ctx, "alice", 0)
    h1, h2 = await client.auth("alice/bad"), await client.auth("alice/good")
    await client.push_image("alice/bad", "v1", h1)
    await client.push_image("alice/good", "v1", h2)
    for repo, h in (("alice/bad", h1), ("alice/good", h2)):
        assert (await http.delete(f"/v2/{repo}/manifests/v1", headers=h)).status_code == 202
    async with ctx.db.read() as session:
        bad = (await content.get_repository(session, "alice", "bad")).id
    original = gc.collect_repository

    async def broken(ctx_, repo_id, *args, **kwargs):
        if repo_id == bad:
            raise RuntimeError("simulated failure")
        await original(ctx_, repo_id, *args, **kwargs)

    monkeypatch.setattr(gc, "collect_repository", broken)
    report = await gc.collect_garbage(ctx)
    assert report.failed == 1 and report.manifests == 1 and report.blobs == 2
    monkeypatch.setattr(gc, "collect_repository", original)
    report = await gc.collect_garbage(ctx)
    assert report.failed == 0 and report.manifests == 1 and report.blobs == 2


async def test_expired_instance_keys_are_removed_by_the_collector(ctx):
    from quaymaster.accounts.models import ServiceKey
    from quaymaster.workers import gc_pass

    stale = InstanceKeys(ctx.db, ctx.keys.service, ctx.keys.audience, 60)
    await stale.register()  # a restart or a one-off worker run left this one
    admin_key = "admin-made"
    async with ctx.db.write() as session:
        session.add(ServiceKey(name="made in the panel", kid=admin_key, service=ctx.keys.service, jwk={},
                               expiration_date=utcnow() - timedelta(days=30), approval_type="Super User API"))
        await session.execute(update(ServiceKey).where(ServiceKey.kid == stale.kid)
                              .values(expiration_date=utcnow() - timedelta(days=2)))
    await gc_pass(ctx)
    async with ctx.db.read() as session:
        kids = set((await session.scalars(select(ServiceKey.kid))).all())
    assert stale.kid not in kids
    assert ctx.keys.kid in kids and admin_key in kids  # the live key and keys a superuser made stay
