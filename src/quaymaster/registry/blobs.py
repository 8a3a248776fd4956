"""Blob downloads and uploads (monolithic, chunked, streamed, resumable; cross-repository mount)."""

import asyncio
import hashlib
import logging
import os
import re
from contextlib import aclosing

from sqlalchemy.exc import IntegrityError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from quaymaster.accounts.permissions import PULL, PUSH
from quaymaster.content import quota
from quaymaster.content import service as content
from quaymaster.content.models import BlobUpload
from quaymaster.content.service import RepoRef
from quaymaster.context import AppContext
from quaymaster.oci.digest import new_hasher, parse_digest
from quaymaster.oci.errors import OCIError
from quaymaster.registry.auth import Caller
from quaymaster.registry.common import endpoint, parse_name, require
from quaymaster.registry.errors import RegistryError
from quaymaster.storage.base import BlobNotFound, BlobStore, StorageError

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")
_UPLOAD_ID = re.compile(r"^[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$")


class RangedBlobFile(FileResponse):
    chunk_size = 1024 * 1024  # fewer thread hops than the 64 KiB default on big layers


class BlobFile(Response):
    """A whole blob from disk, reading the next piece while the current one is being sent,
    so disk reads and a slow reader's socket overlap instead of taking turns."""

    chunk_size = 1024 * 1024

    def __init__(self, path: str, size: int, headers: dict[str, str]):
        super().__init__(status_code=200, media_type="application/octet-stream",
                         headers={**headers, "Content-Length": str(size), "Accept-Ranges": "bytes"})
        self.path = path

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        with open(self.path, "rb") as fh:
            pending = asyncio.ensure_future(asyncio.to_thread(fh.read, self.chunk_size))
            try:
                while True:
                    chunk = await pending
                    if not chunk:
                        break
                    pending = asyncio.ensure_future(asyncio.to_thread(fh.read, self.chunk_size))
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finally:
                # Let an in-flight read finish before the file closes under it.
                await asyncio.gather(pending, return_exceptions=True)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _digest_param(value: str | None) -> str:
    if not value:
        raise RegistryError("DIGEST_INVALID", "a digest is required")
    try:
        parse_digest(value)
    except OCIError as err:
        raise RegistryError("DIGEST_INVALID", err.message, {"digest": value}) from None
    return value


def _range_header(count: int) -> str:
    return f"0-{max(count - 1, 0)}"


def _upload_headers(repo: RepoRef, upload: BlobUpload, count: int) -> dict[str, str]:
    return {
        "Location": f"/v2/{repo.path}/blobs/uploads/{upload.uuid}",
        "Range": _range_header(count),
        "Docker-Upload-UUID": upload.uuid,
        "Content-Length": "0",
    }


# --- downloads ---------------------------------------------------------------------------------

@endpoint
async def get_blob(request: Request) -> Response:
    ctx, caller, repo = await require(request, PULL)
    digest = _digest_param(request.path_params["digest"])
    async with ctx.db.read() as session:
        found = await content.linked_blob(session, repo.id, digest)
    if found is None:
        raise RegistryError("BLOB_UNKNOWN", f"blob {digest} is not known to this repository",
                            {"digest": digest})
    blob, placements = found
    headers = {"Docker-Content-Digest": digest, "Cache-Control": "max-age=31536000"}
    stores = ctx.storage.holders(placements)
    if not stores:
        raise RegistryError("BLOB_UNKNOWN", f"blob {digest} has no stored copy", status=404)
    # The nearest location first; a copy that turns out missing or unreadable there falls back
    # to the next location holding the blob. The first location costs what it always did.
    failure: StorageError | None = None
    for store in stores:
        try:
            response = await _serve_from(request, store, digest, blob.size, headers)
        except StorageError as err:
            if isinstance(err, BlobNotFound):
                log.error("blob %s is recorded but missing from storage location %s", digest, store.name)
            else:
                log.warning("storage location %s failed serving blob %s: %s", store.name, digest, err)
            failure = err
            continue
        if failure is not None:
            log.info("blob %s served from fallback location %s", digest, store.name)
        return response
    if isinstance(failure, BlobNotFound):
        raise RegistryError("BLOB_UNKNOWN", f"blob {digest} is missing from storage", status=404)
    raise failure  # every holder failed for another reason: 503 (see `endpoint`)


