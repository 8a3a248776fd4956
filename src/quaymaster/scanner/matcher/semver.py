"""Semantic-version ordering for Go modules and OSV SEMVER ranges ("v" prefix allowed).

Hand-written because SemVer 2.0 precedence is short and exact; a library would add weight only."""

from __future__ import annotations

import re

_SEMVER = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


class InvalidSemver(ValueError):
    pass


def _key(version: str):
    m = _SEMVER.match(version.strip())
    if not m:
        raise InvalidSemver(version)
    major, minor, patch, pre = m.groups()
    core = (int(major), int(minor or 0), int(patch or 0))
    if pre is None:
        return core, (1,)  # a release sorts after all of its pre-releases
    idents = []
    for part in pre.split("."):
        # numeric identifiers sort numerically and before alphanumeric ones
        idents.append((0, int(part), "") if part.isdigit() else (1, 0, part))
    return core, (0, tuple(idents))


def compare(a: str, b: str) -> int:
    ka, kb = _key(a), _key(b)
    return (ka > kb) - (ka < kb)


def is_valid(version: str) -> bool:
    return bool(_SEMVER.match(version.strip()))
