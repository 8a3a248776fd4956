"""One comparison per version kind, and the Clair rule for "is this version in the range"."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from debian.debian_support import Version as DebianVersion
from packaging.version import InvalidVersion
from packaging.version import Version as PEP440Version

from quaymaster.scanner.matcher import apkversion, semver


def _dpkg(a: str, b: str) -> int:
    va, vb = DebianVersion(a), DebianVersion(b)
    return (va > vb) - (va < vb)


def _pep440(a: str, b: str) -> int:
    va, vb = PEP440Version(a), PEP440Version(b)
    return (va > vb) - (va < vb)


COMPARATORS: dict[str, Callable[[str, str], int]] = {
    "dpkg": _dpkg,
    "apk": apkversion.compare,
    "pep440": _pep440,
    "semver": semver.compare,
}


@lru_cache(maxsize=65536)
def compare(kind: str, a: str, b: str) -> int | None:
    """Compare two versions of one kind; None when either cannot be parsed."""
    try:
        return COMPARATORS[kind](a, b)
    except (ValueError, InvalidVersion, KeyError):
        return None


def affected(kind: str, version: str, *, introduced: str = "", fixed: str = "", last_affected: str = "") -> bool:
    """introduced <= version, and version < fixed (or <= last_affected); no upper bound = affected.

    A version we cannot parse is reported affected only when the advisory has no bounds at all:
    a false alarm on garbage input is better than silence, but not a guess about ranges."""
    if not version:
        return False
    if introduced and introduced != "0":
        c = compare(kind, version, introduced)
        if c is None or c < 0:
            return False
    if fixed:
        c = compare(kind, version, fixed)
        return c is not None and c < 0
    if last_affected:
        c = compare(kind, version, last_affected)
        return c is not None and c <= 0
    return True


def pep440_normalized(version: str) -> str:
    """Claircore's `pep440:epoch.r1....r9` form (10 integers), or "" if not PEP 440."""
    try:
        v = PEP440Version(version)
    except InvalidVersion:
        return ""
    parts = [v.epoch, *v.release][:10]
    parts += [0] * (10 - len(parts))
    return "pep440:" + ".".join(str(p) for p in parts)