async def _serve_from(request: Request, store: BlobStore, digest: str, size: int,
                      headers: dict[str, str]) -> Response:
    """The response serving a blob from one location; BlobNotFound/StorageError before any byte
    is sent if this location cannot (a redirect to an object store is not checked)."""
    url = await store.download_url(digest) if request.method == "GET" else None
    if url is not None:
        return RedirectResponse(url, status_code=302, headers=headers)  # as Quay answers
    path = store.local_path(digest)
    if path is None:
        return await _stream_from_store(request, store, digest, size, headers)
    if not os.path.isfile(path):
        raise BlobNotFound(f"blob {digest} is missing")
    if "range" in request.headers:
        return RangedBlobFile(path, media_type="application/octet-stream", headers=headers)
    return BlobFile(path, size, headers)


def _byte_range(header: str, size: int) -> tuple[int, int] | None | bool:
    """[start, end) of a single `bytes=` range; None if unsatisfiable, False to ignore the header
    (malformed or several ranges: answering with the whole blob is allowed)."""
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or m.group(1) == m.group(2) == "":
        return False
    first, last = m.group(1), m.group(2)
    if first == "":  # the final N bytes
        count = int(last)
        return (max(size - count, 0), size) if count and size else None
    start = int(first)
    end = size if last == "" else int(last) + 1
    if last != "" and end <= start:
        return False
    if start >= size:
        return None
    return start, min(end, size)


async def _stream_from_store(request: Request, store: BlobStore, digest: str, size: int,
                             headers: dict[str, str]) -> Response:
    """A blob from a store with neither a redirect URL nor a local file (S3 with proxy_downloads):
    streamed through this process, Range requests included."""
    headers = {**headers, "Accept-Ranges": "bytes"}
    start, end, status = 0, size, 200
    if "range" in request.headers:
        wanted = _byte_range(request.headers["range"], size)
        if wanted is None:
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        if wanted:
            start, end = wanted
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    chunks = store.stream(digest, start, end)
    try:
        first = await anext(chunks, b"")  # a missing object fails here, before any header is sent
    except StorageError:  # BlobNotFound included: the caller tries the next location
        await chunks.aclose()
        raise

    async def body():
        async with aclosing(chunks):
            if first:
                yield first
            async for chunk in chunks:
                yield chunk

    return StreamingResponse(body(), status_code=status, headers=headers, media_type="application/octet-stream")


@endpoint
async def delete_blob(request: Request) -> Response:
    # As in Quay: blobs go away through garbage collection, never by direct delete.
    await require(request, PUSH)
    raise RegistryError("UNSUPPORTED", "blobs are removed by garbage collection, not deleted directly")


# --- uploads -----------------------------------------------------------------------------------

async def _receive(ctx: AppContext, request: Request, upload: BlobUpload) -> int:
    """Stream the request body into the upload at its current offset; returns the new byte count."""
    store = ctx.storage.location(upload.location)
    offset = upload.byte_count
    hasher = ctx.hashes.take(upload.uuid, offset)
    if hasher is None:
        hasher = hashlib.sha256()
        if offset:
            async for chunk in store.read_upload(upload.uuid, upload.storage_metadata, offset):
                hasher.update(chunk)
    limit = ctx.settings.max_layer_bytes
    count = offset
    writer = await store.open_writer(upload.uuid, upload.storage_metadata, offset)
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            count += len(chunk)
            if count > limit:
                raise RegistryError("SIZE_INVALID", f"blob exceeds MAXIMUM_LAYER_SIZE ({limit} bytes)",
                                    {"max_allowed": limit}, status=413)
            hasher.update(chunk)
            await writer.write(chunk)
    except (RegistryError, ClientDisconnect):
        await writer.abort()
        raise
    metadata = await writer.close()
    async with ctx.db.write() as session:
        moved = await content.advance_upload(session, upload.id, offset, count, metadata)
    if not moved:
        raise RegistryError("BLOB_UPLOAD_INVALID", "the upload was changed by another request",
                            status=416, headers={"Range": _range_header(offset)})
    upload.byte_count = count
    upload.storage_metadata = metadata
    ctx.hashes.put(upload.uuid, count, hasher)
    return count


