"""The storage contract: every driver (local disk, S3 via a real server) must pass all of it.

Upload metadata goes through JSON between writers, as it does through the database.
"""

import asyncio
import contextlib
import hashlib
import json
import os
import random
import time

import httpx
import pytest

from quaymaster.storage.base import BlobNotFound, StorageError

MiB = 1024 * 1024
UPLOAD = "0f8fad5b-d9cb-469f-a165-70867728950e"
OTHER = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def stored(meta: dict) -> dict:
    """What the database hands back: a JSON round trip."""
    return json.loads(json.dumps(meta))


async def collect(stream) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def append(store, upload: str, meta: dict, offset: int, *pieces: bytes) -> dict:
    """One request: open a writer at offset, write the pieces, close; returns the new metadata."""
    writer = await store.open_writer(upload, stored(meta), offset)
    for piece in pieces:
        await writer.write(piece)
    return stored(await writer.close())


async def upload_blob(store, upload: str, data: bytes) -> None:
    meta = await append(store, upload, await store.start_upload(upload), 0, data)
    await store.commit_upload(upload, meta, digest(data), len(data))


def pseudo_random(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


# --- blobs ------------------------------------------------------------------------------------

async def test_put_exists_size_stream_and_ranges(driver):
    store = driver.store
    data = os.urandom(10_000)
    d = digest(data)
    assert not await store.exists(d) and await store.size(d) is None
    await store.put(d, data)
    await store.put(d, data)  # putting an existing blob again is harmless
    assert await store.exists(d) and await store.size(d) == len(data)
    assert await collect(store.stream(d)) == data
    assert await collect(store.stream(d, 10, 20)) == data[10:20]
    assert await collect(store.stream(d, 9_990)) == data[9_990:]
    assert await collect(store.stream(d, 5, 5)) == b""
    assert await collect(store.stream(d, 9_000, 20_000)) == data[9_000:]
    assert await collect(store.stream(d, 10_000)) == b""


async def test_delete_and_missing_blobs(driver):
    store = driver.store
    data = b"short-lived"
    await store.put(digest(data), data)
    await store.delete(digest(data))
    assert not await store.exists(digest(data)) and await store.size(digest(data)) is None
    await store.delete(digest(data))  # deleting twice is fine
    with pytest.raises(BlobNotFound):
        await collect(store.stream(digest(data)))


@pytest.mark.parametrize("bad", ["sha256:../../etc/passwd", "sha256:" + "A" * 64, "md5:abc", "../x"])
async def test_refuses_malformed_digests(driver, bad):
    with pytest.raises(StorageError):
        await driver.store.exists(bad)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "x" * 36, ""])
async def test_refuses_malformed_upload_ids(driver, bad):
    with pytest.raises(StorageError):
        await driver.store.start_upload(bad)


# --- uploads ----------------------------------------------------------------------------------

async def test_upload_commit_and_cleanup(driver):
    store = driver.store
    data = os.urandom(300_000)
    meta = await append(store, UPLOAD, await store.start_upload(UPLOAD), 0, data[:100_000], data[100_000:200_000])
    meta = await append(store, UPLOAD, meta, 200_000, data[200_000:])
    d = digest(data)
    assert not await store.exists(d)  # nothing is visible before the commit
    await store.commit_upload(UPLOAD, meta, d, len(data))
    assert await store.size(d) == len(data)
    assert await collect(store.stream(d)) == data
    assert driver.upload_leftovers() == []


async def test_zero_byte_blobs(driver):
    store = driver.store
    empty = digest(b"")
    meta = await store.start_upload(UPLOAD)
    meta = await append(store, UPLOAD, meta, 0)  # a request with no body
    assert await collect(store.read_upload(UPLOAD, meta, 0)) == b""
    await store.commit_upload(UPLOAD, meta, empty, 0)
    assert await store.exists(empty) and await store.size(empty) == 0
    assert await collect(store.stream(empty)) == b""
    assert await collect(store.stream(empty, 0, 10)) == b""
    url = await store.download_url(empty)
    if url is not None:
        async with httpx.AsyncClient(trust_env=False) as http:
            r = await http.get(url)
        assert r.status_code == 200 and r.content == b""
    # Committing an empty blob that already exists is fine too.
    await store.commit_upload(OTHER, await store.start_upload(OTHER), empty, 0)
    assert driver.upload_leftovers() == []


