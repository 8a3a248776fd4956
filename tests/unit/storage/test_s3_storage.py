"""What only the S3 driver has: Quay's config keys, part objects, stale multipart uploads, memory."""

import asyncio
import hashlib
import json
import os
import time
import tracemalloc

import httpx
import pytest

from quaymaster.settings.model import settings_from_dict
from quaymaster.storage import build_storage
from quaymaster.storage.base import StorageError
from quaymaster.storage.s3 import MIN_PART, S3Store, s3_options

MiB = 1024 * 1024
UPLOAD = "0f8fad5b-d9cb-469f-a165-70867728950e"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def collect(stream) -> bytes:
    return b"".join([chunk async for chunk in stream])


# --- configuration (no server needed) -------------------------------------------------------

def test_quay_s3storage_keys():
    opts = s3_options("S3Storage", {
        "s3_bucket": "quay", "storage_path": "/datastorage/registry", "s3_region": "us-east-1",
        "s3_access_key": "AK", "s3_secret_key": "SK", "signature_version": "v4", "minimum_chunk_size_mb": 8,
        "maximum_chunk_size_gb": 5,
    })
    assert (opts.bucket, opts.prefix, opts.region, opts.endpoint_url) == ("quay", "datastorage/registry", "us-east-1", None)
    assert (opts.access_key, opts.secret_key, opts.signature_version) == ("AK", "SK", "s3v4")
    assert opts.part_size == 8 * MiB and not opts.proxy_downloads
    assert s3_options("S3Storage", {"s3_bucket": "b", "host": "s3.example.com", "port": 8443}).endpoint_url == \
        "https://s3.example.com:8443"
    assert s3_options("S3Storage", {"s3_bucket": "b", "host": "s3.example.com"}).endpoint_url == "https://s3.example.com"
    assert s3_options("S3Storage", {"s3_bucket": "b", "endpoint_url": "http://127.0.0.1:9000",
                                    "host": "ignored"}).endpoint_url == "http://127.0.0.1:9000"
    assert s3_options("S3Storage", {"s3_bucket": "b", "proxy_downloads": "true"}).proxy_downloads
    assert s3_options("S3Storage", {"s3_bucket": "b", "signature_version": "v2"}).signature_version == "s3"


def test_quay_radosgw_keys():
    opts = s3_options("RadosGWStorage", {
        "hostname": "rgw.example.com", "port": 7480, "is_secure": False, "access_key": "AK", "secret_key": "SK",
        "bucket_name": "quay", "storage_path": "/datastorage/registry",
    })
    assert (opts.endpoint_url, opts.bucket, opts.prefix) == ("http://rgw.example.com:7480", "quay", "datastorage/registry")
    assert s3_options("RadosGWStorage", {"hostname": "h", "access_key": "a", "secret_key": "s",
                                         "bucket_name": "b"}).endpoint_url == "https://h"


@pytest.mark.parametrize("driver, params, message", [
    ("S3Storage", {}, "s3_bucket"),
    ("S3Storage", {"s3_bucket": "b", "minimum_chunk_size_mb": 1}, "minimum_chunk_size_mb"),
    ("S3Storage", {"s3_bucket": "b", "signature_version": "v9"}, "signature_version"),
    ("RadosGWStorage", {"hostname": "h", "bucket_name": "b"}, "access_key"),
])
def test_bad_parameters_name_the_key(driver, params, message):
    with pytest.raises(StorageError, match=f"DISTRIBUTED_STORAGE_CONFIG.loc: .*{message}"):
        S3Store.from_config("loc", driver, params)


def test_settings_accept_s3_locations_and_build_them(tmp_path):
    settings = settings_from_dict({
        "DISTRIBUTED_STORAGE_CONFIG": {
            "local": ["LocalStorage", {"storage_path": str(tmp_path)}],
            "s3": ["S3Storage", {"s3_bucket": "b", "storage_path": "/registry", "endpoint_url": "http://127.0.0.1:1"}],
            "rgw": ["RadosGWStorage", {"hostname": "127.0.0.1", "port": 1, "is_secure": False, "access_key": "a",
                                       "secret_key": "s", "bucket_name": "b", "storage_path": "/registry"}],
        },
        "DISTRIBUTED_STORAGE_PREFERENCE": ["s3", "local"],
    })
    storage = build_storage(settings)
    assert isinstance(storage.preferred, S3Store) and isinstance(storage.location("rgw"), S3Store)
    assert storage.location("rgw").opts.endpoint_url == "http://127.0.0.1:1"


