"""S3Storage and RadosGWStorage: blobs in an S3-compatible bucket through boto3.

Layout under the location's `storage_path` prefix, as LocalStorage lays out its directory:
blobs at `<prefix>/sha256/<ab>/<hex>`, upload data at `<prefix>/uploads/<upload id>/...`.

Uploads. S3 cannot read back an incomplete multipart upload, yet a registry must be able to
re-read what a client has sent so far (to rebuild the running hash on another node), and it
must survive writers that crash half-way. So an upload is a list of ordinary objects:

- Each request's bytes are cut into *parts* of exactly `part_size` bytes (`minimum_chunk_size_mb`,
  at least 5 MiB, the S3 minimum for every part but the last). A part is buffered in a spooled
  temp file (1 MiB in memory, the rest on disk) and stored as `uploads/<id>/p<NNNNN>-<token>`
  as soon as it is full; while it uploads, the next one fills.
- What is left when the request ends (less than a part) is stored as `uploads/<id>/t-<token>`,
  the *tail*. The next request reads the tail back, continues it, and writes the parts and a
  new tail of its own.
- `<token>` is random per writer, so no writer ever overwrites an object another writer (a
  crashed one, or a concurrent one that loses the race to advance the upload) may still need.
  The upload's `storage_metadata` (returned by `close()`, saved with the byte count) is the
  only truth: `{"v": 1, "part_size": n, "parts": [token, ...], "tail": [token, size] | None,
  "drop": [names]}`. Objects it does not name are garbage; `drop` lists those the previous
  metadata named (the consumed tail), which the next writer deletes.
- Resuming at an offset below what the metadata records (after a crashed writer) keeps the
  whole parts before the offset and carries the bytes between the last whole part and the
  offset from the part or tail that holds them: the stale tail is cut off, as on disk.

Commit (the digest is already verified): a single object is copied server-side onto the
content-addressed key; several are assembled with a multipart upload whose parts are
UploadPartCopy's of the part objects (all but the last exactly `part_size`), completed
directly onto the blob key. Completion is atomic and the bytes are verified, so two uploads
committing the same digest at once both succeed and leave one correct blob. Zero-byte blobs
are an empty PUT. Then everything under `uploads/<id>/` is deleted. A crash mid-commit can
leave a multipart upload behind: `abort_stale_uploads()` aborts those (for the GC worker).

Limits and costs: a blob has at most 10,000 parts (S3's cap), so 48.8 GiB at the default 5 MiB
part size (raise `minimum_chunk_size_mb` beyond that); `maximum_chunk_size_gb` is accepted but
never binds, since no copied part exceeds `part_size`. A request that continues a tail reads it
back first (less than one part), so many tiny chunks cost more than a few large ones.

Downloads: `download_url()` is a presigned GET (600 s); with `proxy_downloads: true` it is
None and the registry streams the blob through `stream()` instead.

Parameters beyond Quay's: `proxy_downloads`, `ca_bundle` (a PEM file), and
`server_side_encryption` (e.g. `AES256`; off by default, as not every S3-compatible store has it).

boto3 is synchronous: every call runs in a worker thread (`asyncio.to_thread`), so network
I/O never blocks the event loop. TLS trusts `AWS_CA_BUNDLE`/`REQUESTS_CA_BUNDLE` (boto3 reads
them) or the location's `ca_bundle` path.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import secrets
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from quaymaster.storage.base import BlobNotFound, BlobStore, StorageError, StoredBlob, UploadWriter

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3's minimum size of every multipart part except the last
MAX_PARTS = 10_000  # S3's maximum number of parts in one multipart upload
CHUNK = MiB  # read size when streaming
SPOOL_MEMORY = MiB  # a part buffer spills to disk past this
COPY_CONCURRENCY = 4  # UploadPartCopy / DeleteObject calls in flight during a commit
PRESIGN_SECONDS = 600

_DIGEST = re.compile(r"^(sha256|sha512):([a-f0-9]{64}|[a-f0-9]{128})$")
_UPLOAD_ID = re.compile(r"^[a-f0-9-]{36}$")
_OBJECT_NAME = re.compile(r"^(p\d{5}|t)-[a-f0-9]{12}$")
_TOKEN = re.compile(r"^[a-f0-9]{12}$")
_BLOB_NAME = {"sha256": re.compile(r"^([a-f0-9]{2})/(\1[a-f0-9]{62})$"),  # in byte order, as digests sort
              "sha512": re.compile(r"^([a-f0-9]{2})/(\1[a-f0-9]{126})$")}


# --- configuration ---------------------------------------------------------------------------

@dataclass(frozen=True)
class S3Options:
    """A location's parameters, normalised from Quay's S3Storage / RadosGWStorage keys."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    signature_version: str = "s3v4"
    part_size: int = MIN_PART
    proxy_downloads: bool = False
    ca_bundle: str | None = None
    server_side_encryption: str | None = None


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _signature(value: Any) -> str:
    """Quay writes `s3v4` (or `v4`); `s3v2`/`v2`/`s3` mean the legacy S3 signature."""
    v = str(value or "s3v4").lower()
    if v in {"s3v4", "v4"}:
        return "s3v4"
    if v in {"s3v2", "v2", "s3"}:
        return "s3"
    raise ValueError(f"signature_version: unsupported {value!r} (use s3v4)")


