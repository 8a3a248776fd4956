"""Blob downloads and every upload flavour, with the error paths the spec defines."""

import hashlib
import os

import pytest

from .v2client import digest_of, error_code

REPO = "alice/blobs"


@pytest.fixture
async def headers(client):
    return await client.auth(REPO)


async def test_monolithic_upload_then_head_get_and_range(client, headers):
    data = os.urandom(5000)
    digest = await client.upload(REPO, data, headers)
    r = await client.http.head(f"/v2/{REPO}/blobs/{digest}", headers=headers)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "5000"
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.content == b""
    r = await client.http.get(f"/v2/{REPO}/blobs/{digest}", headers=headers)
    assert r.status_code == 200 and r.content == data
    r = await client.http.get(f"/v2/{REPO}/blobs/{digest}", headers={**headers, "Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["Content-Range"] == "bytes 100-199/5000"


async def test_post_then_put_in_one_piece(client, headers):
    data = os.urandom(3000)
    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", headers=headers)
    assert r.status_code == 202
    assert r.headers["Location"].startswith(f"/v2/{REPO}/blobs/uploads/")
    assert r.headers["Docker-Upload-UUID"] in r.headers["Location"]
    r = await client.http.put(r.headers["Location"], params={"digest": digest_of(data)}, content=data,
                              headers=headers)
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/{REPO}/blobs/{digest_of(data)}"


async def test_chunked_upload_with_status_and_out_of_order_chunk(client, headers):
    data = os.urandom(10_000)
    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", headers=headers)
    location = r.headers["Location"]
    r = await client.http.patch(location, content=data[:4000],
                                headers={**headers, "Content-Range": "0-3999", "Content-Type": "application/octet-stream"})
    assert r.status_code == 202 and r.headers["Range"] == "0-3999"
    # A chunk that skips ahead is refused with the range the server holds.
    r = await client.http.patch(location, content=data[5000:6000], headers={**headers, "Content-Range": "5000-5999"})
    assert r.status_code == 416 and r.headers["Range"] == "0-3999"
    # A chunk that repeats old bytes is refused too.
    r = await client.http.patch(location, content=data[0:1000], headers={**headers, "Content-Range": "0-999"})
    assert r.status_code == 416
    r = await client.http.patch(location, content=data[4000:9000], headers={**headers, "Content-Range": "4000-8999"})
    assert r.status_code == 202 and r.headers["Range"] == "0-8999"
    r = await client.http.get(location, headers=headers)
    assert r.status_code == 204 and r.headers["Range"] == "0-8999"
    r = await client.http.put(location, params={"digest": digest_of(data)}, content=data[9000:], headers=headers)
    assert r.status_code == 201
    r = await client.http.get(f"/v2/{REPO}/blobs/{digest_of(data)}", headers=headers)
    assert r.content == data


async def test_streamed_patch_without_content_range(client, headers):
    chunks = [os.urandom(64 * 1024) for _ in range(4)]

    async def body():
        for chunk in chunks:
            yield chunk

    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", headers=headers)
    location = r.headers["Location"]
    r = await client.http.patch(location, content=body(), headers=headers)
    assert r.status_code == 202 and r.headers["Range"] == f"0-{4 * 64 * 1024 - 1}"
    data = b"".join(chunks)
    r = await client.http.put(location, params={"digest": digest_of(data)}, headers=headers)
    assert r.status_code == 201


async def test_malformed_content_range(client, headers):
    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", headers=headers)
    r = await client.http.patch(r.headers["Location"], content=b"abc", headers={**headers, "Content-Range": "x-y"})
    assert r.status_code == 416


async def test_hash_survives_a_lost_running_state(client, ctx, headers):
    """Chunks landing on another node (or after a restart) rebuild the hash from storage."""
    data = os.urandom(8000)
    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", headers=headers)
    location = r.headers["Location"]
    await client.http.patch(location, content=data[:3000], headers=headers)
    ctx.hashes.drop(r.headers["Docker-Upload-UUID"])
    await client.http.patch(location, content=data[3000:], headers=headers)
    r = await client.http.put(location, params={"digest": digest_of(data)}, headers=headers)
    assert r.status_code == 201


async def test_wrong_digest_is_refused_and_nothing_becomes_visible(client, headers):
    data = os.urandom(2000)
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": wrong}, content=data,
                               headers=headers)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    for digest in (wrong, digest_of(data)):
        r = await client.http.head(f"/v2/{REPO}/blobs/{digest}", headers=headers)
        assert r.status_code == 404


async def test_sha512_digest_is_verified(client, headers):
    data = os.urandom(1500)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": digest}, content=data,
                               headers=headers)
    assert r.status_code == 201
    r = await client.http.get(f"/v2/{REPO}/blobs/{digest}", headers=headers)
    assert r.content == data


