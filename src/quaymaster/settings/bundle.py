"""The config bundle: config.yaml plus its certificates, as a directory or as quay-config.tar.gz.

The tarball has the files at its top level, as Quay's does, so `tar xvf quay-config.tar.gz` inside
an empty directory gives a config dir the registry starts from. Reading a tarball trusts nothing:
absolute paths, `..`, links and device files are refused, and sizes are capped.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BUNDLE_FILENAME = "quay-config.tar.gz"
CONFIG_FILE = "config.yaml"
EXTRA_CA_DIR = "extra_ca_certs"
# Files Quay keeps beside config.yaml: the server certificate and key, the LDAP and database CAs.
KNOWN_FILES = ("ssl.cert", "ssl.key", "ldap.crt", "database.pem")
SECRET_FILES = frozenset({CONFIG_FILE, "ssl.key"})
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_BUNDLE_BYTES = 32 * 1024 * 1024
MAX_MEMBERS = 1000
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,200}$")


class BundleError(Exception):
    """A bundle that cannot be read or would be unsafe to unpack."""


@dataclass
class ConfigBundle:
    """config.yaml as a mapping (unknown keys kept) and the files beside it, by relative name."""

    config: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def extra_ca_certs(self) -> list[bytes]:
        return [data for name, data in sorted(self.files.items()) if name.startswith(EXTRA_CA_DIR + "/")]


def check_file_name(name: str) -> str:
    """Accept `ssl.cert`-style top-level names and `extra_ca_certs/<name>`; refuse anything else."""
    parts = name.split("/")
    if len(parts) == 1 and (name in KNOWN_FILES or (_SAFE_NAME.match(name) and name != CONFIG_FILE)):
        return name
    if len(parts) == 2 and parts[0] == EXTRA_CA_DIR and _SAFE_NAME.match(parts[1]):
        return name
    raise BundleError(f"{name!r}: not a certificate name this bundle can hold "
                      f"(use one of {', '.join(KNOWN_FILES)} or {EXTRA_CA_DIR}/<name>)")


def read_config_dir(config_dir: Path | str) -> ConfigBundle:
    """config.yaml (empty when absent) plus the known certificate files and extra_ca_certs/*."""
    config_dir = Path(config_dir)
    path = config_dir / CONFIG_FILE
    config: dict[str, Any] = {}
    if path.exists():
        config = _parse_config(path.read_bytes(), str(path))
    files: dict[str, bytes] = {}
    for name in KNOWN_FILES:
        if (config_dir / name).is_file():  # follows symlinks: Kubernetes mounts secrets that way
            files[name] = (config_dir / name).read_bytes()
    extra = config_dir / EXTRA_CA_DIR
    if extra.is_dir():
        for entry in sorted(extra.iterdir()):
            if entry.is_file() and _SAFE_NAME.match(entry.name):
                files[f"{EXTRA_CA_DIR}/{entry.name}"] = entry.read_bytes()
    return ConfigBundle(config, files)


def write_config_dir(bundle: ConfigBundle, config_dir: Path | str) -> None:
    """Write config.yaml and the files; secrets owner-only. Files already there are replaced."""
    config_dir = Path(config_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    _write(config_dir / CONFIG_FILE, dump_config(bundle.config), 0o600)
    for name, data in bundle.files.items():
        check_file_name(name)
        target = config_dir / name
        target.parent.mkdir(exist_ok=True)
        _write(target, data, 0o600 if name in SECRET_FILES else 0o644)


def dump_config(config: dict[str, Any]) -> bytes:
    return yaml.safe_dump(config, default_flow_style=False, sort_keys=False).encode()


def build_tarball(bundle: ConfigBundle) -> bytes:
    """quay-config.tar.gz: config.yaml, the certificate files and an extra_ca_certs/ directory."""
    out = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        data = dump_config(bundle.config)
        tar.addfile(_member(CONFIG_FILE, 0o600, now, len(data)), io.BytesIO(data))
        dir_info = _member(EXTRA_CA_DIR, 0o755, now, 0)
        dir_info.type = tarfile.DIRTYPE
        tar.addfile(dir_info)
        for name, data in sorted(bundle.files.items()):
            check_file_name(name)
            mode = 0o600 if name in SECRET_FILES else 0o644
            tar.addfile(_member(name, mode, now, len(data)), io.BytesIO(data))
    return out.getvalue()


def read_tarball(data: bytes) -> ConfigBundle:
    """Parse a bundle tarball (gzip or plain), refusing anything unsafe to unpack."""
    config: dict[str, Any] | None = None
    files: dict[str, bytes] = {}
    total = 0
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"not a tar archive ({exc})") from None
    with tar:
        try:
            members = _members(tar)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BundleError(f"damaged tar archive ({exc})") from None
        for member in members:
            name = _safe_member_name(member)
            if name is None or member.isdir():
                continue
            total += member.size
            if member.size > MAX_FILE_BYTES or total > MAX_BUNDLE_BYTES:
                raise BundleError(f"{member.name}: too large for a config bundle")
            fh = tar.extractfile(member)
            content = fh.read() if fh is not None else b""
            if name == CONFIG_FILE:
                config = _parse_config(content, CONFIG_FILE)
            elif "/" not in name or name.startswith(EXTRA_CA_DIR + "/"):
                try:
                    files[check_file_name(name)] = content
                except BundleError:
                    continue  # other well-formed names (notes, backups) are not ours to keep
    if config is None:
        raise BundleError(f"the archive has no {CONFIG_FILE} at its top level")
    return ConfigBundle(config, files)


def extract_tarball(data: bytes, config_dir: Path | str) -> ConfigBundle:
    """Check then unpack a bundle into config_dir."""
    bundle = read_tarball(data)
    write_config_dir(bundle, config_dir)
    return bundle


def _members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = []
    for member in tar:
        members.append(member)
        if len(members) > MAX_MEMBERS:
            raise BundleError("too many entries for a config bundle")
    return members


def _safe_member_name(member: tarfile.TarInfo) -> str | None:
    """The member's relative name, or BundleError when unpacking it could escape or alias."""
    raw = member.name
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw) or "\\" in raw:
        raise BundleError(f"{raw}: absolute paths are not allowed in a config bundle")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BundleError(f"{raw}: '..' is not allowed in a config bundle")
    if member.issym() or member.islnk():
        raise BundleError(f"{raw}: links are not allowed in a config bundle")
    if not (member.isfile() or member.isdir()):
        raise BundleError(f"{raw}: only regular files and directories are allowed in a config bundle")
    return "/".join(parts) or None


def _member(name: str, mode: int, mtime: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = mtime
    info.size = size
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _parse_config(content: bytes, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(content) or {}
    except yaml.YAMLError as exc:
        raise BundleError(f"{where}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{where}: expected a mapping of keys at the top level")
    return data


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