def _part_size(mb: Any) -> int:
    size = int(float(mb) * MiB) if mb is not None else MIN_PART
    if size < MIN_PART:
        raise ValueError("minimum_chunk_size_mb: must be at least 5")
    return size


def _endpoint(host: Any, port: Any, secure: bool) -> str:
    scheme = "https" if secure else "http"
    return f"{scheme}://{host}:{int(port)}" if port else f"{scheme}://{host}"


def s3_options(driver: str, params: dict[str, Any]) -> S3Options:
    """Read one DISTRIBUTED_STORAGE_CONFIG entry; ValueError names the offending key."""
    common: dict[str, Any] = {
        "prefix": str(params.get("storage_path") or "").strip("/"),
        "signature_version": _signature(params.get("signature_version")),
        "proxy_downloads": _flag(params.get("proxy_downloads", False)),
        "ca_bundle": params.get("ca_bundle") or None,
        "server_side_encryption": params.get("server_side_encryption") or None,
    }
    if driver == "S3Storage":
        if not params.get("s3_bucket"):
            raise ValueError("s3_bucket: required")
        endpoint = params.get("endpoint_url") or None
        if not endpoint and params.get("host"):
            endpoint = _endpoint(params["host"], params.get("port"), _flag(params.get("is_secure", True)))
        return S3Options(
            bucket=str(params["s3_bucket"]), endpoint_url=endpoint, region=params.get("s3_region") or None,
            access_key=params.get("s3_access_key") or None, secret_key=params.get("s3_secret_key") or None,
            session_token=params.get("aws_session_token") or None,
            part_size=_part_size(params.get("minimum_chunk_size_mb")), **common,
        )
    if driver == "RadosGWStorage":
        for key in ("hostname", "bucket_name", "access_key", "secret_key"):
            if not params.get(key):
                raise ValueError(f"{key}: required")
        return S3Options(
            bucket=str(params["bucket_name"]),
            endpoint_url=_endpoint(params["hostname"], params.get("port"), _flag(params.get("is_secure", True))),
            region=params.get("region_name") or None,
            access_key=str(params["access_key"]), secret_key=str(params["secret_key"]),
            part_size=_part_size(params.get("minimum_chunk_size_mb")), **common,
        )
    raise ValueError(f"unsupported driver {driver!r}")


def _add_content_md5(request, **_: Any) -> None:
    """Some S3 implementations (Swift's s3api, older Ceph RGW) insist on Content-MD5 for DeleteObjects."""
    body = request.body if isinstance(request.body, bytes) else (request.body or b"")
    if isinstance(body, str):
        body = body.encode()
    request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()


_session: boto3.session.Session | None = None
_session_lock = threading.Lock()