def test_ca_bundle_is_used_for_tls(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    store = S3Store.from_config("loc", "S3Storage", {"s3_bucket": "b", "endpoint_url": "https://127.0.0.1:1",
                                                     "ca_bundle": str(bundle)})
    assert store.client._endpoint.http_session._verify == str(bundle)


# --- against the S3 server --------------------------------------------------------------------

async def test_radosgw_keys_against_a_real_server(s3_endpoint):
    host, port = s3_endpoint.endpoint_url.removeprefix("http://").split(":")
    store = S3Store.from_config("rgw", "RadosGWStorage", {
        "hostname": host, "port": int(port), "is_secure": False, "access_key": s3_endpoint.access_key,
        "secret_key": s3_endpoint.secret_key, "bucket_name": s3_endpoint.bucket, "storage_path": "/rgw-test",
    })
    data = os.urandom(1000)
    await store.put(digest(data), data)
    assert await collect(store.stream(digest(data))) == data
    async with httpx.AsyncClient(trust_env=False) as http:
        assert (await http.get(await store.download_url(digest(data)))).content == data


async def test_wrong_credentials_are_a_storage_error(s3_endpoint):
    store = S3Store.from_config("loc", "S3Storage", s3_endpoint.storage_params("x", s3_secret_key="wrong"))
    with pytest.raises(StorageError, match="403|SignatureDoesNotMatch|AccessDenied"):
        await store.exists(digest(b"x"))


async def test_part_objects_and_superseded_tails(s3_driver):
    """Full parts are objects of exactly part_size; each request's tail replaces the last one."""
    store, server = s3_driver.store, s3_driver.server
    meta = await store.start_upload(UPLOAD)
    offset = 0
    for _ in range(12):  # 12 requests of 600 KiB: two parts' worth, a tail each time
        writer = await store.open_writer(UPLOAD, meta, offset)
        await writer.write(os.urandom(600 * 1024))
        meta = json.loads(json.dumps(await writer.close()))
        offset += 600 * 1024
    assert len(meta["parts"]) == 1 and meta["tail"][1] == offset - MIN_PART
    objects = server.client.list_objects_v2(Bucket=server.bucket, Prefix=f"{s3_driver.prefix}/uploads/")["Contents"]
    sizes = sorted(o["Size"] for o in objects)
    # The part, the current tail, and at most the one tail the next request will delete.
    assert MIN_PART in sizes and len(objects) <= 3, sizes


async def test_losing_concurrent_writer_does_not_clobber_the_winner(s3_driver):
    store = s3_driver.store
    head = os.urandom(MiB)
    writer = await store.open_writer(UPLOAD, await store.start_upload(UPLOAD), 0)
    await writer.write(head)
    meta = json.loads(json.dumps(await writer.close()))
    winner_data, loser_data = os.urandom(5 * MiB), os.urandom(5 * MiB)
    winner = await store.open_writer(UPLOAD, meta, MiB)
    loser = await store.open_writer(UPLOAD, meta, MiB)
    await winner.write(winner_data)
    await loser.write(loser_data)
    winner_meta = await winner.close()
    await loser.close()  # closes later: its objects must not replace the winner's
    assert await collect(store.read_upload(UPLOAD, winner_meta, 6 * MiB)) == head + winner_data


@pytest.mark.parametrize("meta", [
    {"v": 1, "part_size": 100, "parts": [], "tail": None, "drop": []},
    {"v": 1, "part_size": MIN_PART, "parts": ["../../x"], "tail": None, "drop": []},
    {"v": 1, "part_size": MIN_PART, "parts": [], "tail": ["0123456789ab", MIN_PART + 1], "drop": []},
    {"v": 1, "part_size": MIN_PART, "parts": [], "tail": None, "drop": ["../sha256/ab/cd"]},
    {"v": 1, "part_size": "x"},
])
async def test_malformed_upload_metadata_is_refused(s3_driver, meta):
    with pytest.raises(StorageError):
        await s3_driver.store.open_writer(UPLOAD, meta, 0)


async def test_abort_stale_multipart_uploads(s3_driver):
    store, server = s3_driver.store, s3_driver.server
    key = f"{s3_driver.prefix}/sha256/ab/" + "ab" * 32
    server.client.create_multipart_upload(Bucket=server.bucket, Key=key)
    assert await store.abort_stale_uploads(older_than=3600) == 0
    await asyncio.sleep(1.1)  # initiation times have one-second resolution (rounded up)
    assert await store.abort_stale_uploads(older_than=0) == 1
    listed = server.client.list_multipart_uploads(Bucket=server.bucket, Prefix=s3_driver.prefix)
    assert listed.get("Uploads", []) == []


async def test_writer_memory_stays_small_and_the_loop_keeps_running(s3_driver):
    """12 MiB through one writer: a few MiB of Python memory at most, and no long loop stalls."""
    store = s3_driver.store
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker():
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    tracemalloc.start()
    try:
        writer = await store.open_writer(UPLOAD, await store.start_upload(UPLOAD), 0)
        for i in range(12 * 16):
            await writer.write(os.urandom(64 * 1024))
        meta = await writer.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        done.set()
        await tick
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert max(gaps) < 1.0, f"event loop stalled {max(gaps):.2f}s"
    assert len(meta["parts"]) == 2 and meta["tail"][1] == 2 * MiB