def _check_content_range(request: Request, upload: BlobUpload) -> None:
    header = request.headers.get("content-range")
    if not header:
        return
    m = _CONTENT_RANGE.match(header.strip())
    if not m:
        raise RegistryError("BLOB_UPLOAD_INVALID", f"malformed Content-Range {header!r}", status=416,
                            headers={"Range": _range_header(upload.byte_count)})
    start, end = int(m.group(1)), int(m.group(2))
    length = request.headers.get("content-length")
    if start != upload.byte_count or end < start or (length and int(length) != end - start + 1):
        raise RegistryError("BLOB_UPLOAD_INVALID",
                            f"chunk {start}-{end} does not continue the upload at {upload.byte_count}",
                            status=416, headers={"Range": _range_header(upload.byte_count)})


async def _load_upload(ctx: AppContext, repo: RepoRef, upload_uuid: str) -> BlobUpload:
    if not _UPLOAD_ID.match(upload_uuid):
        raise RegistryError("BLOB_UPLOAD_UNKNOWN", "upload is not known", {"uuid": upload_uuid})
    async with ctx.db.read() as session:
        upload = await content.get_upload(session, repo.id, upload_uuid)
    if upload is None:
        raise RegistryError("BLOB_UPLOAD_UNKNOWN", "upload is not known", {"uuid": upload_uuid})
    return upload


async def _start_upload(ctx: AppContext, repo: RepoRef) -> BlobUpload:
    store = ctx.storage.preferred
    async with ctx.db.write() as session:
        upload = await content.create_upload(session, repo.id, store.name, {})
        upload.storage_metadata = await store.start_upload(upload.uuid)
    return upload


async def _cancel(ctx: AppContext, upload: BlobUpload) -> None:
    ctx.hashes.drop(upload.uuid)
    async with ctx.db.write() as session:
        await content.delete_upload(session, upload.id)
    await ctx.storage.location(upload.location).cancel_upload(upload.uuid, upload.storage_metadata)


async def _final_digest(ctx: AppContext, upload: BlobUpload, algorithm: str) -> str:
    store = ctx.storage.location(upload.location)
    hasher = ctx.hashes.take(upload.uuid, upload.byte_count) if algorithm == "sha256" else None
    if hasher is None:
        hasher = new_hasher(algorithm)
        async for chunk in store.read_upload(upload.uuid, upload.storage_metadata, upload.byte_count):
            hasher.update(chunk)
    return f"{algorithm}:{hasher.hexdigest()}"


async def _commit(ctx: AppContext, request: Request, caller: Caller, repo: RepoRef,
                  upload: BlobUpload, digest: str) -> Response:
    """Verify the digest, then make the blob visible: bytes first, database second."""
    algorithm, _ = parse_digest(digest)
    actual = await _final_digest(ctx, upload, algorithm)
    if actual != digest:
        await _cancel(ctx, upload)
        raise RegistryError("DIGEST_INVALID", "the uploaded content does not match the digest",
                            {"expected": digest, "actual": actual})
    store = ctx.storage.location(upload.location)
    await store.commit_upload(upload.uuid, upload.storage_metadata, digest, upload.byte_count)
    ctx.hashes.drop(upload.uuid)
    await _record(ctx, repo, upload, store, digest)
    return Response(status_code=201, headers={
        "Location": f"/v2/{repo.path}/blobs/{digest}", "Docker-Content-Digest": digest,
        "Content-Length": "0",
    })


