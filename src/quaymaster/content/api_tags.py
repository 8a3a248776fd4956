"""/api/v1 tag routes: history listing, create/retarget, expiration, delete and time-machine restore."""

import math
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from quaymaster.accounts import service as accounts
from quaymaster.accounts.service import Identity
from quaymaster.api.access import repo_access
from quaymaster.api.auth import ctx_of, current_identity, signed_in
from quaymaster.api.errors import ApiError, not_found
from quaymaster.api.format import quay_time
from quaymaster.content import service as content
from quaymaster.content import tags
from quaymaster.content.api_support import audit, utc_from_ms
from quaymaster.content.service import RepoRef
from quaymaster.oci.errors import OCIError
from quaymaster.oci.reference import validate_tag

router = APIRouter(tags=["tag"])

DEFAULT_LIMIT, MAX_LIMIT = 50, 100
MAX_PAGE = 1_000_000  # keeps the SQL offset in range whatever a client sends
MAX_EXPIRATION_S = 253402300799  # 9999-12-31T23:59:59Z, the last second a date can show


class ChangeTag(BaseModel):
    manifest_digest: str | None = None
    expiration: float | None = None


class RestoreTag(BaseModel):
    manifest_digest: str | None = None


def tag_view(tag: tags.TagView) -> dict:
    """Quay's tag shape: seconds for start/end, RFC 2822 dates for last_modified/expiration."""
    view: dict = {"name": tag.name, "reversion": tag.reversion, "start_ts": tag.start_ms // 1000}
    if tag.end_ms is not None:
        view["end_ts"] = tag.end_ms // 1000
    view.update({"manifest_digest": tag.manifest_digest, "is_manifest_list": tag.is_manifest_list,
                 "size": tag.size, "last_modified": quay_time(utc_from_ms(tag.start_ms))})
    if tag.end_ms is not None:
        view["expiration"] = quay_time(utc_from_ms(tag.end_ms))
    return view


def _check_tag_name(tag: str) -> None:
    try:
        validate_tag(tag)
    except OCIError as err:
        raise ApiError(400, err.message) from None


async def _window_s(session, repo: RepoRef) -> int:
    """The namespace's time-machine window in seconds."""
    owner = await accounts.get_namespace(session, repo.namespace)
    return owner.removed_tag_expiration_s if owner is not None else 0


def _filter(value: str) -> dict:
    """`filter_tag_name=like:<part>` or `eq:<name>`."""
    op, sep, operand = value.partition(":")
    if not sep or op not in ("like", "eq") or not operand:
        raise ApiError(400, "filter_tag_name must be like:<text> or eq:<name>")
    return {"name_contains": operand} if op == "like" else {"name": operand}


@router.get("/repository/{namespace}/{name}/tag/", summary="Tag history, alive and recently ended")
async def list_tags(request: Request, namespace: str, name: str, specificTag: str = "",
                    filter_tag_name: str = "", onlyActiveTags: bool = False,
                    page: int = 1, limit: int = DEFAULT_LIMIT, identity: Identity = Depends(current_identity)):
    repo, _ = await repo_access(request, identity, namespace, name, "read")
    page = min(max(1, page), MAX_PAGE)
    limit = min(MAX_LIMIT, max(1, limit))
    filters = _filter(filter_tag_name) if filter_tag_name else {}
    if specificTag:
        filters["name"] = specificTag
    async with ctx_of(request).db.read() as session:
        rows = await tags.history(session, repo.id, window_s=await _window_s(session, repo),
                                  active_only=onlyActiveTags, offset=(page - 1) * limit, limit=limit + 1, **filters)
    return {"tags": [tag_view(t) for t in rows[:limit]], "page": page, "has_additional": len(rows) > limit}


@router.put("/repository/{namespace}/{name}/tag/{tag}", status_code=201,
            summary="Point a tag at a manifest, or change when it expires")
async def change_tag(request: Request, namespace: str, name: str, tag: str, body: ChangeTag,
                     identity: Identity = Depends(signed_in)):
    repo, _ = await repo_access(request, identity, namespace, name, "write")
    content.check_writable(repo)
    _check_tag_name(tag)
    wants_expiration = "expiration" in body.model_fields_set
    wants_target = body.manifest_digest is not None
    if not wants_expiration and not wants_target:
        raise ApiError(400, "give manifest_digest or expiration")
    end_ms = None
    if wants_expiration and body.expiration is not None:
        if not math.isfinite(body.expiration) or body.expiration > MAX_EXPIRATION_S:
            raise ApiError(400, "expiration must be a unix time in seconds")
        if body.expiration <= time.time():
            raise ApiError(400, "expiration must be in the future")
        end_ms = int(body.expiration * 1000)
    logs: list[tuple[str, dict]] = []
    async with ctx_of(request).db.write() as session:
        await content.lock_repository(session, repo.id)
        if wants_expiration:
            changed = await tags.set_expiration(session, repo.id, tag, end_ms)
            if changed is None:
                raise not_found(f"tag {tag!r} is not in {repo.path}")
            if not (changed[1] is None and end_ms is None):
                logs.append(("change_tag_expiration", {
                    "tag": tag, "expiration_date": quay_time(utc_from_ms(end_ms)) if end_ms else None,
                    "old_expiration_date": quay_time(utc_from_ms(changed[1])) if changed[1] else None}))
        if wants_target:
            manifest = await content.manifest_by_digest(session, repo.id, body.manifest_digest)
            if manifest is None:
                raise not_found(f"manifest {body.manifest_digest} is not in {repo.path}")
            original = await tags.alive_digest(session, repo.id, tag)
            await content.set_tag(session, repo.id, tag, manifest.id)
            logs.append(("move_tag" if original else "create_tag", {
                "tag": tag, "manifest_digest": manifest.digest, "original_manifest_digest": original}))
    for kind, metadata in logs:
        audit(request, kind, repo, identity, username=identity.username, **metadata)
    return JSONResponse("Updated", status_code=201)


@router.delete("/repository/{namespace}/{name}/tag/{tag}", status_code=204, summary="Delete a tag")
async def delete_tag(request: Request, namespace: str, name: str, tag: str, identity: Identity = Depends(signed_in)):
    repo, _ = await repo_access(request, identity, namespace, name, "write")
    content.check_writable(repo)
    async with ctx_of(request).db.write() as session:
        await content.lock_repository(session, repo.id)
        if await content.delete_tag(session, repo.id, tag) is None:
            raise not_found(f"tag {tag!r} is not in {repo.path}")
    audit(request, "delete_tag", repo, identity, username=identity.username, tag=tag)
    return Response(status_code=204)


@router.post("/repository/{namespace}/{name}/tag/{tag}/restore",
             summary="Point a tag back at a manifest it had, within the time-machine window")
async def restore_tag(request: Request, namespace: str, name: str, tag: str, body: RestoreTag,
                      identity: Identity = Depends(signed_in)):
    repo, _ = await repo_access(request, identity, namespace, name, "write")
    content.check_writable(repo)
    _check_tag_name(tag)
    if not body.manifest_digest:
        raise ApiError(400, "Missing manifest_digest")
    async with ctx_of(request).db.write() as session:
        await content.lock_repository(session, repo.id)
        manifest = await tags.restorable_manifest(session, repo.id, body.manifest_digest,
                                                  await _window_s(session, repo))
        if manifest is None:
            raise not_found(f"manifest {body.manifest_digest} is not restorable in {repo.path}")
        await content.set_tag(session, repo.id, tag, manifest.id, reversion=True)
    audit(request, "revert_tag", repo, identity, username=identity.username, tag=tag,
          manifest_digest=body.manifest_digest)
    return {}
