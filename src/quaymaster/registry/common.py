"""What every /v2 handler shares: error mapping, the access check, common headers."""

import functools
import logging
from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from quaymaster.accounts.permissions import PUSH
from quaymaster.content import service as content
from quaymaster.content.models import RepositoryState
from quaymaster.content.service import ContentError, RepoRef
from quaymaster.context import AppContext
from quaymaster.mirroring import service as mirroring
from quaymaster.oci.errors import OCIError
from quaymaster.oci.reference import split_repository
from quaymaster.registry.auth import Caller, bearer, scope_for, unauthorized
from quaymaster.registry.errors import RegistryError
from quaymaster.storage import StorageError

log = logging.getLogger(__name__)

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


def endpoint(handler: Callable[[Request], Awaitable[Response]]):
    """Turn domain errors into the spec's JSON errors and stamp the API version header."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            response = await handler(request)
        except RegistryError as err:
            response = err.response()
        except (ContentError, OCIError) as err:
            response = RegistryError(err.code, err.message, err.detail).response()
        except StorageError:
            log.exception("storage failure on %s %s", request.method, request.url.path)
            response = RegistryError("UNKNOWN", "storage backend failed; retry later", status=503).response()
        response.headers.setdefault("Docker-Distribution-API-Version", "registry/2.0")
        return response

    return wrapper


def context(request: Request) -> AppContext:
    return request.app.state.ctx


async def require(request: Request, action: str) -> tuple[AppContext, Caller, RepoRef]:
    """The caller must hold `action` on the repository in its token, and the repository must exist.

    The token is checked before existence so a private repository looks like a missing one."""
    ctx = context(request)
    name = request.path_params["name"]
    namespace, repo_name = parse_name(name)
    caller = await bearer(ctx, request)
    if not caller.can(name, action):
        raise unauthorized(ctx, "access to the requested resource is not authorized", scope_for(name, action))
    async with ctx.db.read() as session:
        repo = await content.get_repository(session, namespace, repo_name)
    if repo is None:
        raise RegistryError("NAME_UNKNOWN", f"repository {name} is not known to the registry",
                            {"name": name})
    if action == PUSH:
        mirror_robot = False
        if repo.state == RepositoryState.MIRROR and caller.user_id is not None:
            async with ctx.db.read() as session:
                mirror_robot = await mirroring.is_mirror_robot(session, repo.id, caller.user_id)
        content.check_writable(repo, mirror_robot=mirror_robot)
    return ctx, caller, repo


def parse_name(name: str) -> tuple[str, str]:
    try:
        return split_repository(name)
    except OCIError as err:
        raise RegistryError("NAME_INVALID", err.message, {"name": name}) from None


def pagination(request: Request, cap: int) -> tuple[int, str | None]:
    """`n` (default and maximum `cap`) and `last` for tag and catalog listings."""
    raw = request.query_params.get("n")
    if raw is None or raw == "":
        n = cap
    else:
        try:
            n = int(raw)
        except ValueError:
            raise RegistryError("PAGINATION_NUMBER_INVALID", "n must be a non-negative integer",
                                status=400) from None
        if n < 0:
            raise RegistryError("PAGINATION_NUMBER_INVALID", "n must be a non-negative integer",
                                status=400)
        n = min(n, cap)
    return n, request.query_params.get("last") or None