async def _record(ctx: AppContext, repo: RepoRef, upload: BlobUpload, store: BlobStore, digest: str) -> None:
    """Record the committed blob and claim it for the repository. A new row also checks the bytes
    are still there: a collection pass that deleted the digest a moment ago may have taken them."""
    for attempt in range(2):
        try:
            async with ctx.db.write() as session:
                blob, created = await content.record_blob(session, digest, upload.byte_count, store.name)
                if created and not await store.exists(digest):
                    raise content.BlobBeingDeleted(digest)
                await content.claim_blob(session, repo.id, blob, ctx.settings.PUSH_TEMP_TAG_EXPIRATION_SEC)
                await content.delete_upload(session, upload.id)
            return
        except IntegrityError:  # another push recorded the same new digest first: reuse its row
            if attempt:
                raise
        except content.BlobBeingDeleted as err:
            raise RegistryError(err.code, err.message, err.detail, status=503, headers={"Retry-After": "1"}) from None


async def _try_mount(ctx: AppContext, caller: Caller, repo: RepoRef, digest: str,
                     source: str) -> Response | None:
    """Link a blob from another repository the caller may read; None falls back to an upload."""
    try:
        namespace, name = parse_name(source)
    except RegistryError:
        return None
    try:
        async with ctx.db.write() as session:
            src = await content.get_repository(session, namespace, name)
            if src is None or not (caller.can(source, PULL) or src.visibility == "public"):
                return None
            found = await content.linked_blob(session, src.id, digest)
            if found is None:
                return None
            await content.claim_blob(session, repo.id, found[0], ctx.settings.PUSH_TEMP_TAG_EXPIRATION_SEC)
    except IntegrityError:  # garbage collection removed the blob as we linked it: upload instead
        return None
    return Response(status_code=201, headers={
        "Location": f"/v2/{repo.path}/blobs/{digest}", "Docker-Content-Digest": digest,
        "Content-Length": "0",
    })


@endpoint
async def start_upload(request: Request) -> Response:
    ctx, caller, repo = await require(request, PUSH)
    params = request.query_params
    if params.get("mount"):
        digest = _digest_param(params.get("mount"))
        mounted = await _try_mount(ctx, caller, repo, digest, params.get("from") or "")
        if mounted is not None:
            return mounted
    await quota.guard_upload(ctx.db, ctx.settings, repo)
    upload = await _start_upload(ctx, repo)
    if "digest" in params:
        digest = _digest_param(params.get("digest"))
        try:
            await _receive(ctx, request, upload)
        except BaseException:
            await _cancel(ctx, upload)
            raise
        return await _commit(ctx, request, caller, repo, upload, digest)
    return Response(status_code=202, headers=_upload_headers(repo, upload, 0))


@endpoint
async def upload_status(request: Request) -> Response:
    ctx, _, repo = await require(request, PUSH)
    upload = await _load_upload(ctx, repo, request.path_params["uuid"])
    headers = _upload_headers(repo, upload, upload.byte_count)
    return Response(status_code=204, headers=headers)


@endpoint
async def patch_upload(request: Request) -> Response:
    ctx, _, repo = await require(request, PUSH)
    upload = await _load_upload(ctx, repo, request.path_params["uuid"])
    _check_content_range(request, upload)
    try:
        count = await _receive(ctx, request, upload)
    except RegistryError as err:
        if err.status == 413:
            await _cancel(ctx, upload)
        raise
    return Response(status_code=202, headers=_upload_headers(repo, upload, count))


@endpoint
async def finish_upload(request: Request) -> Response:
    ctx, caller, repo = await require(request, PUSH)
    upload = await _load_upload(ctx, repo, request.path_params["uuid"])
    digest = _digest_param(request.query_params.get("digest"))
    _check_content_range(request, upload)
    try:
        await _receive(ctx, request, upload)
    except RegistryError as err:
        if err.status == 413:
            await _cancel(ctx, upload)
        raise
    return await _commit(ctx, request, caller, repo, upload, digest)


@endpoint
async def cancel_upload(request: Request) -> Response:
    ctx, _, repo = await require(request, PUSH)
    upload = await _load_upload(ctx, repo, request.path_params["uuid"])
    await _cancel(ctx, upload)
    return Response(status_code=204, headers={"Content-Length": "0"})

