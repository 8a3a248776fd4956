"""Parsers for the package databases and release files a layer may hold.

Each takes the bytes of one file (already size-capped by the layer reader) and returns plain dicts
that go into the stored layer result. Versions of these parsers feed the index_state."""

from __future__ import annotations

import posixpath
import re
from email.parser import HeaderParser

from debian.deb822 import Deb822
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from quaymaster.scanner.matcher.versions import pep440_normalized

# name -> (version, kind); bump a version when its output for the same input changes.
SCANNERS: dict[str, tuple[str, str]] = {
    "dpkg": ("1", "package"),
    "apk": ("1", "package"),
    "python": ("1", "package"),
    "os-release": ("1", "distribution"),
    "whiteout": ("1", "file"),
}

DPKG_STATUS = re.compile(r"^(?:.*/)?var/lib/dpkg/status$")
DPKG_STATUS_D = re.compile(r"^(?:.*/)?var/lib/dpkg/status\.d/[^/]+$")
APK_INSTALLED = "lib/apk/db/installed"
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
LSB_RELEASE = "etc/lsb-release"
PYTHON_META = re.compile(
    r"^(?P<site>(?:.*/)?(?:site|dist)-packages)/(?P<dir>[^/]+\.(?:dist-info|egg-info))(?:/(?P<file>METADATA|PKG-INFO|INSTALLER))?$"
)
_SYSTEM_INSTALLERS = {"dpkg", "rpm", "apk"}
_SOURCE_FIELD = re.compile(r"^\s*(\S+)(?:\s+\((\S+)\))?\s*$")


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def parse_dpkg_status(data: bytes, package_db: str) -> list[dict]:
    """Installed packages of a dpkg status file; a file that is not dpkg's yields nothing."""
    packages = []
    for para in Deb822.iter_paragraphs(_text(data).splitlines(keepends=True)):
        name, version, status = para.get("Package"), para.get("Version"), para.get("Status", "")
        if not name or not version:
            continue
        words = status.split()
        if "ok" not in words or "installed" not in words or "not-installed" in words:
            continue
        src_name, src_version = name, version
        if para.get("Source"):
            m = _SOURCE_FIELD.match(para["Source"])
            if m:
                src_name, src_version = m.group(1), m.group(2) or version
        packages.append({
            "name": name, "version": version, "kind": "binary", "arch": para.get("Architecture", ""),
            "source": {"name": src_name, "version": src_version},
            "package_db": package_db, "filepath": package_db, "ecosystem": "dpkg", "repository": None,
            "normalized_version": "",
        })
    return packages


def parse_apk_installed(data: bytes, package_db: str = APK_INSTALLED) -> list[dict]:
    """Records of `lib/apk/db/installed`: blank-line separated `K:value` lines."""
    packages = []
    for record in re.split(r"\n\s*\n", _text(data)):
        fields: dict[str, str] = {}
        for line in record.splitlines():
            if len(line) > 2 and line[1] == ":" and line[0] not in fields:
                fields[line[0]] = line[2:].strip()
        name, version = fields.get("P"), fields.get("V")
        if not name or not version:
            continue
        origin = fields.get("o") or name
        packages.append({
            "name": name, "version": version, "kind": "binary", "arch": fields.get("A", ""),
            "source": {"name": origin, "version": version},
            "package_db": package_db, "filepath": package_db, "ecosystem": "apk", "repository": None,
            "normalized_version": "",
        })
    return packages


def parse_python_metadata(data: bytes, site: str, filepath: str) -> dict | None:
    """One installed distribution from METADATA / PKG-INFO headers; None if unusable."""
    headers = HeaderParser().parsestr(_text(data), headersonly=True)
    name, raw_version = headers.get("Name"), headers.get("Version")
    if not name or not raw_version:
        return None
    try:
        version = str(Version(raw_version.strip()))
    except InvalidVersion:
        version = raw_version.strip()
    return {
        "name": str(canonicalize_name(name.strip())), "version": version, "kind": "binary", "arch": "",
        "source": None, "package_db": f"python:{site}", "filepath": filepath, "ecosystem": "python",
        "repository": "pypi", "normalized_version": pep440_normalized(version),
    }


def is_system_installer(data: bytes) -> bool:
    """Distributions installed by the OS package manager are reported by that ecosystem instead."""
    return _text(data).strip().lower() in _SYSTEM_INSTALLERS


def _key_values(data: bytes) -> dict[str, str]:
    values = {}
    for line in _text(data).splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value.replace('\\"', '"').replace("\\$", "$").replace("\\\\", "\\")
    return values


_DEBIAN_CODENAMES = {
    "6": "squeeze", "7": "wheezy", "8": "jessie", "9": "stretch", "10": "buster", "11": "bullseye",
    "12": "bookworm", "13": "trixie", "14": "forky",
}


def parse_os_release(data: bytes) -> dict | None:
    """A Distribution (without id) from os-release; Debian code names filled in when absent."""
    kv = _key_values(data)
    did = kv.get("ID", "").lower()
    if not did:
        return None
    dist = {
        "did": did, "name": kv.get("NAME", ""), "version": kv.get("VERSION", ""),
        "version_code_name": kv.get("VERSION_CODENAME", ""), "version_id": kv.get("VERSION_ID", ""),
        "arch": "", "cpe": kv.get("CPE_NAME", ""), "pretty_name": kv.get("PRETTY_NAME", ""),
    }
    if did == "debian" and not dist["version_code_name"]:
        m = re.search(r"\((\w+)\)", dist["version"])
        dist["version_code_name"] = m.group(1) if m else _DEBIAN_CODENAMES.get(dist["version_id"], "")
    return dist


def parse_lsb_release(data: bytes) -> dict | None:
    """Old Ubuntu images carry only lsb-release."""
    kv = _key_values(data)
    did = kv.get("DISTRIB_ID", "").lower()
    if not did:
        return None
    release = kv.get("DISTRIB_RELEASE", "")
    return {
        "did": did, "name": kv.get("DISTRIB_ID", ""), "version": release,
        "version_code_name": kv.get("DISTRIB_CODENAME", ""), "version_id": release, "arch": "", "cpe": "",
        "pretty_name": kv.get("DISTRIB_DESCRIPTION", ""),
    }


def python_dir_of(path: str) -> tuple[str, str, str | None] | None:
    """(site-packages dir, *.dist-info|*.egg-info path, member file or None) for python metadata."""
    m = PYTHON_META.match(path)
    if not m:
        return None
    return m.group("site"), posixpath.join(m.group("site"), m.group("dir")), m.group("file")