def make_client(opts: S3Options):
    """A thread-safe boto3 S3 client for one location (path-style addressing on custom endpoints)."""
    config = Config(
        signature_version=opts.signature_version,
        s3={"addressing_style": "path" if opts.endpoint_url else "auto"},
        retries={"max_attempts": 4, "mode": "standard"},
        max_pool_connections=16,
        connect_timeout=10,
        read_timeout=120,
        # Checksums only where the API demands them: S3-compatible stores vary in what they accept.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    global _session
    with _session_lock:  # a boto3 Session is not thread-safe; its clients are
        if _session is None:
            _session = boto3.session.Session()  # loads the S3 service model once per process
        client = _session.client(
            "s3", endpoint_url=opts.endpoint_url, region_name=opts.region, aws_access_key_id=opts.access_key,
            aws_secret_access_key=opts.secret_key, aws_session_token=opts.session_token,
            verify=opts.ca_bundle if opts.ca_bundle else None, config=config,
        )
    client.meta.events.register("before-sign.s3.DeleteObjects", _add_content_md5)
    return client


# --- errors ----------------------------------------------------------------------------------

class S3Error(StorageError):
    """An S3 request failed; `code` is the S3 error code, `status` the HTTP status (0: no answer)."""

    def __init__(self, message: str, code: str = "", status: int = 0):
        super().__init__(message)
        self.code = code
        self.status = status


def _wrap(exc: Exception, op: str) -> S3Error:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(err.get("Code", ""))
        return S3Error(f"S3 {op} failed: {code} {err.get('Message', '')}".strip(), code, status)
    return S3Error(f"S3 {op} failed: {exc}")


def _missing(err: S3Error) -> bool:
    return err.status == 404 or err.code in {"NoSuchKey", "404", "NotFound"}


# --- upload metadata -------------------------------------------------------------------------

@dataclass
class _Upload:
    """The parsed `storage_metadata` of one upload (see the module docstring)."""

    part_size: int
    parts: list[str]
    tail: tuple[str, int] | None
    drop: list[str]

    @classmethod
    def parse(cls, metadata: dict, default_part_size: int) -> _Upload:
        if not metadata:
            return cls(default_part_size, [], None, [])
        try:
            part_size = int(metadata.get("part_size", default_part_size))
            parts = [str(t) for t in metadata.get("parts", [])]
            tail = metadata.get("tail")
            tail = (str(tail[0]), int(tail[1])) if tail else None
            drop = [str(n) for n in metadata.get("drop", [])]
        except (TypeError, ValueError, IndexError, AttributeError):
            raise StorageError("upload metadata is malformed") from None
        if (part_size < MIN_PART or not all(_TOKEN.match(t) for t in parts)
                or (tail and (not _TOKEN.match(tail[0]) or not 0 < tail[1] < part_size))
                or not all(_OBJECT_NAME.match(n) for n in drop)):
            raise StorageError("upload metadata is malformed")
        return cls(part_size, parts, tail, drop)

    def dump(self) -> dict:
        return {"v": 1, "part_size": self.part_size, "parts": list(self.parts),
                "tail": list(self.tail) if self.tail else None, "drop": list(self.drop)}

    @property
    def size(self) -> int:
        return len(self.parts) * self.part_size + (self.tail[1] if self.tail else 0)

    def pieces(self) -> list[tuple[str, int]]:
        """(object name, size) in byte order."""
        out = [(_part_name(i, t), self.part_size) for i, t in enumerate(self.parts)]
        if self.tail:
            out.append((f"t-{self.tail[0]}", self.tail[1]))
        return out


def _part_name(index: int, token: str) -> str:
    return f"p{index:05d}-{token}"


# --- the writer ------------------------------------------------------------------------------

class _S3Writer(UploadWriter):
    """Appends one request's bytes: full parts go up as they fill, the remainder becomes the tail."""

    def __init__(self, store: S3Store, upload_id: str, base: _Upload, keep: int,
                 carry: tuple[str, int] | None, drop: list[str], truncated: bool):
        self.store = store
        self.upload_id = upload_id
        self.base = base
        self.part_size = base.part_size
        self.parts = list(base.parts[:keep])
        self.carry = carry  # (object name, byte count) to read back before the first new byte
        self.drop = drop  # names the new metadata makes unreachable
        self.token = secrets.token_hex(6)
        self.spool = self._new_spool()
        self.filled = 0
        self.inflight: asyncio.Task | None = None
        self.created: list[str] = []
        self.touched = truncated  # False: the stored objects already describe the upload
        self.closed = False

    @staticmethod
    def _new_spool():
        return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)

    async def _load_carry(self) -> None:
        name, count = self.carry
        self.carry = None
        key = self.store._upload_key(self.upload_id, name)
        async with aclosing(self.store._read_object(key, 0, count)) as chunks:
            async for chunk in chunks:
                self.spool.write(chunk)
                self.filled += len(chunk)
        if self.filled != count:
            raise StorageError("upload data is shorter than recorded")

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.touched = True
        try:
            if self.carry is not None:
                await self._load_carry()
            view = memoryview(data)
            while view:
                piece = view[: self.part_size - self.filled]
                self.spool.write(piece)
                self.filled += len(piece)
                view = view[len(piece):]
                if self.filled == self.part_size:
                    await self._ship_part()
        except BaseException:
            await self.abort()
            raise

    async def _ship_part(self) -> None:
        if self.inflight is not None:
            await self.inflight
            self.inflight = None
        if len(self.parts) + 1 >= MAX_PARTS:
            raise StorageError(f"upload exceeds {MAX_PARTS} parts of {self.part_size} bytes;"
                               " raise minimum_chunk_size_mb for blobs this large")
        name = _part_name(len(self.parts), self.token)
        self.parts.append(self.token)
        self.created.append(name)
        spool, size = self.spool, self.filled
        self.spool, self.filled = self._new_spool(), 0
        # One part uploads while the next fills: at most two buffers per writer.
        self.inflight = asyncio.ensure_future(self.store._put_spool(self.store._upload_key(self.upload_id, name),
                                                                    spool, size))

    async def close(self) -> dict:
        self.closed = True
        try:
            if not self.touched:
                return _Upload(self.part_size, self.base.parts, self.base.tail, []).dump()
            if self.carry is not None:
                await self._load_carry()
            if self.inflight is not None:
                await self.inflight
                self.inflight = None
            tail = None
            if self.filled:
                name = f"t-{self.token}"
                self.created.append(name)
                spool, self.spool = self.spool, None
                await self.store._put_spool(self.store._upload_key(self.upload_id, name), spool, self.filled)
                tail = (self.token, self.filled)
            return _Upload(self.part_size, self.parts, tail, self.drop).dump()
        finally:
            if self.spool is not None:
                self.spool.close()

    async def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.inflight is not None:
            await asyncio.gather(self.inflight, return_exceptions=True)
            self.inflight = None
        if self.spool is not None:
            self.spool.close()
        # This writer's objects have unique names nobody else refers to.
        await self.store._delete_names(self.upload_id, self.created)


