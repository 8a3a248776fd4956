"""Build fresh image data in pure Python so every test uploads blobs no tool has seen before."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform as _platform
import random
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_LAYOUT_VERSION = "1.0.0"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
FIXED_CREATED = "2024-01-01T00:00:00Z"

_MACHINE_TO_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def host_arch() -> str:
    """The Go-style architecture name podman/skopeo pick by default on this machine."""
    machine = _platform.machine().lower()
    return _MACHINE_TO_GOARCH.get(machine, machine)


def sha256_digest(data: bytes) -> str:
    """Content digest in registry form: 'sha256:<hex>'."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _random_bytes(size: int, rng: random.Random | None) -> bytes:
    """Seeded bytes when reproducibility is wanted, otherwise os.urandom."""
    return rng.randbytes(size) if rng is not None else os.urandom(size)


def _rng(seed: int | str | None) -> random.Random | None:
    """A private generator for seeded runs; None means truly random."""
    return random.Random(seed) if seed is not None else None


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    """Add a regular file with fixed metadata so seeded output is byte-identical."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    """Add a directory entry so importers create it with sane permissions."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = 0
    info.uname = info.gname = "root"
    tar.addfile(info)


def random_layer_tar(size: int = 64 * 1024, seed: int | str | None = None) -> bytes:
    """An uncompressed tar holding one file of random content (a docker-archive layer)."""
    rng = _rng(seed)
    name = _random_bytes(8, rng).hex()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_dir(tar, "quaymaster-test")
        _add_file(tar, f"quaymaster-test/{name}.bin", _random_bytes(size, rng))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    """Gzip with mtime 0 so identical input gives identical (digest-stable) output."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def random_layer(size: int = 64 * 1024, seed: int | str | None = None) -> bytes:
    """A gzip-compressed tar layer with one random file; returns the compressed bytes."""
    return gzip_bytes(random_layer_tar(size, seed))


def diff_id(layer_gz: bytes) -> str:
    """The digest of the uncompressed tar, as listed in a config's rootfs.diff_ids."""
    return sha256_digest(gzip.decompress(layer_gz))


def platform_key(os_name: str, architecture: str, variant: str | None = None) -> str:
    """'linux/arm64' or 'linux/arm/v7': the key used for per-platform results."""
    return "/".join(p for p in (os_name, architecture, variant) if p)


@dataclass(frozen=True)
class ImageSpec:
    """What one platform image should look like."""

    architecture: str = "amd64"
    os: str = "linux"
    variant: str | None = None
    layers: int = 1
    layer_size: int = 64 * 1024

    @property
    def platform(self) -> str:
        """Key for this image in WrittenImage maps."""
        return platform_key(self.os, self.architecture, self.variant)


MULTI_ARCH: tuple[ImageSpec, ...] = (ImageSpec("amd64"), ImageSpec("arm64", layers=2))


@dataclass(frozen=True)
class WrittenImage:
    """Digests of one image manifest and the blobs it references."""

    platform: str
    manifest_digest: str
    manifest_size: int
    config_digest: str
    layer_digests: tuple[str, ...]
    diff_ids: tuple[str, ...]


@dataclass(frozen=True)
class OciLayout:
    """What write_oci_layout put on disk, for assertions on what a registry returns."""

    path: Path
    ref_name: str
    images: Mapping[str, WrittenImage]
    index_digest: str | None = None

    @property
    def ref(self) -> str:
        """Transport reference for skopeo: 'oci:PATH:REF'."""
        return f"oci:{self.path}:{self.ref_name}"

    @property
    def top_digest(self) -> str:
        """Digest a registry reports for the tag: the index if any, else the single manifest."""
        if self.index_digest is not None:
            return self.index_digest
        (image,) = self.images.values()
        return image.manifest_digest

    @property
    def manifest_digests(self) -> dict[str, str]:
        """Platform -> image manifest digest."""
        return {key: image.manifest_digest for key, image in self.images.items()}

    @property
    def layer_digests(self) -> list[str]:
        """Every compressed layer digest across all platforms."""
        return [d for image in self.images.values() for d in image.layer_digests]


