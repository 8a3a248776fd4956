"""Manifest labels: taken from the image config at push, added and removed through the API.

Labels from the image itself are immutable; only labels added through the API may be deleted, as
in Quay. The `quay.expires-after` label gives every tag pointed at the manifest a lifetime.
"""

import json
import re
import uuid as uuidlib

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.content.errors import ContentError
from quaymaster.content.models import Label, LabelSource, ManifestChild, ManifestLabel
from quaymaster.settings.units import parse_duration

KEY_RE = re.compile(r"^[a-z0-9](([a-z0-9]|[-.](?![.-]))*[a-z0-9])?$")
MAX_KEY_LENGTH = 255
MEDIA_TYPES = ("text/plain", "application/json")
EXPIRES_AFTER = "quay.expires-after"
# Reverse-DNS prefixes kept for images and the registry itself (Quay's defaults).
RESERVED_PREFIXES = ("com.docker.", "io.docker.", "org.dockerproject.", "org.opencontainers.", "io.cncf.",
                     "io.kubernetes.", "io.k8s.", "io.quay", "com.coreos", "com.tectonic", "internal", "quay")


def is_json(value: str) -> bool:
    """Quay stores a label as application/json when its value is a JSON object or array."""
    if not ((value.startswith("{") and value.endswith("}")) or (value.startswith("[") and value.endswith("]"))):
        return False
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def config_labels(config: dict) -> dict[str, str]:
    """`config.Labels` of an image config, with empty or over-long keys dropped."""
    inner = config.get("config") if isinstance(config, dict) else None
    raw = inner.get("Labels") if isinstance(inner, dict) else None
    if not isinstance(raw, dict):
        return {}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()
            if isinstance(k, str) and 0 < len(k) <= MAX_KEY_LENGTH}


def check_api_label(key: str, media_type: str | None) -> None:
    """API labels follow Kubernetes key rules and may not use a reserved prefix."""
    if any(key.startswith(prefix) for prefix in RESERVED_PREFIXES):
        raise ContentError("LABEL_INVALID", "Label has a reserved prefix")
    if len(key) > MAX_KEY_LENGTH or not KEY_RE.match(key):
        raise ContentError("LABEL_INVALID", "Label is of an invalid format or missing please use "
                                            f"{KEY_RE.pattern} format for labels")
    if media_type is not None and media_type not in MEDIA_TYPES:
        raise ContentError("LABEL_INVALID",
                           "Media type is invalid please use a valid media type: text/plain, application/json")


async def add_label(session: AsyncSession, repo_id: int, manifest_id: int, key: str, value: str,
                    source: str, media_type: str | None = None) -> Label:
    label = Label(uuid=str(uuidlib.uuid4()), key=key, value=value, source_type=source,
                  media_type=media_type or ("application/json" if is_json(value) else "text/plain"))
    session.add(label)
    await session.flush()
    session.add(ManifestLabel(repository_id=repo_id, manifest_id=manifest_id, label_id=label.id))
    await session.flush()
    return label


async def add_image_labels(session: AsyncSession, repo_id: int, manifest_id: int, labels: dict[str, str]) -> None:
    for key, value in labels.items():
        await add_label(session, repo_id, manifest_id, key, value, LabelSource.MANIFEST)


async def list_labels(session: AsyncSession, manifest_id: int, prefix: str | None = None) -> list[Label]:
    q = (select(Label).join(ManifestLabel, ManifestLabel.label_id == Label.id)
         .where(ManifestLabel.manifest_id == manifest_id).order_by(Label.id))
    if prefix:
        q = q.where(Label.key.startswith(prefix, autoescape=True))
    return list((await session.scalars(q)).all())


async def get_label(session: AsyncSession, manifest_id: int, label_uuid: str) -> Label | None:
    return await session.scalar(select(Label).join(ManifestLabel, ManifestLabel.label_id == Label.id)
                                .where(ManifestLabel.manifest_id == manifest_id, Label.uuid == label_uuid))


async def delete_label(session: AsyncSession, manifest_id: int, label_uuid: str) -> Label | None:
    """Remove an API label; labels that came with the image cannot be removed."""
    label = await get_label(session, manifest_id, label_uuid)
    if label is None:
        return None
    if label.source_type != LabelSource.API:
        raise ContentError("LABEL_IMMUTABLE", "Cannot delete immutable label")
    await session.execute(delete(ManifestLabel).where(ManifestLabel.label_id == label.id))
    await session.execute(delete(Label).where(Label.id == label.id))
    return label


def _duration_s(value: str | None) -> int | None:
    if not value:
        return None
    try:
        seconds = parse_duration(value.strip())
    except ValueError:
        return None
    return seconds or None


async def expiration_s(session: AsyncSession, manifest_id: int) -> int | None:
    """Seconds from `quay.expires-after` on the manifest, or shared by every child of an index."""
    own = await session.scalar(select(Label.value).join(ManifestLabel, ManifestLabel.label_id == Label.id)
                               .where(ManifestLabel.manifest_id == manifest_id, Label.key == EXPIRES_AFTER)
                               .order_by(Label.id.desc()).limit(1))
    if own is not None:
        return _duration_s(own)
    children = (await session.execute(
        select(ManifestChild.child_manifest_id, Label.value)
        .outerjoin(ManifestLabel, ManifestLabel.manifest_id == ManifestChild.child_manifest_id)
        .outerjoin(Label, (Label.id == ManifestLabel.label_id) & (Label.key == EXPIRES_AFTER))
        .where(ManifestChild.manifest_id == manifest_id))).all()
    if not children:
        return None
    values: dict[int, set[str | None]] = {}
    for child_id, value in children:
        values.setdefault(child_id, set()).add(value)
    found = {v for vs in values.values() for v in vs if v is not None}
    if len(found) != 1 or any(not (vs - {None}) for vs in values.values()):
        return None
    return _duration_s(found.pop())
