"""Image configs read back from storage: labels when a manifest is pushed, layer history for the API.

Only small configs are read (they are JSON documents of a few KiB); anything larger or unreadable
is skipped rather than failing the push or the request.
"""

import json
import logging
import re
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime

from quaymaster.content import service as content
from quaymaster.content.service import RepoRef
from quaymaster.db.engine import Database
from quaymaster.oci import mediatypes as mt
from quaymaster.oci.manifest import ParsedManifest
from quaymaster.storage import DistributedStorage, StorageError

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class LayerInfo:
    """One layer of an image manifest with what its config's history says about it."""

    index: int
    digest: str
    compressed_size: int
    urls: list[str]
    command: list | None
    comment: str | None
    author: str | None
    created: datetime | None


async def read_config(db: Database, storage: DistributedStorage, repo_id: int, digest: str,
                      limit: int = MAX_CONFIG_BYTES) -> dict | None:
    """The JSON object stored as `digest`, if this repository may see it and it is under `limit` bytes."""
    async with db.read() as session:
        found = await content.linked_blob(session, repo_id, digest)
    if found is None or found[0].size >= limit:
        return None
    store = storage.readable(found[1])
    if store is None:
        return None
    data = bytearray()
    try:
        async with aclosing(store.stream(digest)) as chunks:
            async for chunk in chunks:
                data.extend(chunk)
                if len(data) >= limit:
                    return None
    except (StorageError, OSError):
        log.warning("could not read image config %s", digest, exc_info=True)
        return None
    try:
        parsed = json.loads(bytes(data))
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


async def config_for_push(db: Database, storage: DistributedStorage, repo: RepoRef,
                          parsed: ParsedManifest) -> dict | None:
    """The image config of a manifest this repository does not hold yet (read before the write lock)."""
    config = parsed.config
    if parsed.is_index or config is None or config.media_type not in mt.IMAGE_CONFIG_TYPES:
        return None
    if config.size >= MAX_CONFIG_BYTES:
        return None
    async with db.read() as session:
        if await content.manifest_exists(session, repo.id, parsed.digest):
            return None
    return await read_config(db, storage, repo.id, config.digest)


def _command(created_by: object) -> list | None:
    """Quay shows a layer's command as a list: a JSON array as is, a shell string as one item."""
    if not isinstance(created_by, str) or not created_by:
        return None
    try:
        value = json.loads(created_by)
    except ValueError:
        return [created_by]
    return value if isinstance(value, list) else [created_by]


def _created(value: object) -> datetime | None:
    """RFC 3339 timestamps as naive UTC; Go writes nanoseconds, Python reads microseconds."""
    if not isinstance(value, str) or not value:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00").replace("z", "+00:00")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def layer_history(parsed: ParsedManifest, config: dict | None) -> list[LayerInfo]:
    """Layers in order, each paired with the config history entry that created it."""
    history = config.get("history") if isinstance(config, dict) else None
    steps = [h for h in history if isinstance(h, dict) and not h.get("empty_layer")] if isinstance(history, list) else []
    layers = []
    for index, layer in enumerate(parsed.layers):
        step = steps[index] if index < len(steps) else {}
        layers.append(LayerInfo(index=index, digest=layer.digest, compressed_size=layer.size, urls=list(layer.urls),
                                command=_command(step.get("created_by")), comment=_text(step.get("comment")),
                                author=_text(step.get("author")), created=_created(step.get("created"))))
    return layers
