"""/api/v1 repository routes: create, list, view, describe, delete, visibility and state.

Tags, manifests and labels, permissions and stars have their own routers beside this one; they are
included in `router` at the bottom so the API app mounts the content domain with one name.
"""

from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from quaymaster.accounts import permissions
from quaymaster.accounts.service import Identity
from quaymaster.api.access import namespace_for_create, repo_access
from quaymaster.api.auth import ctx_of, current_identity, scoped, signed_in
from quaymaster.api.errors import ApiError, forbidden, unauthorized
from quaymaster.api.format import quay_time
from quaymaster.content import (
    api_manifests,
    api_permissions,
    api_stars,
    api_tags,
    quota,
    repositories,
    stars,
    tags,
)
from quaymaster.content import service as content
from quaymaster.content.api_support import (
    after_id,
    audit,
    encode_page,
    has_repo_scope,
    utc_from_ms,
)
from quaymaster.content.models import RepositoryState
from quaymaster.events import publish_quietly
from quaymaster.oci.errors import OCIError
from quaymaster.oci.reference import split_repository

router = APIRouter(tags=["repository"])

REPOS_PER_PAGE = 100
MAX_TAGS_IN_VIEW = 500


class NewRepo(BaseModel):
    repository: str
    visibility: Literal["public", "private"]
    namespace: str | None = None
    description: str | None = ""
    repo_kind: Literal["image", "application"] | None = None


class RepoUpdate(BaseModel):
    description: str


class ChangeVisibility(BaseModel):
    visibility: Literal["public", "private"]


class ChangeState(BaseModel):
    state: Literal["NORMAL", "READ_ONLY", "MIRROR"]


def state_name(state: int) -> str:
    return RepositoryState(state).name


@router.post("/repository", status_code=201, summary="Create a repository")
async def create_repository(request: Request, body: NewRepo, identity: Identity = Depends(scoped("repo:create"))):
    ctx = ctx_of(request)
    namespace = await namespace_for_create(request, identity, body.namespace or identity.username)
    kind = body.repo_kind or "image"
    try:
        async with ctx.db.write() as session:
            if await content.get_repository(session, namespace.username, body.repository) is not None:
                raise ApiError(400, "Repository already exists")
            try:
                split_repository(f"{namespace.username}/{body.repository}")
            except OCIError:
                raise ApiError(400, "Invalid repository name") from None
            repo = await content.create_repository(session, namespace, body.repository, body.visibility,
                                                   body.description, creator_id=identity.user_id, kind=kind)
    except IntegrityError:
        raise ApiError(400, "Repository already exists") from None
    audit(request, "create_repo", repo, identity, visibility=body.visibility)
    return {"namespace": repo.namespace, "name": repo.name, "kind": kind}


@router.get("/repository", summary="List the repositories the caller may read")
async def list_repositories(request: Request, namespace: str | None = None, public: bool = False,
                            starred: bool = False, last_modified: bool = False, popularity: bool = False,
                            repo_kind: str = "image", next_page: str | None = None,
                            identity: Identity = Depends(current_identity)):
    ctx = ctx_of(request)
    if not namespace and not starred and not public:
        raise ApiError(400, "namespace, starred or public are required for this API call")
    if identity.anonymous:
        if not ctx.settings.FEATURE_ANONYMOUS_ACCESS:
            raise unauthorized()
        if starred:
            raise ApiError(400, "starred repositories need a signed-in user")
    elif not has_repo_scope(identity):
        raise forbidden("this token lacks the repo:read scope")
    viewer = repositories.Viewer(
        user_id=identity.user_id, is_user=identity.kind == "user",
        sees_everything=identity.superuser and ctx.settings.FEATURE_SUPERUSERS_FULL_ACCESS)
    async with ctx.db.read() as session:
        found = await repositories.visible(
            session, viewer, include_public=public or starred, namespace=namespace or None,
            starred_by=identity.user_id if starred else None, kind=repo_kind or None,
            after_id=after_id(request, next_page), limit=REPOS_PER_PAGE + 1)
        page = found[:REPOS_PER_PAGE]
        ids = [r.id for r in page]
        starred_ids = await stars.starred_among(session, identity.user_id, ids)
        modified = await repositories.last_modified(session, ids) if last_modified else {}
    views = []
    for r in page:
        view = {"namespace": r.namespace, "name": r.name, "description": r.description,
                "is_public": r.visibility == "public", "kind": r.kind, "state": state_name(r.state)}
        if last_modified:
            view["last_modified"] = modified.get(r.id)
        if popularity:
            view["popularity"] = 0.0
        if not identity.anonymous:
            view["is_starred"] = r.id in starred_ids
        views.append(view)
    result: dict = {"repositories": views}
    if len(found) > REPOS_PER_PAGE:
        result["next_page"] = encode_page(request, {"after": page[-1].id})
    return result


