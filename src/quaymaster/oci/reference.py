"""Quay's repository-name and tag rules, so invalid names fail before touching storage."""

from __future__ import annotations

import re

from quaymaster.oci.errors import OCIError

NAMESPACE_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$", re.ASCII)
NAMESPACE_MIN_LENGTH = 2
NAMESPACE_MAX_LENGTH = 255
NAME_RE = re.compile(r"^[a-z0-9][.a-z0-9_-]{0,254}$", re.ASCII)
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)


def _invalid_name(path: str, reason: str) -> OCIError:
    """Build the NAME_INVALID error with the offending path attached."""
    return OCIError("NAME_INVALID", f"invalid repository name {path!r}: {reason}", {"name": path})


def split_repository(path: str) -> tuple[str, str]:
    """Split "<namespace>/<name>", enforcing Quay's rules for both parts."""
    if not isinstance(path, str) or not path:
        raise OCIError("NAME_INVALID", "repository name is required", {"name": path})
    parts = path.split("/")
    if len(parts) == 1:
        raise _invalid_name(path, "expected <namespace>/<name>")
    if len(parts) > 2:
        raise _invalid_name(path, "nested repository names are not supported")
    namespace, name = parts
    if not NAMESPACE_MIN_LENGTH <= len(namespace) <= NAMESPACE_MAX_LENGTH:
        raise _invalid_name(path, f"namespace must be {NAMESPACE_MIN_LENGTH}-"
                                  f"{NAMESPACE_MAX_LENGTH} characters long")
    if not NAMESPACE_RE.fullmatch(namespace):
        raise _invalid_name(path, "namespace must be lowercase letters and digits, "
                                  "separated by single '.', '_' or '-'")
    if not NAME_RE.fullmatch(name):
        raise _invalid_name(path, "name must start with a lowercase letter or digit, then up to "
                                  "254 lowercase letters, digits, '.', '_' or '-'")
    return namespace, name


def is_valid_tag(tag: str) -> bool:
    """Yes/no tag check for listing and filtering code."""
    return isinstance(tag, str) and TAG_RE.fullmatch(tag) is not None


def validate_tag(tag: str) -> None:
    """Reject a tag the registry could not store or serve back."""
    if not is_valid_tag(tag):
        raise OCIError("TAG_INVALID", f"invalid tag {tag!r}: must match {TAG_RE.pattern}",
                       {"tag": tag})


def is_reference_digest(ref: str) -> bool:
    """A /manifests/<ref> is a digest when it has ':', which tags may never contain."""
    return ":" in ref