class _BlobStore:
    """Writes content-addressed blobs under blobs/sha256 and returns OCI descriptors."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "blobs" / "sha256"
        self.dir.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        """Store data and describe it."""
        digest = sha256_digest(data)
        (self.dir / digest.split(":", 1)[1]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}


def _json_bytes(doc: Mapping[str, Any]) -> bytes:
    """Canonical-enough JSON so the bytes we hash are the bytes we write."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def image_config(
    architecture: str,
    os_name: str,
    diff_ids: Sequence[str],
    *,
    variant: str | None = None,
    nonce: str = "",
) -> dict[str, Any]:
    """A minimal valid image config whose rootfs matches the given layers."""
    config: dict[str, Any] = {
        "created": FIXED_CREATED,
        "architecture": architecture,
        "os": os_name,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"io.quaymaster.test.nonce": nonce},
        },
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [
            {"created": FIXED_CREATED, "created_by": f"quaymaster test layer {i}"}
            for i in range(len(diff_ids))
        ],
    }
    if variant:
        config["variant"] = variant
    return config


def _write_image(
    store: _BlobStore, spec: ImageSpec, rng: random.Random | None
) -> tuple[WrittenImage, dict[str, Any]]:
    """Write one image's layers, config and manifest; return its summary and descriptor."""
    if spec.layers < 1:
        raise ValueError("an image needs at least one layer")
    layers = [
        random_layer(spec.layer_size, rng.getrandbits(64) if rng else None)
        for _ in range(spec.layers)
    ]
    layer_descs = [store.put(layer, OCI_LAYER_GZIP) for layer in layers]
    diff_ids = [diff_id(layer) for layer in layers]
    nonce = _random_bytes(16, rng).hex()
    config = image_config(spec.architecture, spec.os, diff_ids, variant=spec.variant, nonce=nonce)
    config_desc = store.put(_json_bytes(config), OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": layer_descs,
    }
    platform: dict[str, str] = {"architecture": spec.architecture, "os": spec.os}
    if spec.variant:
        platform["variant"] = spec.variant
    manifest_desc = store.put(_json_bytes(manifest), OCI_MANIFEST, platform=platform)
    written = WrittenImage(
        platform=spec.platform,
        manifest_digest=manifest_desc["digest"],
        manifest_size=manifest_desc["size"],
        config_digest=config_desc["digest"],
        layer_digests=tuple(d["digest"] for d in layer_descs),
        diff_ids=tuple(diff_ids),
    )
    return written, manifest_desc


def write_oci_layout(
    path: str | Path,
    images: Sequence[ImageSpec] | ImageSpec | None = None,
    *,
    index: bool | None = None,
    ref_name: str = "latest",
    seed: int | str | None = None,
) -> OciLayout:
    """Write an OCI image layout with one manifest, or an image index of several platforms."""
    specs: list[ImageSpec]
    if images is None:
        specs = [ImageSpec(host_arch())]
    elif isinstance(images, ImageSpec):
        specs = [images]
    else:
        specs = list(images)
    if not specs:
        raise ValueError("need at least one ImageSpec")
    use_index = len(specs) > 1 if index is None else index
    if len(specs) > 1 and not use_index:
        raise ValueError("several images can only be written as an image index")
    if len({s.platform for s in specs}) != len(specs):
        raise ValueError("platforms must be unique within one layout")

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    store = _BlobStore(root)
    rng = _rng(seed)
    written: dict[str, WrittenImage] = {}
    descriptors: list[dict[str, Any]] = []
    for spec in specs:
        image, desc = _write_image(store, spec, rng)
        written[spec.platform] = image
        descriptors.append(desc)

    annotations = {REF_NAME_ANNOTATION: ref_name}
    index_digest: str | None = None
    if use_index:
        image_index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
        top = store.put(_json_bytes(image_index), OCI_INDEX, annotations=annotations)
        index_digest = top["digest"]
    else:
        top = {key: value for key, value in descriptors[0].items() if key != "platform"}
        top["annotations"] = annotations

    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
    (root / "index.json").write_bytes(
        _json_bytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]})
    )
    return OciLayout(path=root, ref_name=ref_name, images=written, index_digest=index_digest)


