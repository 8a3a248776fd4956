"""/api/v1 stars: the signed-in user's starred repositories (only those they may still read)."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from quaymaster.accounts.service import Identity
from quaymaster.api.access import repo_access
from quaymaster.api.auth import ctx_of, scoped
from quaymaster.api.errors import forbidden
from quaymaster.content import repositories, stars
from quaymaster.content.api_support import after_id, encode_page

router = APIRouter(tags=["user"])

STARS_PER_PAGE = 100


class NewStar(BaseModel):
    namespace: str
    repository: str


def _user_only(identity: Identity) -> None:
    if identity.kind != "user":
        raise forbidden("only users have starred repositories")


@router.get("/user/starred", summary="Your starred repositories")
async def list_starred(request: Request, next_page: str | None = None,
                       identity: Identity = Depends(scoped("user:admin"))):
    _user_only(identity)
    ctx = ctx_of(request)
    viewer = repositories.Viewer(user_id=identity.user_id,
                                 sees_everything=identity.superuser and ctx.settings.FEATURE_SUPERUSERS_FULL_ACCESS)
    async with ctx.db.read() as session:
        found = await repositories.visible(session, viewer, include_public=True, starred_by=identity.user_id,
                                           kind=None, after_id=after_id(request, next_page),
                                           limit=STARS_PER_PAGE + 1)
    page = found[:STARS_PER_PAGE]
    result: dict = {"repositories": [
        {"namespace": r.namespace, "name": r.name, "description": r.description,
         "is_public": r.visibility == "public", "kind": r.kind} for r in page]}
    if len(found) > STARS_PER_PAGE:
        result["next_page"] = encode_page(request, {"after": page[-1].id})
    return result


@router.post("/user/starred", status_code=201, summary="Star a repository")
async def add_star(request: Request, body: NewStar, identity: Identity = Depends(scoped("user:admin"))):
    _user_only(identity)
    repo, _ = await repo_access(request, identity, body.namespace, body.repository, "read")
    try:
        async with ctx_of(request).db.write() as session:
            await stars.star(session, identity.user_id, repo.id)
    except IntegrityError:
        pass  # starred concurrently: the star is there either way
    return {"namespace": repo.namespace, "repository": repo.name}


@router.delete("/user/starred/{namespace}/{name}", status_code=204, summary="Remove a star")
async def remove_star(request: Request, namespace: str, name: str, identity: Identity = Depends(scoped("user:admin"))):
    _user_only(identity)
    repo, _ = await repo_access(request, identity, namespace, name, "read")
    async with ctx_of(request).db.write() as session:
        await stars.unstar(session, identity.user_id, repo.id)
    return Response(status_code=204)