def _tag_summary(tag: tags.TagView) -> dict:
    view = {"name": tag.name, "size": tag.size, "manifest_digest": tag.manifest_digest,
            "last_modified": quay_time(utc_from_ms(tag.start_ms))}
    if tag.end_ms is not None:
        view["expiration"] = quay_time(utc_from_ms(tag.end_ms))
    return view


@router.get("/repository/{namespace}/{name}", summary="One repository")
async def get_repository(request: Request, namespace: str, name: str, includeTags: bool = True,
                         identity: Identity = Depends(current_identity)):
    repo, role = await repo_access(request, identity, namespace, name, "read")
    async with ctx_of(request).db.read() as session:
        row, owner = await repositories.details(session, repo.id)
        is_starred = await stars.is_starred(session, identity.user_id, repo.id)
        active = (await tags.history(session, repo.id, window_s=0, active_only=True, limit=MAX_TAGS_IN_VIEW)
                  if includeTags else None)
        quota_report = await quota.view_report(session, ctx_of(request).settings, repo.namespace_id, repo.id)
    view = {
        "namespace": repo.namespace, "name": repo.name, "kind": row.kind, "description": row.description,
        "is_public": row.visibility == "public", "is_organization": owner.organization, "is_starred": is_starred,
        "status_token": "", "trust_enabled": False, "tag_expiration_s": owner.removed_tag_expiration_s,
        "is_free_account": True, "state": state_name(row.state),
        "can_write": permissions.ROLE_RANK[role] >= permissions.ROLE_RANK["write"]
        and row.state == RepositoryState.NORMAL,
        "can_admin": role == "admin",
    }
    if active is not None:
        view["tags"] = {t.name: _tag_summary(t) for t in active}
    if quota_report is not None:
        view["quota_report"] = quota_report
    return view


@router.put("/repository/{namespace}/{name}", summary="Change a repository's description")
async def update_repository(request: Request, namespace: str, name: str, body: RepoUpdate,
                            identity: Identity = Depends(signed_in)):
    repo, _ = await repo_access(request, identity, namespace, name, "write")
    async with ctx_of(request).db.write() as session:
        await repositories.set_description(session, repo.id, body.description)
    audit(request, "set_repo_description", repo, identity, description=body.description)
    return {"success": True}


@router.delete("/repository/{namespace}/{name}", status_code=204, summary="Delete a repository")
async def delete_repository(request: Request, namespace: str, name: str, identity: Identity = Depends(signed_in)):
    repo, _ = await repo_access(request, identity, namespace, name, "admin")
    async with ctx_of(request).db.write() as session:
        await content.lock_repository(session, repo.id)
        await repositories.mark_for_deletion(session, repo.id)
    audit(request, "delete_repo", repo, identity)
    await publish_quietly(ctx_of(request).events, "repositories", {"repository_id": repo.id, "event": "deleted"})
    return Response(status_code=204)


@router.post("/repository/{namespace}/{name}/changevisibility", summary="Make a repository public or private")
async def change_visibility(request: Request, namespace: str, name: str, body: ChangeVisibility,
                            identity: Identity = Depends(signed_in)):
    repo, _ = await repo_access(request, identity, namespace, name, "admin")
    async with ctx_of(request).db.write() as session:
        await repositories.set_visibility(session, repo.id, body.visibility)
    audit(request, "change_repo_visibility", repo, identity, visibility=body.visibility)
    return {"success": True}


@router.put("/repository/{namespace}/{name}/changestate", summary="Set NORMAL, READ_ONLY or MIRROR")
async def change_state(request: Request, namespace: str, name: str, body: ChangeState,
                       identity: Identity = Depends(signed_in)):
    repo, _ = await repo_access(request, identity, namespace, name, "admin")
    if body.state == "MIRROR" and not ctx_of(request).settings.FEATURE_REPO_MIRROR:
        raise ApiError(400, repositories.MIRROR_DISABLED)
    async with ctx_of(request).db.write() as session:
        await repositories.set_state(session, repo.id, RepositoryState[body.state])
    audit(request, "change_repo_state", repo, identity, state_changed=body.state)
    return {"success": True}


for _sub in (api_tags.router, api_manifests.router, api_permissions.router, api_stars.router):
    router.include_router(_sub)