async def test_resumed_writes_with_odd_sizes_across_part_boundaries(driver):
    """Many requests of awkward sizes (1 byte, a part less one, a part plus one, ...)."""
    store = driver.store
    sizes = [1, 5 * MiB - 1, 1, 5 * MiB + 1, 3, 5 * MiB - 3, 2]
    data = pseudo_random(1, sum(sizes))
    meta = await store.start_upload(UPLOAD)
    offset = 0
    for i, size in enumerate(sizes):
        chunk = data[offset:offset + size]
        # Split some requests into several writes of odd sizes, as a network stream arrives.
        pieces = [chunk[:size // 3], chunk[size // 3:]] if i % 2 else [chunk]
        meta = await append(store, UPLOAD, meta, offset, *pieces)
        offset += size
        if i in (2, len(sizes) - 1):
            assert await collect(store.read_upload(UPLOAD, meta, offset)) == data[:offset]
    await store.commit_upload(UPLOAD, meta, digest(data), len(data))
    assert hashlib.sha256(await collect(store.stream(digest(data)))).hexdigest() == digest(data)[7:]
    assert driver.upload_leftovers() == []


async def test_large_stream_through_several_writers_and_requests(driver):
    """20 MiB in 256 KiB writes across three writers, produced and checked piece by piece."""
    store = driver.store
    piece, total = 256 * 1024, 20 * MiB
    hasher = hashlib.sha256()
    chunks = []  # (offset, size): the data is regenerated from these, never kept
    meta = await store.start_upload(UPLOAD)
    offset = 0
    for request_bytes in (7 * MiB + 12345, 6 * MiB, total - 13 * MiB - 12345):
        writer = await store.open_writer(UPLOAD, stored(meta), offset)
        end = offset + request_bytes
        while offset < end:
            chunk = pseudo_random(offset, min(piece, end - offset))
            chunks.append((offset, len(chunk)))
            hasher.update(chunk)
            await writer.write(chunk)
            offset += len(chunk)
        meta = stored(await writer.close())

    def expected(start: int, stop: int) -> bytes:
        return b"".join(pseudo_random(o, n) for o, n in chunks if o < stop and o + n > start)[
            start - max(o for o, _ in chunks if o <= start):][:stop - start]
    d = "sha256:" + hasher.hexdigest()
    check = hashlib.sha256()
    async for chunk in store.read_upload(UPLOAD, meta, total):
        check.update(chunk)
    assert check.hexdigest() == hasher.hexdigest()
    await store.commit_upload(UPLOAD, meta, d, total)
    assert await store.size(d) == total
    check, count = hashlib.sha256(), 0
    async for chunk in store.stream(d):
        assert len(chunk) <= 4 * MiB  # streamed in pieces, never the whole blob at once
        check.update(chunk)
        count += len(chunk)
    assert count == total and check.hexdigest() == hasher.hexdigest()
    for start, stop in ((10 * MiB - 7, 10 * MiB + 7), (7 * MiB, 7 * MiB + 12346), (total - 3, total)):
        assert await collect(store.stream(d, start, stop)) == expected(start, stop)


async def test_read_upload_returns_exactly_the_bytes_so_far(driver):
    store = driver.store
    data = os.urandom(6 * MiB + 100)
    meta = await append(store, UPLOAD, await store.start_upload(UPLOAD), 0, data[:6 * MiB])
    meta = await append(store, UPLOAD, meta, 6 * MiB, data[6 * MiB:])
    assert await collect(store.read_upload(UPLOAD, meta, len(data))) == data
    assert await collect(store.read_upload(UPLOAD, meta, 5 * MiB + 1)) == data[:5 * MiB + 1]
    assert await collect(store.read_upload(UPLOAD, meta, 17)) == data[:17]
    assert await collect(store.read_upload(UPLOAD, meta, 0)) == b""
    with pytest.raises(StorageError):
        await collect(store.read_upload(UPLOAD, meta, len(data) + 1))


@pytest.mark.parametrize("garbage_size", [100, 6 * MiB])
async def test_resume_cuts_off_what_a_crashed_writer_left(driver, garbage_size):
    """A writer that wrote (and even closed) but whose new offset was never recorded."""
    store = driver.store
    data = os.urandom(7 * MiB)
    recorded = 5 * MiB + 10
    meta = await append(store, UPLOAD, await store.start_upload(UPLOAD), 0, data[:recorded])
    # The crashed writer's bytes: its close() result may or may not have reached anyone.
    crashed_meta = await append(store, UPLOAD, meta, recorded, os.urandom(garbage_size))
    for base in (crashed_meta, meta):
        resumed = await append(store, UPLOAD, base, recorded, data[recorded:])
        assert await collect(store.read_upload(UPLOAD, resumed, len(data))) == data
    # A writer that died mid-request (aborted) leaves nothing the next one trips over.
    writer = await store.open_writer(UPLOAD, stored(resumed), len(data))
    await writer.write(os.urandom(garbage_size))
    await writer.abort()
    await store.commit_upload(UPLOAD, resumed, digest(data), len(data))
    assert await collect(store.stream(digest(data))) == data
    assert driver.upload_leftovers() == []


async def test_resume_inside_an_earlier_part(driver):
    """Recorded offset far below what the metadata describes: whole parts are dropped too."""
    store = driver.store
    data = os.urandom(3 * MiB)
    meta = await append(store, UPLOAD, await store.start_upload(UPLOAD), 0, data[:MiB])
    long_meta = await append(store, UPLOAD, meta, MiB, os.urandom(12 * MiB))
    meta = await append(store, UPLOAD, long_meta, MiB, data[MiB:])
    assert await collect(store.read_upload(UPLOAD, meta, len(data))) == data
    await store.commit_upload(UPLOAD, meta, digest(data), len(data))
    assert await collect(store.stream(digest(data))) == data


async def test_concurrent_uploads_of_the_same_digest_both_succeed(driver):
    store = driver.store
    data = os.urandom(6 * MiB + 5)
    metas = []
    for upload in (UPLOAD, OTHER):
        meta = await append(store, upload, await store.start_upload(upload), 0, data[:3 * MiB])
        metas.append(await append(store, upload, meta, 3 * MiB, data[3 * MiB:]))
    await asyncio.gather(*(store.commit_upload(u, m, digest(data), len(data)) for u, m in zip((UPLOAD, OTHER), metas)))
    assert await store.size(digest(data)) == len(data)
    assert await collect(store.stream(digest(data))) == data
    assert driver.upload_leftovers() == []


async def test_cancel_removes_everything(driver):
    store = driver.store
    meta = await append(store, UPLOAD, await store.start_upload(UPLOAD), 0, os.urandom(6 * MiB))
    meta = await append(store, UPLOAD, meta, 6 * MiB, b"tail")
    assert driver.upload_leftovers() != []
    await store.cancel_upload(UPLOAD, meta)
    assert driver.upload_leftovers() == []
    await store.cancel_upload(UPLOAD, meta)  # missing data is not an error


async def test_download_url(driver):
    store = driver.store
    data = os.urandom(70_000)
    await store.put(digest(data), data)
    url = await store.download_url(digest(data))
    if driver.kind == "local":
        assert url is None
        return
    async with httpx.AsyncClient(trust_env=False) as http:
        r = await http.get(url)
        assert r.status_code == 200 and r.content == data
        r = await http.get(url, headers={"Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == data[100:200]
        # The signature covers the key: the URL cannot be bent to another object.
        r = await http.get(url.replace(digest(data)[7:], "0" * 64))
        assert r.status_code == 403
    assert "X-Amz-Expires=600" in url
    assert await driver.s3_store(proxy_downloads=True).download_url(digest(data)) is None


# --- listing ----------------------------------------------------------------------------------

async def listed(store) -> list:
    return [blob async for blob in store.list_blobs()]


def plant(driver, relative: str, data: bytes) -> None:
    """Write an object behind the driver's back, at a path relative to the location's root."""
    if driver.kind == "local":
        path = driver.store.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        driver.server.client.put_object(Bucket=driver.server.bucket, Key=f"{driver.prefix}/{relative}", Body=data)


async def test_list_blobs_reports_every_blob_in_digest_order(driver):
    store = driver.store
    assert await listed(store) == []
    if hasattr(store, "list_page_size"):
        store.list_page_size = 2  # several pages from a handful of blobs
    started = time.time()
    blobs = {digest(data): data for data in (b"", b"x", os.urandom(1000), os.urandom(70_000))}
    for d, data in blobs.items():
        await store.put(d, data)
    big = hashlib.sha512(b"sha512 content").hexdigest()
    blobs[f"sha512:{big}"] = b"sha512 content"
    await store.put(f"sha512:{big}", b"sha512 content")
    committed = os.urandom(5000)
    await upload_blob(store, OTHER, committed)
    blobs[digest(committed)] = committed
    # Upload data is not a blob, nor is anything that is not named as the layout names blobs.
    pending = await append(store, UPLOAD, await store.start_upload(UPLOAD), 0, b"still uploading")
    hexpart = hashlib.sha256(b"misplaced").hexdigest()
    plant(driver, f"sha256/00/{hexpart}", b"misplaced")  # wrong <ab> directory
    plant(driver, f"sha256/{hexpart[:2]}/{hexpart}.tmp", b"temp")
    plant(driver, "sha256/README", b"not a blob")
    plant(driver, "md5/ab/abcdef", b"unknown algorithm")

    found = await listed(store)
    assert [b.digest for b in found] == sorted(blobs)  # sha256 before sha512, each in hex order
    assert {b.digest: b.size for b in found} == {d: len(data) for d, data in blobs.items()}
    assert all(started - 5 <= b.modified <= time.time() + 5 for b in found), found

    gone = digest(b"x")
    await store.delete(gone)
    assert gone not in {b.digest for b in await listed(store)}
    await store.cancel_upload(UPLOAD, pending)


async def test_list_blobs_is_lazy(driver):
    """A consumer may stop early; the listing reads pages as it goes."""
    store = driver.store
    if hasattr(store, "list_page_size"):
        store.list_page_size = 1
    for i in range(3):
        await store.put(digest(b"%d" % i), b"%d" % i)
    async with contextlib.aclosing(store.list_blobs()) as blobs:
        first = await anext(blobs)
    assert first.digest == min(digest(b"%d" % i) for i in range(3))
