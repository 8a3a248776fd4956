"""Ping, tag listing and the catalog, with OCI `n`/`last` pagination and `Link` headers."""

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from quaymaster.accounts.permissions import PULL
from quaymaster.content import service as content
from quaymaster.registry.auth import bearer, challenge
from quaymaster.registry.common import context, endpoint, pagination, require
from quaymaster.registry.errors import RegistryError


def _link(path: str, n: int, last: str) -> str:
    return f'<{path}?{urlencode({"n": n, "last": last})}>; rel="next"'


@endpoint
async def ping(request: Request) -> Response:
    ctx = context(request)
    caller = await bearer(ctx, request)
    if caller.claims is None:
        raise RegistryError("UNAUTHORIZED", "authentication required", headers=challenge(ctx))
    return JSONResponse({})


@endpoint
async def list_tags(request: Request) -> Response:
    ctx, _, repo = await require(request, PULL)
    n, last = pagination(request, ctx.settings.page_size)
    tags: list[str] = []
    if n > 0:
        async with ctx.db.read() as session:
            tags = await content.list_tags(session, repo.id, last=last, limit=n + 1)
    headers = {}
    if len(tags) > n:
        tags = tags[:n]
        headers["Link"] = _link(f"/v2/{repo.path}/tags/list", n, tags[-1])
    return JSONResponse({"name": repo.path, "tags": tags}, headers=headers)


@endpoint
async def catalog(request: Request) -> Response:
    ctx = context(request)
    caller = await bearer(ctx, request)
    n, last = pagination(request, ctx.settings.page_size)
    after = None
    if last:
        ns, _, name = last.partition("/")
        after = (ns, name)
    include_public = ctx.settings.FEATURE_PUBLIC_CATALOG or caller.user_id is not None
    repos: list[str] = []
    if n > 0:
        async with ctx.db.read() as session:
            repos = await content.list_repositories(session, owner_id=caller.user_id,
                                                    include_public=include_public, last=after,
                                                    limit=n + 1)
    headers = {}
    if len(repos) > n:
        repos = repos[:n]
        headers["Link"] = _link("/v2/_catalog", n, repos[-1])
    return JSONResponse({"repositories": repos}, headers=headers)
