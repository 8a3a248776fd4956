"""Manifest parsing and validation, so only well-formed content ever reaches storage."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from quaymaster.oci import mediatypes as mt
from quaymaster.oci.digest import compute_digest, parse_digest
from quaymaster.oci.errors import OCIError

# Content types a client may Accept for manifests, most specific format first.
ALLOWED_MANIFEST_CONTENT_TYPES: tuple[str, ...] = (
    mt.OCI_MANIFEST,
    mt.OCI_INDEX,
    mt.DOCKER_SCHEMA2_MANIFEST,
    mt.DOCKER_MANIFEST_LIST,
)
DEFAULT_MAX_MANIFEST_SIZE = 4 * 1024 * 1024
GENERIC_CONTENT_TYPES = frozenset({"", "application/json", "application/octet-stream"})
SCHEMA1_MESSAGE = ("Docker schema 1 manifests are not supported; "
                   "push with a client that writes schema 2 or OCI")
MAX_BLOB_SIZE = 2**63 - 1  # fits a signed 64-bit database column

_MIME_CHARS = r"[A-Za-z0-9!#$&^_.+-]+"
_MIME_RE = re.compile(rf"{_MIME_CHARS}/{_MIME_CHARS}", re.ASCII)


def _invalid(message: str, detail: object | None = None) -> OCIError:
    """Shorthand for the MANIFEST_INVALID error every structural check raises."""
    return OCIError("MANIFEST_INVALID", message, detail)


def _media_type(value: Any, where: str) -> str:
    """Require a `type/subtype` string so junk never lands in a media-type column."""
    if not isinstance(value, str) or not _MIME_RE.fullmatch(value):
        raise _invalid(f"{where} must be a media type of the form type/subtype", {where: value})
    return value


def _annotations(value: Any, where: str) -> dict[str, str]:
    """Annotations are an optional string-to-string map."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _invalid(f"{where} must be an object of string values")
    return dict(value)


def _platform(value: Any, where: str) -> dict | None:
    """A platform, when given, must at least name an architecture and an OS."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be an object")
    for key in ("architecture", "os"):
        if not isinstance(value.get(key), str):
            raise _invalid(f"{where}.{key} must be a string")
    return dict(value)


def _urls(value: Any, where: str) -> list[str]:
    """Alternate download locations, used by foreign layers."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise _invalid(f"{where} must be a list of strings")
    return list(value)


@dataclass(frozen=True)
class Descriptor:
    """A typed pointer to content, validated so later code can trust its fields."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None
    platform: dict | None = None
    urls: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, obj: Any, where: str = "descriptor") -> Descriptor:
        """Validate one descriptor object; `where` names it in error messages."""
        if not isinstance(obj, dict):
            raise _invalid(f"{where} must be an object")
        media_type = _media_type(obj.get("mediaType"), f"{where}.mediaType")
        digest = obj.get("digest")
        try:
            parse_digest(digest)
        except OCIError as exc:
            raise _invalid(f"{where}.digest is invalid: {exc.message}", {"digest": digest}) from exc
        size = obj.get("size")
        if type(size) is not int or not 0 <= size <= MAX_BLOB_SIZE:
            raise _invalid(f"{where}.size must be a non-negative integer", {"size": size})
        artifact_type = obj.get("artifactType")
        if artifact_type is not None:
            _media_type(artifact_type, f"{where}.artifactType")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            annotations=_annotations(obj.get("annotations"), f"{where}.annotations"),
            artifact_type=artifact_type,
            platform=_platform(obj.get("platform"), f"{where}.platform"),
            urls=_urls(obj.get("urls"), f"{where}.urls"),
        )


@dataclass(frozen=True)
class ParsedManifest:
    """A validated manifest plus the exact bytes and digest it must be stored and served as."""

    media_type: str
    digest: str
    size: int
    raw: bytes
    schema_version: int
    config: Descriptor | None = None
    layers: list[Descriptor] = field(default_factory=list)
    manifests: list[Descriptor] = field(default_factory=list)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        """Indexes point at manifests, not blobs, so they are checked differently."""
        return self.media_type in mt.INDEX_TYPES

    @property
    def blob_digests(self) -> list[str]:
        """Blobs that must already exist before this manifest is accepted."""
        candidates = [self.config] if self.config is not None else []
        candidates += [d for d in self.layers if not mt.is_foreign_layer(d.media_type)]
        return list(dict.fromkeys(d.digest for d in candidates))

    @property
    def child_digests(self) -> list[str]:
        """Manifests an index refers to."""
        return [d.digest for d in self.manifests]

    @property
    def effective_artifact_type(self) -> str | None:
        """The artifact type the referrers API reports: artifactType, else the config media type (OCI 1.1)."""
        if self.artifact_type:
            return self.artifact_type
        if self.media_type == mt.OCI_MANIFEST and self.config is not None:
            return self.config.media_type
        return None


def _strip_parameters(content_type: str | None) -> str:
    """Drop "; charset=..." style parameters; media types compare case-insensitively."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON, even though Python's parser allows them."""
    raise ValueError(f"invalid JSON constant {name}")


