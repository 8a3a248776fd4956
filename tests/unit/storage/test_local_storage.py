"""The local driver: content-addressed paths, resumable writes, atomic commit, refusal of bad names."""

import hashlib
import os

import pytest

from quaymaster.storage.base import StorageError
from quaymaster.storage.local import LocalStorage

UPLOAD = "0f8fad5b-d9cb-469f-a165-70867728950e"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def collect(stream) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_upload_resume_commit_and_read(tmp_path):
    store = LocalStorage("default", str(tmp_path))
    data = os.urandom(300_000)
    meta = await store.start_upload(UPLOAD)
    writer = await store.open_writer(UPLOAD, meta, 0)
    await writer.write(data[:100_000])
    await writer.write(b"garbage a crashed writer left behind")
    meta = await writer.close()
    # The next writer resumes at the recorded offset and cuts the stale tail off.
    writer = await store.open_writer(UPLOAD, meta, 100_000)
    await writer.write(data[100_000:])
    meta = await writer.close()
    assert await collect(store.read_upload(UPLOAD, meta, 1000)) == data[:1000]
    d = digest(data)
    assert not await store.exists(d)
    await store.commit_upload(UPLOAD, meta, d, len(data))
    assert await store.exists(d) and await store.size(d) == len(data)
    assert store.local_path(d) == str(tmp_path / "sha256" / d[7:9] / d[7:])
    assert await collect(store.stream(d)) == data
    assert await collect(store.stream(d, 10, 20)) == data[10:20]
    assert not (tmp_path / "uploads" / UPLOAD).exists()


async def test_commit_of_an_existing_blob_keeps_it(tmp_path):
    store = LocalStorage("default", str(tmp_path))
    data = b"same bytes"
    await store.put(digest(data), data)
    meta = await store.start_upload(UPLOAD)
    writer = await store.open_writer(UPLOAD, meta, 0)
    await writer.write(data)
    await store.commit_upload(UPLOAD, await writer.close(), digest(data), len(data))
    assert await collect(store.stream(digest(data))) == data


async def test_zero_byte_blob_and_delete(tmp_path):
    store = LocalStorage("default", str(tmp_path))
    meta = await store.start_upload(UPLOAD)
    await store.commit_upload(UPLOAD, meta, digest(b""), 0)
    assert await store.size(digest(b"")) == 0
    await store.delete(digest(b""))
    assert not await store.exists(digest(b""))
    await store.delete(digest(b""))  # deleting twice is fine


@pytest.mark.parametrize("bad", ["sha256:../../etc/passwd", "sha256:" + "A" * 64, "md5:abc", "../x"])
async def test_refuses_malformed_digests(tmp_path, bad):
    store = LocalStorage("default", str(tmp_path))
    with pytest.raises(StorageError):
        await store.exists(bad)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "x" * 36, ""])
async def test_refuses_malformed_upload_ids(tmp_path, bad):
    store = LocalStorage("default", str(tmp_path))
    with pytest.raises(StorageError):
        await store.start_upload(bad)


async def test_cancel_and_missing_upload(tmp_path):
    store = LocalStorage("default", str(tmp_path))
    meta = await store.start_upload(UPLOAD)
    await store.cancel_upload(UPLOAD, meta)
    await store.cancel_upload(UPLOAD, meta)
    with pytest.raises(StorageError):
        await store.open_writer(UPLOAD, meta, 0)


async def test_list_blobs_follows_no_symlink_out_of_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    store = LocalStorage("default", str(root))
    kept = b"a real blob"
    await store.put(digest(kept), kept)
    # A file and a whole <ab> directory outside the root, linked in under valid blob names.
    secret = b"not ours"
    d = digest(secret)
    (outside / d[7:9]).mkdir(parents=True)
    (outside / d[7:9] / d[7:]).write_bytes(secret)
    (root / "sha256" / d[7:9]).mkdir(parents=True, exist_ok=True)
    os.symlink(outside / d[7:9] / d[7:], root / "sha256" / d[7:9] / d[7:])
    other = digest(b"also not ours")
    (outside / other[7:9]).mkdir(exist_ok=True)
    (outside / other[7:9] / other[7:]).write_bytes(b"also not ours")
    if not (root / "sha256" / other[7:9]).exists():
        os.symlink(outside / other[7:9], root / "sha256" / other[7:9])
    os.symlink(outside, root / "sha512")
    # A link that stays inside the root is an ordinary entry.
    alias = digest(b"alias")
    (root / "sha256" / alias[7:9]).mkdir(exist_ok=True)
    os.symlink(root / "sha256" / digest(kept)[7:9] / digest(kept)[7:], root / "sha256" / alias[7:9] / alias[7:])
    found = {b.digest: b.size async for b in store.list_blobs()}
    assert found == {digest(kept): len(kept), alias: len(kept)}
