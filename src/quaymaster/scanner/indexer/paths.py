"""Tar member names as clean relative paths, and OCI whiteout markers."""

from __future__ import annotations

import posixpath

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


def clean(name: str) -> str:
    """`./etc/os-release` and `/etc/os-release` both become `etc/os-release`; `..` is collapsed."""
    path = posixpath.normpath("/" + name.replace("\\", "/")).lstrip("/")
    return "" if path == "." else path


def whiteout_target(path: str) -> tuple[str, str] | None:
    """("file", hidden path) for `.wh.<name>`, ("opaque", dir) for the opaque marker, else None."""
    head, base = posixpath.split(path)
    if base == OPAQUE_MARKER:
        return "opaque", head
    if base.startswith(WHITEOUT_PREFIX):
        return "file", posixpath.join(head, base[len(WHITEOUT_PREFIX):])
    return None


def is_under(path: str, parent: str) -> bool:
    """True when path is parent itself or inside it ("" is the root, which holds everything)."""
    return parent == "" or path == parent or path.startswith(parent + "/")
