"""The storage contract every driver implements (local filesystem, S3-compatible object stores).

Blobs are content-addressed by a digest the caller has already validated; upload sessions are
addressed by server-generated ids. Drivers never see raw user input as paths.
"""

import abc
from dataclasses import dataclass
from typing import AsyncIterator


class StorageError(Exception):
    """The backend failed; the request should fail with 5xx and leave no visible blob."""


class BlobNotFound(StorageError):
    """The blob (or upload piece) asked for is not in this location."""


@dataclass(frozen=True)
class StoredBlob:
    """One blob object as a location holds it: what `list_blobs()` reports."""

    digest: str
    size: int
    modified: float  # last write, epoch seconds


class UploadWriter(abc.ABC):
    """Receives one request's worth of upload bytes, streamed."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def close(self) -> dict:
        """Make the written bytes durable; returns the upload's new driver metadata."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Give up on this request's bytes (they will be cut off by the next writer)."""


class BlobStore(abc.ABC):
    name: str

    # --- upload sessions -------------------------------------------------------------------
    @abc.abstractmethod
    async def start_upload(self, upload_id: str) -> dict:
        """Prepare an empty upload; returns driver metadata kept with the session."""

    @abc.abstractmethod
    async def open_writer(self, upload_id: str, metadata: dict, offset: int) -> "UploadWriter":
        """A writer appending at `offset`; anything past `offset` that a crashed writer left is dropped."""

    @abc.abstractmethod
    def read_upload(self, upload_id: str, metadata: dict, length: int) -> AsyncIterator[bytes]:
        """Stream the first `length` bytes of an upload (to rebuild a hash on another node)."""

    @abc.abstractmethod
    async def commit_upload(self, upload_id: str, metadata: dict, digest: str, length: int) -> None:
        """Make the upload's first `length` bytes visible as `digest` atomically (temp + rename)."""

    @abc.abstractmethod
    async def cancel_upload(self, upload_id: str, metadata: dict) -> None:
        """Forget an upload's data; missing data is not an error."""

    # --- blobs -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def exists(self, digest: str) -> bool: ...

    @abc.abstractmethod
    async def size(self, digest: str) -> int | None: ...

    @abc.abstractmethod
    def stream(self, digest: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes [start, end) of a blob; BlobNotFound if it is not stored here."""

    @abc.abstractmethod
    async def put(self, digest: str, data: bytes) -> None:
        """Store a small, already verified blob."""

    @abc.abstractmethod
    async def delete(self, digest: str) -> None: ...

    @abc.abstractmethod
    def list_blobs(self) -> AsyncIterator[StoredBlob]:
        """Every blob stored in this location, in ascending digest order (byte order), read
        lazily page by page. Upload data and anything that is not a well-formed blob name are
        left out. Blobs written or deleted while the listing runs may or may not appear."""

    def local_path(self, digest: str) -> str | None:
        """A filesystem path the web server may send directly (local drivers only)."""
        return None

    async def download_url(self, digest: str, expires_in: int = 600) -> str | None:
        """A presigned URL clients can fetch directly (object stores only)."""
        return None

    async def abort_stale_uploads(self, older_than: float) -> int:
        """Abort driver-side upload state (S3 multipart uploads) older than `older_than` seconds
        that no commit will finish; returns how many. Nothing to do for most drivers."""
        return 0