def read_oci_layout_manifests(path: str | Path) -> list[dict[str, Any]]:
    """The descriptors listed in a layout's index.json (e.g. one skopeo wrote)."""
    doc = json.loads((Path(path) / "index.json").read_text())
    return list(doc.get("manifests", []))


@dataclass(frozen=True)
class DockerArchive:
    """What write_docker_archive put in the tarball."""

    path: Path
    repo_tag: str
    config_digest: str
    diff_ids: tuple[str, ...]
    architecture: str
    os: str

    @property
    def ref(self) -> str:
        """Transport reference for skopeo: 'docker-archive:PATH'."""
        return f"docker-archive:{self.path}"

    @property
    def image_id(self) -> str:
        """Image ID as podman reports it: the config digest without 'sha256:'."""
        return self.config_digest.split(":", 1)[1]


def write_docker_archive(
    path: str | Path,
    repo_tag: str,
    *,
    layers: int = 1,
    layer_size: int = 64 * 1024,
    architecture: str | None = None,
    os_name: str = "linux",
    seed: int | str | None = None,
) -> DockerArchive:
    """Write a `docker save`-style tarball that skopeo and `podman load` accept."""
    if layers < 1:
        raise ValueError("an image needs at least one layer")
    rng = _rng(seed)
    arch = architecture or host_arch()
    layer_tars = [
        random_layer_tar(layer_size, rng.getrandbits(64) if rng else None) for _ in range(layers)
    ]
    diff_ids = [sha256_digest(t) for t in layer_tars]
    config = image_config(arch, os_name, diff_ids, nonce=_random_bytes(16, rng).hex())
    config_bytes = _json_bytes(config)
    config_digest = sha256_digest(config_bytes)
    config_name = config_digest.split(":", 1)[1] + ".json"
    layer_names = [d.split(":", 1)[1] + "/layer.tar" for d in diff_ids]
    manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names}]

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in zip(layer_names, layer_tars, strict=True):
            _add_dir(tar, name.split("/", 1)[0])
            _add_file(tar, name, data)
        _add_file(tar, config_name, config_bytes)
        _add_file(tar, "manifest.json", json.dumps(manifest).encode())
    return DockerArchive(
        path=out,
        repo_tag=repo_tag,
        config_digest=config_digest,
        diff_ids=tuple(diff_ids),
        architecture=arch,
        os=os_name,
    )


@dataclass(frozen=True)
class RootfsTarball:
    """An uncompressed filesystem tarball for `podman import`, with a unique marker file."""

    path: Path
    marker: str
    files: Mapping[str, bytes] = field(default_factory=dict)


def rootfs_tarball(path: str | Path, files: Mapping[str, bytes] | None = None) -> RootfsTarball:
    """Write a small root filesystem tar; a random marker makes its layer unique."""
    marker = os.urandom(16).hex()
    contents: dict[str, bytes] = {
        "etc/hostname": b"quaymaster-test\n",
        "etc/quaymaster-marker": marker.encode() + b"\n",
        "usr/share/quaymaster/random.bin": os.urandom(4096),
    }
    contents.update(files or {})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    dirs = sorted(
        {str(Path(n).parents[i]) for n in contents for i in range(len(Path(n).parents) - 1)}
    )
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            _add_dir(tar, d)
        for name, data in contents.items():
            _add_file(tar, name, data)
    return RootfsTarball(path=out, marker=marker, files=contents)
