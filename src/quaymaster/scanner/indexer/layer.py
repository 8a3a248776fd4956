"""Read one layer archive as a stream, once, and collect what the detectors need.

Nothing is extracted: members are read into memory only when they are files we parse, and each
such read is capped. Tar member names are used as dictionary keys, never as filesystem paths."""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

from quaymaster.scanner.indexer import detectors as d
from quaymaster.scanner.indexer.paths import clean, whiteout_target

MiB = 1024 * 1024
CAPS = {"dpkg": 64 * MiB, "apk": 64 * MiB, "python": 4 * MiB, "release": 64 * 1024}
_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


class LayerError(Exception):
    """The layer cannot be indexed (bad archive, a file over its size cap, ...)."""


@dataclass
class _Collected:
    dpkg: dict[str, bytes] = field(default_factory=dict)
    apk: dict[str, bytes] = field(default_factory=dict)
    python_meta: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # dir -> (site, bytes)
    python_installer: dict[str, bytes] = field(default_factory=dict)
    release: dict[str, bytes] = field(default_factory=dict)
    symlinks: set[str] = field(default_factory=set)
    whiteouts: list[str] = field(default_factory=list)
    opaques: list[str] = field(default_factory=list)


def open_decompressed(raw: BinaryIO) -> BinaryIO:
    """Sniff gzip / zstd / plain tar by magic bytes and return a streaming reader."""
    head = raw.read(4)
    raw.seek(0)
    if head[:2] == _GZIP:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if head == _ZSTD:
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]
    return raw


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, cap: int, path: str) -> bytes:
    if member.size > cap:
        raise LayerError(f"{path} is {member.size} bytes, over the {cap}-byte limit")
    handle = tar.extractfile(member)
    return handle.read(cap + 1) if handle else b""


def _collect(stream: BinaryIO) -> _Collected:
    got = _Collected()
    try:
        tar = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 - closed by the `with` below
    except tarfile.ReadError as err:
        if "empty" in str(err):
            return got
        raise LayerError(f"not a tar archive: {err}") from None
    with tar:
        for member in tar:
            path = clean(member.name)
            if not path:
                continue
            marker = whiteout_target(path)
            if marker:
                (got.opaques if marker[0] == "opaque" else got.whiteouts).append(marker[1])
                continue
            if member.issym() or member.islnk():
                got.symlinks.add(path)
                continue
            if not member.isfile():
                continue
            if d.DPKG_STATUS.match(path) or d.DPKG_STATUS_D.match(path):
                got.dpkg[path] = _read(tar, member, CAPS["dpkg"], path)
            elif path == d.APK_INSTALLED:
                got.apk[path] = _read(tar, member, CAPS["apk"], path)
            elif path in d.OS_RELEASE or path == d.LSB_RELEASE:
                got.release[path] = _read(tar, member, CAPS["release"], path)
            else:
                py = d.python_dir_of(path)
                if py:
                    site, meta_dir, name = py
                    if name == "INSTALLER":
                        got.python_installer[meta_dir] = _read(tar, member, CAPS["release"], path)
                    elif name in ("METADATA", "PKG-INFO") or (name is None and meta_dir.endswith(".egg-info")):
                        # Headers come first; a long description past the cap is simply not read.
                        handle = tar.extractfile(member)
                        got.python_meta[meta_dir] = (site, handle.read(CAPS["python"]) if handle else b"")
    return got


def scan_layer_stream(raw: BinaryIO) -> dict:
    """The stored layer result: packages, distribution, package DBs present, whiteouts."""
    try:
        got = _collect(open_decompressed(raw))
    except (OSError, EOFError, zstandard.ZstdError, tarfile.TarError) as err:
        raise LayerError(f"cannot read layer archive: {err}") from None
    packages: list[dict] = []
    dbs: list[str] = []
    for path, data in sorted(got.dpkg.items()):
        db = path.rsplit("/", 1)[0] + "/" if "/status.d/" in path else path
        if db not in dbs:
            dbs.append(db)
        packages.extend(d.parse_dpkg_status(data, db))
    for path, data in got.apk.items():
        dbs.append(path)
        packages.extend(d.parse_apk_installed(data, path))
    for meta_dir, (site, data) in sorted(got.python_meta.items()):
        if meta_dir in got.python_installer and d.is_system_installer(got.python_installer[meta_dir]):
            continue
        pkg = d.parse_python_metadata(data, site, meta_dir)
        if pkg:
            packages.append(pkg)
    dist = None
    for path in d.OS_RELEASE:  # etc/os-release wins unless it is only a symlink
        if path in got.release:
            dist = d.parse_os_release(got.release[path])
            if dist:
                dist["source_path"] = path
                break
    if dist is None and d.LSB_RELEASE in got.release:
        dist = d.parse_lsb_release(got.release[d.LSB_RELEASE])
        if dist:
            dist["source_path"] = d.LSB_RELEASE
    return {"packages": packages, "dist": dist, "dbs": dbs, "whiteouts": sorted(set(got.whiteouts)),
            "opaques": sorted(set(got.opaques))}


def scan_layer_file(path: Path) -> dict:
    with open(path, "rb") as raw:
        return scan_layer_stream(raw)


def scan_layer_bytes(data: bytes) -> dict:
    """For tests and tiny layers."""
    return scan_layer_stream(io.BytesIO(data))
