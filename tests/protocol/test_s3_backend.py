"""The /v2 upload and pull flows with the storage on S3 (Swift's s3api on loopback), not on disk.

Pulls answer 302 to a presigned URL, or stream the bytes through with `proxy_downloads: true`.
"""

import itertools
import json
import os
import uuid

import httpx
import pytest
from support.s3server import S3Server, shared_s3_server

from quaymaster.oci import mediatypes as mt

from .v2client import digest_of, error_code

REPO = "alice/s3blobs"
MiB = 1024 * 1024


@pytest.fixture(scope="session")
def s3(request) -> S3Server:
    return shared_s3_server(request)


@pytest.fixture
def db_uri(sqlite_template, tmp_path) -> str:
    """SQLite only: this module is about the storage backend, the database suites cover both."""
    import shutil

    path = tmp_path / "quaymaster.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["presigned", "proxied"])
def mode(request) -> str:
    return request.param


@pytest.fixture
def prefix() -> str:
    return f"registry/{uuid.uuid4().hex}"


@pytest.fixture
def config(config, s3, mode, prefix) -> dict:
    """The base test config, on one S3 location."""
    params = s3.storage_params(f"/{prefix}", proxy_downloads=mode == "proxied")
    return {**config, "DISTRIBUTED_STORAGE_CONFIG": {"default": ["S3Storage", params]}, "MAXIMUM_LAYER_SIZE": "64M"}


@pytest.fixture
async def headers(client):
    return await client.auth(REPO)


async def pull_blob(client, headers, digest: str, mode: str, extra: dict | None = None) -> httpx.Response:
    """GET a blob the way a client does: follow the redirect to the object store if there is one."""
    r = await client.http.get(f"/v2/{REPO}/blobs/{digest}", headers={**headers, **(extra or {})})
    if mode == "presigned":
        assert r.status_code == 302, r.text
        assert r.headers["Docker-Content-Digest"] == digest
        url = r.headers["Location"]
        assert url.startswith("http://127.0.0.1:") and "X-Amz-Signature=" in url
        async with httpx.AsyncClient(trust_env=False) as direct:
            return await direct.get(url, headers=extra or {})
    return r


async def test_chunked_push_then_pull(client, headers, mode, s3, prefix):
    data = os.urandom(7 * MiB + 3)
    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", headers=headers)
    assert r.status_code == 202
    location = r.headers["Location"]
    cuts = [0, 3 * MiB, 5 * MiB + 1, 7 * MiB]
    for start, end in itertools.pairwise(cuts):
        r = await client.http.patch(location, content=data[start:end],
                                    headers={**headers, "Content-Range": f"{start}-{end - 1}"})
        assert r.status_code == 202 and r.headers["Range"] == f"0-{end - 1}"
    # While the upload is open its bytes live under uploads/, nowhere else.
    assert s3.keys(f"{prefix}/uploads/") and not s3.keys(f"{prefix}/sha256/")
    digest = digest_of(data)
    r = await client.http.put(location, params={"digest": digest}, content=data[7 * MiB:], headers=headers)
    assert r.status_code == 201, r.text
    assert s3.keys(f"{prefix}/uploads/") == []
    assert s3.keys(f"{prefix}/sha256/") == [f"{prefix}/sha256/{digest[7:9]}/{digest[7:]}"]

    r = await client.http.head(f"/v2/{REPO}/blobs/{digest}", headers=headers)
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(data)) and r.content == b""
    r = await pull_blob(client, headers, digest, mode)
    assert r.status_code == 200 and r.content == data
    if mode == "proxied":
        assert r.headers["Content-Length"] == str(len(data))
        assert r.headers["Docker-Content-Digest"] == digest
    r = await pull_blob(client, headers, digest, mode, {"Range": "bytes=5242879-5242888"})
    assert r.status_code == 206 and r.content == data[5242879:5242889]
    assert r.headers["Content-Range"] == f"bytes 5242879-5242888/{len(data)}"


async def test_push_and_pull_an_image(client, headers, mode):
    _, raw = await client.push_image(REPO, "latest", headers, layers=2)
    r = await client.http.get(f"/v2/{REPO}/manifests/latest", headers={**headers, "Accept": mt.OCI_MANIFEST})
    assert r.status_code == 200 and r.content == raw
    manifest = json.loads(raw)
    for desc in [manifest["config"], *manifest["layers"]]:
        r = await pull_blob(client, headers, desc["digest"], mode)
        assert r.status_code == 200 and len(r.content) == desc["size"]
        assert digest_of(r.content) == desc["digest"]


async def test_hash_rebuilt_from_the_object_store(client, ctx, headers, mode):
    """A chunk landing on another node re-reads the upload so far from S3 (parts and tail)."""
    data = os.urandom(6 * MiB)
    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", headers=headers)
    location = r.headers["Location"]
    await client.http.patch(location, content=data[:5 * MiB + 7], headers=headers)
    ctx.hashes.drop(r.headers["Docker-Upload-UUID"])
    await client.http.patch(location, content=data[5 * MiB + 7:], headers=headers)
    ctx.hashes.drop(r.headers["Docker-Upload-UUID"])
    r = await client.http.put(location, params={"digest": digest_of(data)}, headers=headers)
    assert r.status_code == 201, r.text
    r = await pull_blob(client, headers, digest_of(data), mode)
    assert r.content == data


async def test_zero_byte_blob(client, headers, mode):
    digest = await client.upload(REPO, b"", headers)
    r = await pull_blob(client, headers, digest, mode)
    assert r.status_code == 200 and r.content == b""


async def test_wrong_digest_and_cancel_leave_nothing(client, headers, mode, s3, prefix):
    data = os.urandom(MiB)
    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": digest_of(b"other")},
                               content=data, headers=headers)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", headers=headers)
    location = r.headers["Location"]
    await client.http.patch(location, content=data, headers=headers)
    assert s3.keys(f"{prefix}/uploads/")
    r = await client.http.delete(location, headers=headers)
    assert r.status_code == 204
    assert s3.keys(prefix) == []


async def test_blob_missing_from_the_bucket(client, headers, mode, s3, prefix):
    digest = await client.upload(REPO, b"soon gone", headers)
    s3.client.delete_object(Bucket=s3.bucket, Key=f"{prefix}/sha256/{digest[7:9]}/{digest[7:]}")
    r = await client.http.get(f"/v2/{REPO}/blobs/{digest}", headers=headers)
    if mode == "presigned":  # the object store answers the client itself
        assert r.status_code == 302
    else:
        assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"


@pytest.mark.parametrize("mode", ["proxied"])  # ranges on presigned URLs are the object store's business
async def test_proxied_ranges(client, headers, mode):
    data = os.urandom(1000)
    digest = await client.upload(REPO, data, headers)
    url = f"/v2/{REPO}/blobs/{digest}"
    r = await client.http.get(url, headers={**headers, "Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:] and r.headers["Content-Range"] == "bytes 990-999/1000"
    r = await client.http.get(url, headers={**headers, "Range": "bytes=990-5000"})
    assert r.status_code == 206 and r.content == data[990:]
    r = await client.http.get(url, headers={**headers, "Range": "bytes=1000-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */1000"
    r = await client.http.get(url, headers={**headers, "Range": "bytes=0-1,5-6"})  # several: whole blob
    assert r.status_code == 200 and r.content == data
    r = await client.http.head(url, headers={**headers, "Range": "bytes=10-19"})
    assert r.status_code == 206 and r.headers["Content-Length"] == "10" and r.content == b""
