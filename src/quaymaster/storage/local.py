"""LocalStorage: blobs at <storage_path>/sha256/<ab>/<hex>, uploads at <storage_path>/uploads/<id>."""

import asyncio
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import AsyncIterator

from quaymaster.storage.base import BlobNotFound, BlobStore, StorageError, StoredBlob, UploadWriter

_DIGEST = re.compile(r"^(sha256|sha512):([a-f0-9]{64}|[a-f0-9]{128})$")
_HEX_LENGTH = {"sha256": 64, "sha512": 128}  # in byte order, as digests sort
_HEX = re.compile(r"^[a-f0-9]+$")
_UPLOAD_ID = re.compile(r"^[a-f0-9-]{36}$")
CHUNK = 1024 * 1024


class _FileWriter(UploadWriter):
    # Plain writes: they land in the page cache in microseconds, cheaper than a thread hop per chunk.
    def __init__(self, fh, metadata: dict):
        self.fh = fh
        self.metadata = metadata

    async def write(self, data: bytes) -> None:
        self.fh.write(data)

    async def close(self) -> dict:
        self.fh.close()
        return self.metadata

    async def abort(self) -> None:
        self.fh.close()


class LocalStorage(BlobStore):
    def __init__(self, name: str, storage_path: str):
        self.name = name
        self.root = Path(storage_path).resolve()
        self.uploads = self.root / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)

    # Paths are built only from validated digests and server-made ids; checked again here.
    def _blob_path(self, digest: str) -> Path:
        m = _DIGEST.match(digest)
        if not m:
            raise StorageError(f"refusing malformed digest {digest!r}")
        algo, hexpart = m.groups()
        return self.root / algo / hexpart[:2] / hexpart

    def _upload_path(self, upload_id: str) -> Path:
        if not _UPLOAD_ID.match(upload_id):
            raise StorageError("refusing malformed upload id")
        return self.uploads / upload_id

    async def start_upload(self, upload_id: str) -> dict:
        self._upload_path(upload_id).touch()
        return {}

    async def open_writer(self, upload_id: str, metadata: dict, offset: int) -> UploadWriter:
        path = self._upload_path(upload_id)
        try:
            fh = open(path, "r+b")
        except FileNotFoundError:
            raise StorageError("upload data is missing") from None
        fh.seek(offset)
        fh.truncate()
        return _FileWriter(fh, metadata)

    async def read_upload(self, upload_id: str, metadata: dict, length: int) -> AsyncIterator[bytes]:
        remaining = length
        with open(self._upload_path(upload_id), "rb") as fh:
            while remaining > 0:
                chunk = fh.read(min(CHUNK, remaining))
                if not chunk:
                    raise StorageError("upload data is shorter than recorded")
                remaining -= len(chunk)
                yield chunk

    async def commit_upload(self, upload_id: str, metadata: dict, digest: str, length: int) -> None:
        src = self._upload_path(upload_id)
        dst = self._blob_path(digest)
        if dst.exists():
            src.unlink(missing_ok=True)
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "r+b") as fh:
            fh.truncate(length)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(src, dst)  # atomic: readers see no blob or the whole blob

    async def cancel_upload(self, upload_id: str, metadata: dict) -> None:
        self._upload_path(upload_id).unlink(missing_ok=True)

    async def exists(self, digest: str) -> bool:
        return self._blob_path(digest).is_file()

    async def size(self, digest: str) -> int | None:
        try:
            return self._blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    async def stream(self, digest: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        try:
            fh = open(self._blob_path(digest), "rb")  # noqa: SIM115 (closed by the `with` below)
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} is missing") from None
        with fh:
            fh.seek(start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                chunk = fh.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    async def put(self, digest: str, data: bytes) -> None:
        dst = self._blob_path(digest)
        if dst.exists():
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.uploads, prefix=".put-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dst)

    async def delete(self, digest: str) -> None:
        self._blob_path(digest).unlink(missing_ok=True)

    def local_path(self, digest: str) -> str | None:
        return str(self._blob_path(digest))

    # --- listing -----------------------------------------------------------------------------
    async def list_blobs(self) -> AsyncIterator[StoredBlob]:
        """Walks <root>/<algo>/<ab>/<hex>, one <ab> directory per thread hop, sorted by name.

        A symbolic link is followed only when its target lies inside the storage root."""
        for algo, length in _HEX_LENGTH.items():
            algo_dir = self.root / algo
            if not await asyncio.to_thread(self._is_dir_inside, algo_dir):
                continue
            for prefix in await asyncio.to_thread(self._subdirs, algo_dir):
                for blob in await asyncio.to_thread(self._blobs_in, algo_dir / prefix, algo, length, prefix):
                    yield blob

    def _inside_root(self, path: str) -> str | None:
        """The real path of `path` if it lies inside the storage root, else None."""
        real = os.path.realpath(path)
        return real if os.path.commonpath([str(self.root), real]) == str(self.root) else None

    def _is_dir_inside(self, path: Path) -> bool:
        try:
            if not path.is_symlink():
                return stat.S_ISDIR(path.lstat().st_mode)
        except FileNotFoundError:
            return False
        real = self._inside_root(str(path))
        return real is not None and os.path.isdir(real)

    def _sorted_entries(self, directory: Path) -> list[os.DirEntry]:
        try:
            with os.scandir(directory) as entries:
                return sorted(entries, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _subdirs(self, algo_dir: Path) -> list[str]:
        return [e.name for e in self._sorted_entries(algo_dir)
                if len(e.name) == 2 and _HEX.match(e.name) and self._is_dir_inside(Path(e.path))]

    def _blobs_in(self, directory: Path, algo: str, length: int, prefix: str) -> list[StoredBlob]:
        found = []
        for entry in self._sorted_entries(directory):
            name = entry.name
            if len(name) != length or not name.startswith(prefix) or not _HEX.match(name):
                continue
            try:
                if entry.is_symlink():
                    real = self._inside_root(entry.path)
                    if real is None:
                        continue
                    st = os.stat(real)
                else:
                    st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # deleted while we looked
                continue
            if stat.S_ISREG(st.st_mode):
                found.append(StoredBlob(f"{algo}:{name}", st.st_size, st.st_mtime))
        return found
