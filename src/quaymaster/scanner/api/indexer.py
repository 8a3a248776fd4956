"""Indexer routes: /indexer/api/v1/index_report, index_state."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quaymaster.scanner.api.common import (
    _Invalid,
    if_none_match,
    json_body,
    json_response,
    quoted,
    runtime,
    valid_digest,
)
from quaymaster.scanner.api.errors import error
from quaymaster.scanner.indexer.service import BadManifest, validate_manifest

PREFIX = "/indexer/api/v1"
LINK_REL = "https://projectquay.io/clair/v1/"


async def index_report_post(request: Request) -> Response:
    indexer = runtime(request).indexer
    if if_none_match(request, indexer.state):
        return error(412, "manifest already indexed with the current state")
    body = await json_body(request)
    if body is _Invalid:
        return error(400, "could not parse manifest: body is not JSON")
    try:
        manifest = validate_manifest(body)
    except BadManifest as err:
        return error(400, str(err))
    report = await indexer.index(manifest)
    digest = manifest["hash"]
    response = json_response(report, 201, {
        "ETag": quoted(indexer.state),
        "Location": f"{PREFIX}/index_report/{digest}",
    })
    response.headers.append("Link", f'<{PREFIX}/index_report/{digest}>; rel="{LINK_REL}index_report"')
    response.headers.append("Link", f'</matcher/api/v1/vulnerability_report/{digest}>; rel="{LINK_REL}vulnerability_report"')
    return response


async def index_report_bulk_delete(request: Request) -> Response:
    body = await json_body(request)
    if body is _Invalid or not isinstance(body, list) or not all(isinstance(d, str) and valid_digest(d) for d in body):
        return error(400, "expected a JSON array of digests")
    deleted = await runtime(request).indexer.delete(body)
    return json_response(deleted)


async def index_report_get(request: Request) -> Response:
    digest = request.path_params["digest"]
    if not valid_digest(digest):
        return error(400, f"malformed digest {digest!r}")
    indexer = runtime(request).indexer
    report = await indexer.get_report(digest)
    if report is None:
        return error(404, f"index report for manifest {digest!r} not found")
    if if_none_match(request, indexer.state):
        return Response(status_code=304, headers={"ETag": quoted(indexer.state)})
    return json_response(report, 200, {"ETag": quoted(indexer.state)})


async def index_report_delete(request: Request) -> Response:
    digest = request.path_params["digest"]
    if not valid_digest(digest):
        return error(400, f"malformed digest {digest!r}")
    await runtime(request).indexer.delete([digest])
    return Response(status_code=204)


async def index_state(request: Request) -> Response:
    state = runtime(request).indexer.state
    if if_none_match(request, state):
        return Response(status_code=304, headers={"ETag": quoted(state)})
    return json_response({"state": state}, 200, {"ETag": quoted(state)})


routes = [
    Route(f"{PREFIX}/index_report", index_report_post, methods=["POST"]),
    Route(f"{PREFIX}/index_report", index_report_bulk_delete, methods=["DELETE"]),
    Route(f"{PREFIX}/index_report/{{digest}}", index_report_get, methods=["GET"]),
    Route(f"{PREFIX}/index_report/{{digest}}", index_report_delete, methods=["DELETE"]),
    Route(f"{PREFIX}/index_state", index_state, methods=["GET"]),
]
