"""Open a feed location: a local path, a file:// URL or an http(s) URL; fingerprint its content."""

from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

MAX_FEED_BYTES = 1024 * 1024 * 1024  # a compressed feed bigger than this is refused


class FeedError(Exception):
    """A feed that cannot be read; the updater run is recorded as failed, old data stays."""


@dataclass
class FeedFile:
    """One document of a feed: its name (for format sniffing) and bytes (decompressed if .gz)."""

    name: str
    data: bytes


def local_path(location: str) -> Path | None:
    parts = urlsplit(location)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme in ("", ) or (len(parts.scheme) == 1 and location[1:3] == ":\\"):
        return Path(location)
    return None


def _gunzip(name: str, data: bytes) -> FeedFile:
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise FeedError(f"{name}: bad gzip: {err}") from None
        name = name.removesuffix(".gz")
    return FeedFile(name, data)


async def read_location(location: str, client: httpx.AsyncClient | None = None) -> list[FeedFile]:
    """Every document at a location: a directory's files (recursively), a zip's members, or one file."""
    path = local_path(location)
    if path is not None:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            return [_gunzip(str(p.relative_to(path)), p.read_bytes()) for p in files]
        try:
            data = path.read_bytes()
        except OSError as err:
            raise FeedError(f"{location}: {err.strerror or err}") from None
        name = path.name
    else:
        if urlsplit(location).scheme not in ("http", "https"):
            raise FeedError(f"{location}: unsupported URL scheme")
        own = client is None
        client = client or httpx.AsyncClient(follow_redirects=True, timeout=httpx.Timeout(300.0, connect=30.0))
        try:
            resp = await client.get(location)
            if resp.status_code != 200:
                raise FeedError(f"{location}: HTTP {resp.status_code}")
            data = resp.content
        except httpx.HTTPError as err:
            raise FeedError(f"{location}: {err}") from None
        finally:
            if own:
                await client.aclose()
        name = urlsplit(location).path.rsplit("/", 1)[-1] or "feed"
    if len(data) > MAX_FEED_BYTES:
        raise FeedError(f"{location}: larger than {MAX_FEED_BYTES} bytes")
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                return [FeedFile(info.filename, zf.read(info)) for info in zf.infolist() if not info.is_dir()]
        except zipfile.BadZipFile as err:
            raise FeedError(f"{location}: bad zip: {err}") from None
    return [_gunzip(name, data)]


def fingerprint(files: list[FeedFile]) -> str:
    """Content hash of a feed: unchanged content means no new update operation."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.name):
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.data).digest())
    return "sha256:" + h.hexdigest()
