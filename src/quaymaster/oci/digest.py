"""Content digests: the identity of every blob and manifest in the registry."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from quaymaster.oci.errors import OCIError

SUPPORTED_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}

# OCI image-spec digest grammar: algorithm ":" encoded.
_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)", re.ASCII)
_LOWER_HEX_RE = re.compile(r"[a-f0-9]+", re.ASCII)


def parse_digest(value: str) -> tuple[str, str]:
    """Split a digest into (algorithm, hex), rejecting anything the registry could not verify."""
    if not isinstance(value, str):
        raise OCIError("DIGEST_INVALID", "digest must be a string", {"digest": value})
    match = _DIGEST_RE.fullmatch(value)
    if match is None:
        raise OCIError("DIGEST_INVALID", f"invalid digest {value!r}: expected <algorithm>:<hex>",
                       {"digest": value})
    algorithm, encoded = match.groups()
    length = SUPPORTED_ALGORITHMS.get(algorithm)
    if length is None:
        raise OCIError("DIGEST_INVALID", f"unsupported digest algorithm {algorithm!r}",
                       {"digest": value})
    if len(encoded) != length or not _LOWER_HEX_RE.fullmatch(encoded):
        raise OCIError("DIGEST_INVALID",
                       f"invalid digest {value!r}: {algorithm} needs {length} lowercase hex characters",
                       {"digest": value})
    return algorithm, encoded


def is_digest(value: str) -> bool:
    """Cheap check for callers that only need a yes/no answer."""
    try:
        parse_digest(value)
    except OCIError:
        return False
    return True


def new_hasher(algorithm: str) -> Any:
    """Incremental hasher so uploads can be digested chunk by chunk."""
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise OCIError("UNSUPPORTED", f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    """Digest of exact bytes, in the canonical "<algorithm>:<hex>" form."""
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return f"{algorithm}:{hasher.hexdigest()}"
