"""Storage replication across named locations: pushes land in the preferred location, the
replication pass copies every referenced blob to DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS, and pulls
fall back to another location when the nearest copy is gone.

Locations are real: a directory ("local_us") and buckets on Swift's s3api ("s3_eu", "s3_us"),
on SQLite and on PostgreSQL.
"""

import asyncio
import hashlib
import json
import logging
import os
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, select, update
from support.s3server import S3Server, shared_s3_server

from quaymaster.app import start_context
from quaymaster.content import replication
from quaymaster.content.models import Blob, BlobDeletion, BlobPlacement, UploadedBlob
from quaymaster.content.replication import replicate_pending
from quaymaster.oci import mediatypes as mt

from .v2client import digest_of, error_code

REPO = "alice/replicated"
MiB = 1024 * 1024
BUCKETS = ("qm-replication-eu", "qm-replication-us")


@pytest.fixture(scope="session")
def s3(request) -> S3Server:
    server = shared_s3_server(request)
    existing = {b["Name"] for b in server.client.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS:
        if bucket not in existing:
            server.client.create_bucket(Bucket=bucket)
    return server


@pytest.fixture
def layout() -> str:
    """local_s3: local_us (preferred) + s3_eu; s3_s3: s3_us (preferred) + s3_eu, two buckets."""
    return "local_s3"


@pytest.fixture
def default_locations(layout) -> list[str]:
    return ["local_us", "s3_eu"] if layout == "local_s3" else ["s3_us", "s3_eu"]


@pytest.fixture
def prefix() -> str:
    return f"registry/{uuid.uuid4().hex}"


@pytest.fixture
def local_dir(tmp_path) -> Path:
    return tmp_path / "local_us"


@pytest.fixture
def config(config, s3, layout, default_locations, prefix, local_dir) -> dict:
    """The base test config, on these storage locations."""
    eu = {**s3.storage_params(f"/{prefix}", proxy_downloads=layout == "local_s3"), "s3_bucket": BUCKETS[0]}
    if layout == "local_s3":
        locations = {"local_us": ["LocalStorage", {"storage_path": str(local_dir)}], "s3_eu": ["S3Storage", eu]}
        preference = ["local_us", "s3_eu"]
    else:
        us = {**s3.storage_params(f"/{prefix}", proxy_downloads=True), "s3_bucket": BUCKETS[1]}
        locations = {"s3_us": ["S3Storage", us], "s3_eu": ["S3Storage", eu]}
        preference = ["s3_us", "s3_eu"]
    return {**config, "DISTRIBUTED_STORAGE_CONFIG": locations, "DISTRIBUTED_STORAGE_PREFERENCE": preference,
            "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS": default_locations, "FEATURE_STORAGE_REPLICATION": True,
            "MAXIMUM_LAYER_SIZE": "64M"}


@pytest.fixture
async def headers(client):
    return await client.auth(REPO)


# --- helpers -----------------------------------------------------------------------------------

def key(prefix: str, digest: str) -> str:
    return f"{prefix}/sha256/{digest[7:9]}/{digest[7:]}"


def local_file(local_dir: Path, digest: str) -> Path:
    return local_dir / "sha256" / digest[7:9] / digest[7:]


def bucket_digest(s3: S3Server, bucket: str, prefix: str, digest: str) -> str:
    body = s3.client.get_object(Bucket=bucket, Key=key(prefix, digest))["Body"]
    hasher = hashlib.sha256()
    for chunk in iter(lambda: body.read(MiB), b""):
        hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


def bucket_keys(s3: S3Server, bucket: str, prefix: str) -> list[str]:
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


async def placements(ctx) -> dict[str, set[str]]:
    async with ctx.db.read() as session:
        rows = (await session.execute(
            select(Blob.digest, BlobPlacement.location).join(BlobPlacement, BlobPlacement.blob_id == Blob.id))).all()
    found: dict[str, set[str]] = {}
    for digest, location in rows:
        found.setdefault(digest, set()).add(location)
    return found


async def push_chunked(client, data: bytes, headers: dict, chunk: int = 3 * MiB) -> str:
    """POST, PATCH in `chunk`-sized pieces, PUT ?digest= — as a client pushes a big layer."""
    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", headers=headers)
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    for start in range(0, len(data), chunk):
        piece = data[start:start + chunk]
        r = await client.http.patch(location, content=piece, headers={
            **headers, "Content-Range": f"{start}-{start + len(piece) - 1}"})
        assert r.status_code == 202, r.text
    digest = digest_of(data)
    r = await client.http.put(location, params={"digest": digest}, headers=headers)
    assert r.status_code == 201, r.text
    return digest


async def push_image(client, headers: dict, big: bytes) -> dict[str, bytes]:
    """An image with a small layer and a big chunked one; returns each blob's bytes by digest."""
    blobs = {}
    small = os.urandom(4096)
    blobs[await client.upload(REPO, small, headers)] = small
    blobs[await push_chunked(client, big, headers)] = big
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
    config_digest = await client.upload(REPO, config, headers)
    blobs[config_digest] = config
    layers = [{"mediaType": mt.OCI_LAYER_GZIP, "digest": d, "size": len(b)} for d, b in blobs.items()
              if d != config_digest]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                           "config": {"mediaType": mt.OCI_CONFIG, "digest": config_digest, "size": len(config)},
                           "layers": layers}).encode()
    r = await client.http.put(f"/v2/{REPO}/manifests/latest", content=manifest,
                              headers={**headers, "Content-Type": mt.OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return blobs


# --- local_us (preferred) + s3_eu --------------------------------------------------------------

async def test_push_replicate_and_pull_from_the_replica(ctx, client, headers, s3, prefix, local_dir):
    big = os.urandom(11 * MiB + 17)
    blobs = await push_image(client, headers, big)

    # The push wrote to the preferred location only.
    assert await placements(ctx) == {d: {"local_us"} for d in blobs}
    for digest, data in blobs.items():
        assert local_file(local_dir, digest).read_bytes() == data
    assert bucket_keys(s3, BUCKETS[0], prefix) == []

    assert await replicate_pending(ctx) == len(blobs)

    assert await placements(ctx) == {d: {"local_us", "s3_eu"} for d in blobs}
    assert bucket_keys(s3, BUCKETS[0], prefix) == sorted(key(prefix, d) for d in blobs)  # no upload leftovers
    for digest in blobs:
        assert bucket_digest(s3, BUCKETS[0], prefix, digest) == digest
    assert await replicate_pending(ctx) == 0  # nothing left to do

    # The nearest copy is lost: pulls are served from s3_eu (streamed through: proxy_downloads).
    big_digest = digest_of(big)
    local_file(local_dir, big_digest).unlink()
    url = f"/v2/{REPO}/blobs/{big_digest}"
    r = await client.http.get(url, headers=headers)
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == big_digest
    assert r.headers["Content-Length"] == str(len(big)) and digest_of(r.content) == big_digest
    r = await client.http.get(url, headers={**headers, "Range": "bytes=5242870-5242889"})
    assert r.status_code == 206 and r.content == big[5242870:5242890]
    r = await client.http.head(url, headers=headers)
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(big))
    # The other blobs are still read from local_us.
    small_digest = next(d for d, b in blobs.items() if len(b) == 4096)
    r = await client.http.get(f"/v2/{REPO}/blobs/{small_digest}", headers=headers)
    assert r.status_code == 200 and r.content == blobs[small_digest]

    # Gone from every location: 404, not a 5xx.
    s3.client.delete_object(Bucket=BUCKETS[0], Key=key(prefix, big_digest))
    r = await client.http.get(url, headers=headers)
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"


async def test_corrupt_source_is_never_recorded(ctx, client, headers, s3, prefix, local_dir):
    good = os.urandom(3000)
    small_bad, big_bad = os.urandom(3000), os.urandom(2 * MiB + 5)
    digests = [await client.upload(REPO, data, headers) for data in (good, small_bad, big_bad)]
    # Bit rot on disk: same size, other bytes (the upload claims keep the blobs referenced).
    for digest, data in zip(digests[1:], (small_bad, big_bad), strict=True):
        local_file(local_dir, digest).write_bytes(os.urandom(len(data)))
    truncated = await client.upload(REPO, os.urandom(5000), headers)
    with local_file(local_dir, truncated).open("r+b") as fh:
        fh.truncate(100)

    assert await replicate_pending(ctx) == 1  # only the intact blob

    found = await placements(ctx)
    assert found[digests[0]] == {"local_us", "s3_eu"}
    for digest in (*digests[1:], truncated):
        assert found[digest] == {"local_us"}
    # Nothing of the bad copies reached the bucket, not even upload parts.
    assert bucket_keys(s3, BUCKETS[0], prefix) == [key(prefix, digests[0])]
    # They stay pending: the next pass tries again, and copies once the source is repaired.
    local_file(local_dir, digests[1]).write_bytes(small_bad)
    assert await replicate_pending(ctx) == 1
    assert bucket_digest(s3, BUCKETS[0], prefix, digests[1]) == digests[1]


async def test_blob_collected_while_copying_leaves_no_copy(ctx, client, headers, s3, prefix, monkeypatch):
    data = os.urandom(2 * MiB)
    digest = await push_chunked(client, data, headers, chunk=MiB)
    target = ctx.storage.location("s3_eu")
    real_commit = target.commit_upload

    async def commit_then_collect(upload_id, metadata, blob_digest, length):
        await real_commit(upload_id, metadata, blob_digest, length)
        # Garbage collection deletes the blob row right after the copy landed.
        async with ctx.db.write() as session:
            blob_id = await session.scalar(select(Blob.id).where(Blob.digest == blob_digest))
            await session.execute(delete(UploadedBlob).where(UploadedBlob.blob_id == blob_id))
            await session.execute(delete(BlobPlacement).where(BlobPlacement.blob_id == blob_id))
            await session.execute(delete(Blob).where(Blob.id == blob_id))

    monkeypatch.setattr(target, "commit_upload", commit_then_collect)
    assert await replicate_pending(ctx) == 0
    assert await placements(ctx) == {}
    assert bucket_keys(s3, BUCKETS[0], prefix) == []  # the orphan copy was removed
    async with ctx.db.read() as session:
        assert (await session.scalars(select(BlobDeletion))).all() == []
    assert digest  # pushed and gone


async def test_two_workers_at_once(ctx, client, headers, s3, prefix, caplog):
    """Two nodes replicating the same blobs together: duplicates are harmless."""
    blobs = await push_image(client, headers, os.urandom(6 * MiB))
    other = await start_context(ctx.settings, run_migrations=False, register_key=False)
    try:
        with caplog.at_level(logging.WARNING, logger=replication.__name__):
            made = await asyncio.gather(replicate_pending(ctx, limit=2), replicate_pending(other, limit=2))
    finally:
        await other.db.dispose()
    assert [r.getMessage() for r in caplog.records if r.name == replication.__name__] == []
    assert sum(made) == len(blobs)  # each placement recorded once
    assert await placements(ctx) == {d: {"local_us", "s3_eu"} for d in blobs}
    assert bucket_keys(s3, BUCKETS[0], prefix) == sorted(key(prefix, d) for d in blobs)
    for digest in blobs:
        assert bucket_digest(s3, BUCKETS[0], prefix, digest) == digest
    assert await replicate_pending(ctx) == 0


async def test_only_referenced_blobs_are_copied(ctx, client, headers, s3, prefix):
    kept = await client.upload(REPO, b"claimed and kept", headers)
    expired = await client.upload(REPO, b"claim ran out", headers)
    async with ctx.db.write() as session:
        blob_id = await session.scalar(select(Blob.id).where(Blob.digest == expired))
        await session.execute(update(UploadedBlob).where(UploadedBlob.blob_id == blob_id)
                              .values(expires_at=datetime(2000, 1, 1)))
    assert await replicate_pending(ctx, limit=1) == 1
    assert bucket_keys(s3, BUCKETS[0], prefix) == [key(prefix, kept)]


@pytest.mark.parametrize("default_locations", [[]])
async def test_no_default_locations_logs_once(ctx, caplog, monkeypatch):
    monkeypatch.setattr(replication, "_warned_no_targets", False)
    with caplog.at_level(logging.WARNING, logger=replication.__name__):
        assert await replicate_pending(ctx) == 0
        assert await replicate_pending(ctx) == 0
    assert [r.getMessage() for r in caplog.records].count(
        "FEATURE_STORAGE_REPLICATION is on but DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS is empty: nothing to replicate"
    ) == 1


# --- two buckets: s3_us (preferred, proxied) + s3_eu (presigned) --------------------------------

@pytest.mark.parametrize("layout", ["s3_s3"])
async def test_two_object_stores(ctx, client, headers, s3, prefix):
    big = os.urandom(6 * MiB + 1)
    blobs = await push_image(client, headers, big)
    assert bucket_keys(s3, BUCKETS[1], prefix) == sorted(key(prefix, d) for d in blobs)
    assert bucket_keys(s3, BUCKETS[0], prefix) == []

    assert await replicate_pending(ctx) == len(blobs)
    assert await placements(ctx) == {d: {"s3_us", "s3_eu"} for d in blobs}
    for digest in blobs:
        assert bucket_digest(s3, BUCKETS[0], prefix, digest) == digest
    assert await replicate_pending(ctx) == 0

    # Lost in s3_us: the pull is redirected to s3_eu instead.
    digest = digest_of(big)
    s3.client.delete_object(Bucket=BUCKETS[1], Key=key(prefix, digest))
    r = await client.http.get(f"/v2/{REPO}/blobs/{digest}", headers=headers)
    assert r.status_code == 302, r.text
    assert f"/{BUCKETS[0]}/" in r.headers["Location"]
    async with httpx.AsyncClient(trust_env=False) as direct:
        r = await direct.get(r.headers["Location"])
    assert r.status_code == 200 and digest_of(r.content) == digest