async def test_malformed_digests(client, headers):
    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": "sha256:xyz"}, content=b"a",
                               headers=headers)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    r = await client.http.get(f"/v2/{REPO}/blobs/sha256:../../etc/passwd", headers=headers)
    assert r.status_code in (400, 404)
    r = await client.http.get(f"/v2/{REPO}/blobs/md5:abc", headers=headers)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


async def test_missing_blob_and_unknown_upload(client, headers):
    r = await client.http.head(f"/v2/{REPO}/blobs/{digest_of(b'never uploaded')}", headers=headers)
    assert r.status_code == 404
    r = await client.http.get(f"/v2/{REPO}/blobs/{digest_of(b'never uploaded')}", headers=headers)
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"
    r = await client.http.get(f"/v2/{REPO}/blobs/uploads/00000000-0000-0000-0000-000000000000", headers=headers)
    assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN"
    r = await client.http.patch(f"/v2/{REPO}/blobs/uploads/not-a-uuid", content=b"x", headers=headers)
    assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN"


async def test_cancel_upload(client, headers):
    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", headers=headers)
    location = r.headers["Location"]
    await client.http.patch(location, content=b"partial", headers=headers)
    r = await client.http.delete(location, headers=headers)
    assert r.status_code == 204
    r = await client.http.get(location, headers=headers)
    assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN"


async def test_layer_size_limit(client, headers):
    data = os.urandom(1024 * 1024 + 1)  # MAXIMUM_LAYER_SIZE is 1M in these tests
    r = await client.http.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": digest_of(data)}, content=data,
                               headers=headers)
    assert r.status_code == 413 and error_code(r) == "SIZE_INVALID"
    r = await client.http.head(f"/v2/{REPO}/blobs/{digest_of(data)}", headers=headers)
    assert r.status_code == 404


async def test_blob_is_only_visible_in_repositories_it_is_linked_to(client, headers):
    digest = await client.upload(REPO, os.urandom(100), headers)
    other = await client.auth("alice/other")
    r = await client.http.head(f"/v2/alice/other/blobs/{digest}", headers=other)
    assert r.status_code == 404


async def test_cross_repo_mount_needs_read_access_to_the_source(client, headers):
    digest = await client.upload(REPO, os.urandom(100), headers)
    # alice may read her own source: mounted.
    target = {"Authorization": f"Bearer {await client.token(f'repository:alice/target:pull,push repository:{REPO}:pull')}"}
    r = await client.http.post("/v2/alice/target/blobs/uploads/", params={"mount": digest, "from": REPO},
                               headers=target)
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/alice/target/blobs/{digest}"
    r = await client.http.head(f"/v2/alice/target/blobs/{digest}", headers=target)
    assert r.status_code == 200
    # bob may not read alice's private repository: falls back to a normal upload.
    bob = {"Authorization": f"Bearer {await client.token(f'repository:bob/steal:pull,push repository:{REPO}:pull', user='bob')}"}
    r = await client.http.post("/v2/bob/steal/blobs/uploads/", params={"mount": digest, "from": REPO}, headers=bob)
    assert r.status_code == 202
    r = await client.http.head(f"/v2/bob/steal/blobs/{digest}", headers=bob)
    assert r.status_code == 404


async def test_blob_delete_is_unsupported(client, headers):
    digest = await client.upload(REPO, os.urandom(100), headers)
    r = await client.http.delete(f"/v2/{REPO}/blobs/{digest}", headers=headers)
    assert r.status_code == 405 and error_code(r) == "UNSUPPORTED"