def _load_object(raw: bytes) -> dict[str, Any]:
    """Decode the body as a UTF-8 JSON object."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise _invalid("manifest is not valid UTF-8") from exc
    except (ValueError, RecursionError) as exc:
        raise _invalid(f"manifest is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _invalid("manifest must be a JSON object")
    return body


def _resolve_media_type(content_type: str | None, body: dict[str, Any]) -> str:
    """Pick the manifest type from the Content-Type header, the body, or the body's shape."""
    header = _strip_parameters(content_type)
    declared = body.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    schema_version = body.get("schemaVersion")
    if (header in mt.SCHEMA1_TYPES or declared in mt.SCHEMA1_TYPES
            or (type(schema_version) is int and schema_version == 1)):
        raise _invalid(SCHEMA1_MESSAGE, {"mediaType": header or declared})
    if header in mt.MANIFEST_TYPES:
        if declared is not None and declared != header:
            raise _invalid("mediaType in body does not match Content-Type",
                           {"contentType": header, "mediaType": declared})
        return header
    if header not in GENERIC_CONTENT_TYPES:
        raise _invalid(f"unsupported manifest media type {header!r}", {"mediaType": header})
    if declared is not None:
        if declared not in mt.MANIFEST_TYPES:
            raise _invalid(f"unsupported manifest media type {declared!r}", {"mediaType": declared})
        return declared
    if "manifests" in body:
        return mt.OCI_INDEX
    if "config" in body and "layers" in body:
        return mt.OCI_MANIFEST
    raise _invalid("cannot determine the manifest media type; set mediaType or Content-Type")


def _descriptor_list(value: Any, where: str) -> list[Descriptor]:
    """A required JSON list of descriptors."""
    if value is None:
        raise _invalid(f"{where} is required")
    if not isinstance(value, list):
        raise _invalid(f"{where} must be a list")
    return [Descriptor.from_json(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _optional_descriptor(value: Any, where: str) -> Descriptor | None:
    """An optional descriptor such as `subject`."""
    return None if value is None else Descriptor.from_json(value, where)


def parse_manifest(raw: bytes, content_type: str | None,
                   max_size: int = DEFAULT_MAX_MANIFEST_SIZE,
                   algorithm: str = "sha256") -> ParsedManifest:
    """Validate a pushed manifest and compute its digest over the exact bytes received."""
    raw = bytes(raw)
    if len(raw) > max_size:
        raise OCIError("SIZE_INVALID", f"manifest is larger than {max_size} bytes",
                       {"size": len(raw), "limit": max_size})
    body = _load_object(raw)
    media_type = _resolve_media_type(content_type, body)
    schema_version = body.get("schemaVersion")
    if type(schema_version) is not int or schema_version != 2:
        raise _invalid("schemaVersion must be 2", {"schemaVersion": schema_version})
    is_oci = media_type in (mt.OCI_MANIFEST, mt.OCI_INDEX)
    artifact_type = body.get("artifactType") if is_oci else None
    if artifact_type is not None:
        _media_type(artifact_type, "artifactType")
    fields: dict[str, Any] = {}
    if media_type in mt.INDEX_TYPES:
        fields["manifests"] = _descriptor_list(body.get("manifests"), "manifests")
    else:
        if body.get("config") is None:
            raise _invalid("config is required")
        fields["config"] = Descriptor.from_json(body["config"], "config")
        fields["layers"] = _descriptor_list(body.get("layers"), "layers")
    return ParsedManifest(
        media_type=media_type,
        digest=compute_digest(raw, algorithm),
        size=len(raw),
        raw=raw,
        schema_version=schema_version,
        subject=_optional_descriptor(body.get("subject"), "subject"),
        artifact_type=artifact_type,
        annotations=_annotations(body.get("annotations"), "annotations"),
        **fields,
    )