# --- the store -------------------------------------------------------------------------------

class S3Store(BlobStore):
    list_page_size = 1000  # keys per ListObjectsV2 request (S3's maximum)

    def __init__(self, name: str, opts: S3Options, client=None):
        self.name = name
        self.opts = opts
        self.bucket = opts.bucket
        self.prefix = f"{opts.prefix}/" if opts.prefix else ""
        self.client = client or make_client(opts)

    @classmethod
    def from_config(cls, name: str, driver: str, params: dict[str, Any]) -> S3Store:
        try:
            return cls(name, s3_options(driver, params))
        except ValueError as err:
            raise StorageError(f"DISTRIBUTED_STORAGE_CONFIG.{name}: {err}") from None

    # Keys are built only from validated digests and server-made ids; checked again here.
    def _blob_key(self, digest: str) -> str:
        m = _DIGEST.match(digest)
        if not m:
            raise StorageError(f"refusing malformed digest {digest!r}")
        algo, hexpart = m.groups()
        return f"{self.prefix}{algo}/{hexpart[:2]}/{hexpart}"

    def _upload_prefix(self, upload_id: str) -> str:
        if not _UPLOAD_ID.match(upload_id):
            raise StorageError("refusing malformed upload id")
        return f"{self.prefix}uploads/{upload_id}/"

    def _upload_key(self, upload_id: str, name: str) -> str:
        if not _OBJECT_NAME.match(name):
            raise StorageError("refusing malformed upload object name")
        return self._upload_prefix(upload_id) + name

    def _extra(self) -> dict:
        return {"ServerSideEncryption": self.opts.server_side_encryption} if self.opts.server_side_encryption else {}

    async def _call(self, op: str, **kwargs: Any) -> dict:
        try:
            return await asyncio.to_thread(getattr(self.client, op), Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _wrap(exc, op) from None

    async def _put_spool(self, key: str, spool, size: int) -> None:
        try:
            spool.seek(0)
            await self._call("put_object", Key=key, Body=spool, ContentLength=size, **self._extra())
        finally:
            spool.close()

    async def _read_object(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes [start, end) of an object, read in a thread piece by piece."""
        if end is not None and end <= start:
            return
        kwargs: dict[str, Any] = {}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            resp = await self._call("get_object", Key=key, **kwargs)
        except S3Error as err:
            if err.code == "InvalidRange":  # start at or past the end
                return
            if _missing(err):
                raise BlobNotFound(f"object {key} is missing") from None
            raise
        body = resp["Body"]
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(body.read, CHUNK)
                except (BotoCoreError, OSError) as exc:
                    raise _wrap(exc, "get_object") from None
                if not chunk:
                    break
                yield chunk
        finally:
            body.close()

    async def _list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            resp = await self._call("list_objects_v2", **kwargs)
            keys.extend(obj["Key"] for obj in resp.get("Contents", []))
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return keys

    async def _delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            resp = await self._call("delete_objects", Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errors = [e for e in resp.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise S3Error(f"S3 delete_objects failed for {len(errors)} keys: {errors[0].get('Code')}")

    async def _delete_names(self, upload_id: str, names: list[str]) -> None:
        """Best effort: a leftover object is garbage under uploads/, removed with the upload."""
        if not names:
            return
        try:
            await self._delete_keys([self._upload_key(upload_id, n) for n in names])
        except StorageError as err:
            log.warning("could not delete superseded upload objects of %s: %s", upload_id, err)

    # --- upload sessions -----------------------------------------------------------------------
    async def start_upload(self, upload_id: str) -> dict:
        self._upload_prefix(upload_id)
        return _Upload(self.opts.part_size, [], None, []).dump()

    async def open_writer(self, upload_id: str, metadata: dict, offset: int) -> UploadWriter:
        self._upload_prefix(upload_id)
        upload = _Upload.parse(metadata, self.opts.part_size)
        if offset < 0 or offset > upload.size:
            raise StorageError("upload data is shorter than recorded")
        if offset == upload.size:
            # Metadata that matches the recorded offset is the recorded state: what it dropped
            # is unreachable now. (Metadata longer than the offset came from a writer whose
            # result was never recorded, so it proves nothing: leave the objects to the commit.)
            await self._delete_names(upload_id, upload.drop)
        keep, count = divmod(offset, upload.part_size)
        # Everything from the piece holding the offset on is replaced by this writer's objects;
        # the bytes of that piece before the offset are carried over (read back lazily).
        replaced = upload.pieces()[keep:]
        carry = (replaced[0][0], count) if count else None
        return _S3Writer(self, upload_id, upload, keep, carry, [n for n, _ in replaced],
                         truncated=offset != upload.size)

    async def read_upload(self, upload_id: str, metadata: dict, length: int) -> AsyncIterator[bytes]:
        upload = _Upload.parse(metadata, self.opts.part_size)
        if length > upload.size:
            raise StorageError("upload data is shorter than recorded")
        remaining = length
        for name, size in upload.pieces():
            if remaining <= 0:
                break
            take = min(size, remaining)
            got = 0
            async with aclosing(self._read_object(self._upload_key(upload_id, name), 0, take)) as chunks:
                async for chunk in chunks:
                    got += len(chunk)
                    yield chunk
            if got != take:
                raise StorageError("upload data is shorter than recorded")
            remaining -= take

    async def commit_upload(self, upload_id: str, metadata: dict, digest: str, length: int) -> None:
        key = self._blob_key(digest)
        upload = _Upload.parse(metadata, self.opts.part_size)
        if length > upload.size:
            raise StorageError("upload data is shorter than recorded")
        if not await self.exists(digest):
            pieces, remaining = [], length
            for name, size in upload.pieces():
                if remaining <= 0:
                    break
                used = min(size, remaining)
                pieces.append((name, size, used))
                remaining -= used
            if not pieces:
                await self._call("put_object", Key=key, Body=b"", **self._extra())
            elif len(pieces) == 1 and pieces[0][1] == pieces[0][2]:
                await self._call("copy_object", Key=key, **self._extra(),
                                 CopySource={"Bucket": self.bucket, "Key": self._upload_key(upload_id, pieces[0][0])})
            else:
                await self._assemble(upload_id, key, pieces)
        await self.cancel_upload(upload_id, metadata)

    async def _assemble(self, upload_id: str, key: str, pieces: list[tuple[str, int, int]]) -> None:
        """Server-side concatenation: one UploadPartCopy per piece, completed onto the blob key."""
        mpu = (await self._call("create_multipart_upload", Key=key, **self._extra()))["UploadId"]
        limit = asyncio.Semaphore(COPY_CONCURRENCY)

        async def copy(number: int, name: str, size: int, used: int) -> dict:
            kwargs: dict[str, Any] = {}
            if used != size:
                kwargs["CopySourceRange"] = f"bytes=0-{used - 1}"
            async with limit:
                resp = await self._call("upload_part_copy", Key=key, UploadId=mpu, PartNumber=number,
                                        CopySource={"Bucket": self.bucket, "Key": self._upload_key(upload_id, name)},
                                        **kwargs)
            return {"PartNumber": number, "ETag": resp["CopyPartResult"]["ETag"]}

        try:
            # Let every copy finish (or fail) before deciding, so an abort never races a copy.
            parts = await asyncio.gather(*(copy(i + 1, *p) for i, p in enumerate(pieces)), return_exceptions=True)
            failed = [p for p in parts if isinstance(p, BaseException)]
            if failed:
                raise failed[0]
            await self._call("complete_multipart_upload", Key=key, UploadId=mpu,
                             MultipartUpload={"Parts": sorted(parts, key=lambda p: p["PartNumber"])})
        except BaseException:
            try:
                await self._call("abort_multipart_upload", Key=key, UploadId=mpu)
            except StorageError as err:
                log.warning("could not abort multipart upload %s for %s: %s", mpu, key, err)
            raise

    async def cancel_upload(self, upload_id: str, metadata: dict) -> None:
        await self._delete_keys(await self._list(self._upload_prefix(upload_id)))

    async def abort_stale_uploads(self, older_than: float) -> int:
        """Abort multipart uploads under this location begun more than `older_than` seconds ago
        (left by commits that crashed half-way); returns how many were aborted."""
        cutoff = time.time() - older_than
        aborted = 0
        kwargs: dict[str, Any] = {"Prefix": self.prefix}
        while True:
            resp = await self._call("list_multipart_uploads", **kwargs)
            for item in resp.get("Uploads", []):
                if item["Initiated"].timestamp() < cutoff:
                    try:
                        await self._call("abort_multipart_upload", Key=item["Key"], UploadId=item["UploadId"])
                        aborted += 1
                    except S3Error as err:
                        if not _missing(err) and err.code != "NoSuchUpload":
                            raise
            if not resp.get("IsTruncated"):
                return aborted
            kwargs.update(KeyMarker=resp.get("NextKeyMarker", ""), UploadIdMarker=resp.get("NextUploadIdMarker", ""))

    # --- blobs -----------------------------------------------------------------------------------
    async def size(self, digest: str) -> int | None:
        try:
            resp = await self._call("head_object", Key=self._blob_key(digest))
        except S3Error as err:
            if _missing(err):
                return None
            raise
        return int(resp["ContentLength"])

    async def exists(self, digest: str) -> bool:
        return await self.size(digest) is not None

    async def stream(self, digest: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        async with aclosing(self._read_object(self._blob_key(digest), start, end)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def put(self, digest: str, data: bytes) -> None:
        if await self.exists(digest):
            return
        await self._call("put_object", Key=self._blob_key(digest), Body=data, **self._extra())

    async def delete(self, digest: str) -> None:
        try:
            await self._call("delete_object", Key=self._blob_key(digest))
        except S3Error as err:
            if not _missing(err):
                raise

    async def list_blobs(self) -> AsyncIterator[StoredBlob]:
        """ListObjectsV2 under `<prefix>/<algo>/`, page by page; S3 lists keys in byte order,
        which is digest order for this layout. Upload objects live elsewhere and are not seen."""
        for algo, name in _BLOB_NAME.items():
            start = f"{self.prefix}{algo}/"
            kwargs: dict[str, Any] = {"Prefix": start, "MaxKeys": self.list_page_size}
            while True:
                resp = await self._call("list_objects_v2", **kwargs)
                for obj in resp.get("Contents", []):
                    m = name.match(obj["Key"][len(start):])
                    if m:
                        yield StoredBlob(f"{algo}:{m.group(2)}", int(obj["Size"]), obj["LastModified"].timestamp())
                token = resp.get("NextContinuationToken")
                if not resp.get("IsTruncated") or not token:
                    break
                kwargs["ContinuationToken"] = token

    async def download_url(self, digest: str, expires_in: int = PRESIGN_SECONDS) -> str | None:
        if self.opts.proxy_downloads:
            return None
        # Signing is local computation: no request leaves the process.
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._blob_key(digest)}, ExpiresIn=expires_in)
