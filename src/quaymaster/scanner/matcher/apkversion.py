"""Alpine apk version ordering, written by hand: it is a few dozen lines and the only library
that has it (univers) pulls in a large dependency tree for this one comparison.

Rules (apk-tools): dot-separated numbers, an optional letter, suffixes ordered
_alpha < _beta < _pre < _rc < (none) < _cvs < _svn < _git < _hg < _p (each with an optional
number), an optional ~commit (ignored), then -rN. When token kinds differ, a pre-release suffix
sorts lowest; otherwise the version whose token kind is "later" in the grammar is the smaller one
(1.0 < 1.0.1, 1.0a < 1.0.1, 1.0-r1 < 1.0.1, 1.0 < 1.0_p1)."""

from __future__ import annotations

import re

_DIGIT, _LETTER, _SUFFIX, _SUFFIX_NO, _REVISION, _END = range(1, 7)
_SUFFIXES = {"alpha": -4, "beta": -3, "pre": -2, "rc": -1, "cvs": 1, "svn": 2, "git": 3, "hg": 4, "p": 5}
_TOKEN = re.compile(r"\.?(\d+)|([a-z])(?![a-z])|_([a-z]+)(\d*)|~[0-9a-f]+|-r(\d+)")


class InvalidApkVersion(ValueError):
    pass


def _tokens(version: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    pos = 0
    text = version.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise InvalidApkVersion(version)
        digits, letter, suffix, suffix_no, revision = m.groups()
        if digits is not None:
            if out and out[-1][0] != _DIGIT:
                raise InvalidApkVersion(version)
            out.append((_DIGIT, int(digits)))
        elif letter is not None:
            out.append((_LETTER, ord(letter)))
        elif suffix is not None:
            if suffix not in _SUFFIXES:
                raise InvalidApkVersion(version)
            out.append((_SUFFIX, _SUFFIXES[suffix]))
            if suffix_no:
                out.append((_SUFFIX_NO, int(suffix_no)))
        elif revision is not None:
            out.append((_REVISION, int(revision)))
        pos = m.end()
    if not out or out[0][0] != _DIGIT:
        raise InvalidApkVersion(version)
    out.append((_END, 0))
    return out


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as a sorts before, equal to, or after b."""
    ta, tb = _tokens(a), _tokens(b)
    for (kind_a, val_a), (kind_b, val_b) in zip(ta, tb):
        if kind_a == kind_b:
            if val_a != val_b:
                return -1 if val_a < val_b else 1
            if kind_a == _END:
                return 0
            continue
        if kind_a == _SUFFIX and val_a < 0:
            return -1
        if kind_b == _SUFFIX and val_b < 0:
            return 1
        return -1 if kind_a > kind_b else 1
    return 0


def is_valid(version: str) -> bool:
    try:
        _tokens(version)
        return True
    except InvalidApkVersion:
        return False
