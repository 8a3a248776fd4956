"""/api/v1 manifest routes: a manifest with its layer history, and its labels."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from quaymaster.accounts.service import Identity
from quaymaster.api.access import repo_access
from quaymaster.api.auth import ctx_of, current_identity, signed_in
from quaymaster.api.errors import not_found
from quaymaster.api.format import quay_time
from quaymaster.content import imageconfig, labels
from quaymaster.content import service as content
from quaymaster.content.api_support import audit
from quaymaster.content.models import Label, LabelSource, Manifest
from quaymaster.content.service import RepoRef
from quaymaster.oci import mediatypes as mt
from quaymaster.oci.errors import OCIError
from quaymaster.oci.manifest import parse_manifest

router = APIRouter(tags=["manifest"])

BASE = "/repository/{namespace}/{name}/manifest/{digest}"
MAX_API_CONFIG_BYTES = 4 * 1024 * 1024


class NewLabel(BaseModel):
    key: str
    value: str
    media_type: str | None = None


def label_view(label: Label) -> dict:
    return {"id": label.uuid, "key": label.key, "value": label.value, "source_type": label.source_type,
            "media_type": label.media_type}


async def _manifest(request: Request, identity: Identity, namespace: str, name: str, digest: str,
                    need: str) -> tuple[RepoRef, Manifest]:
    """The live manifest by digest in a repository the caller holds `need` on; 404 otherwise."""
    repo, _ = await repo_access(request, identity, namespace, name, need)
    async with ctx_of(request).db.read() as session:
        manifest = await content.manifest_by_digest(session, repo.id, digest)
    if manifest is None:
        raise not_found(f"manifest {digest} is not in {repo.path}")
    return repo, manifest


def _layer_view(layer: imageconfig.LayerInfo) -> dict:
    return {"index": layer.index, "compressed_size": layer.compressed_size, "is_remote": bool(layer.urls),
            "urls": layer.urls or None, "command": layer.command, "comment": layer.comment, "author": layer.author,
            "blob_digest": layer.digest, "created_datetime": quay_time(layer.created)}


@router.get(BASE, summary="A manifest, its bytes and its layers")
async def get_manifest(request: Request, namespace: str, name: str, digest: str,
                       identity: Identity = Depends(current_identity)):
    ctx = ctx_of(request)
    repo, manifest = await _manifest(request, identity, namespace, name, digest, "read")
    is_list = manifest.media_type in mt.INDEX_TYPES
    layers = None
    if not is_list:
        try:
            parsed = parse_manifest(manifest.manifest_bytes, manifest.media_type, len(manifest.manifest_bytes))
        except OCIError:
            parsed = None
        if parsed is not None:
            config = None
            if parsed.config is not None and parsed.config.media_type in mt.IMAGE_CONFIG_TYPES:
                config = await imageconfig.read_config(ctx.db, ctx.storage, repo.id, parsed.config.digest,
                                                       MAX_API_CONFIG_BYTES)
            layers = [_layer_view(layer) for layer in imageconfig.layer_history(parsed, config)]
    return {"digest": manifest.digest, "is_manifest_list": is_list,
            "manifest_data": manifest.manifest_bytes.decode("utf-8", "replace"),
            "config_media_type": manifest.config_media_type, "layers": layers}


@router.get(BASE + "/labels", summary="A manifest's labels")
async def list_labels(request: Request, namespace: str, name: str, digest: str, filter: str | None = None,
                      identity: Identity = Depends(current_identity)):
    _, manifest = await _manifest(request, identity, namespace, name, digest, "read")
    async with ctx_of(request).db.read() as session:
        found = await labels.list_labels(session, manifest.id, filter)
    return {"labels": [label_view(label) for label in found]}


@router.post(BASE + "/labels", status_code=201, summary="Add a label to a manifest")
async def add_label(request: Request, namespace: str, name: str, digest: str, body: NewLabel,
                    identity: Identity = Depends(signed_in)):
    repo, manifest = await _manifest(request, identity, namespace, name, digest, "write")
    content.check_writable(repo)
    labels.check_api_label(body.key, body.media_type)
    async with ctx_of(request).db.write() as session:
        label = await labels.add_label(session, repo.id, manifest.id, body.key, body.value, LabelSource.API,
                                       body.media_type)
    audit(request, "manifest_label_add", repo, identity, id=label.uuid, key=label.key, value=label.value,
          manifest_digest=manifest.digest, media_type=label.media_type)
    location = f"/api/v1/repository/{repo.path}/manifest/{manifest.digest}/labels/{label.uuid}"
    return JSONResponse({"label": label_view(label)}, status_code=201, headers={"Location": location})


@router.get(BASE + "/labels/{label_id}", summary="One label of a manifest")
async def get_label(request: Request, namespace: str, name: str, digest: str, label_id: str,
                    identity: Identity = Depends(current_identity)):
    _, manifest = await _manifest(request, identity, namespace, name, digest, "read")
    async with ctx_of(request).db.read() as session:
        label = await labels.get_label(session, manifest.id, label_id)
    if label is None:
        raise not_found(f"label {label_id} is not on manifest {digest}")
    return label_view(label)


@router.delete(BASE + "/labels/{label_id}", status_code=204, summary="Remove a label added through the API")
async def delete_label(request: Request, namespace: str, name: str, digest: str, label_id: str,
                       identity: Identity = Depends(signed_in)):
    repo, manifest = await _manifest(request, identity, namespace, name, digest, "write")
    content.check_writable(repo)
    async with ctx_of(request).db.write() as session:
        label = await labels.delete_label(session, manifest.id, label_id)
    if label is None:
        raise not_found(f"label {label_id} is not on manifest {digest}")
    audit(request, "manifest_label_delete", repo, identity, id=label_id, key=label.key, value=label.value,
          manifest_digest=manifest.digest)
    return Response(status_code=204)
