"""Matcher routes: vulnerability_report, and the internal update-operation views."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quaymaster.scanner.api.common import if_none_match, json_response, quoted, runtime, valid_digest
from quaymaster.scanner.api.errors import error
from quaymaster.scanner.metrics import VULN_REPORTS

PREFIX = "/matcher/api/v1"


async def vulnerability_report(request: Request) -> Response:
    digest = request.path_params["digest"]
    if not valid_digest(digest):
        return error(400, f"malformed digest {digest!r}")
    rt = runtime(request)
    if not await rt.matcher.initialized():
        return Response(status_code=202)  # no updater has completed yet
    report = await rt.index_report_for_matcher(digest)
    if report is None:
        return error(404, f"index report for manifest {digest!r} not found")
    if report.get("state") != "IndexFinished":
        return error(404, f"manifest {digest!r} is not indexed (state {report.get('state')})")
    body = await rt.matcher.report(report)
    VULN_REPORTS.inc()
    return json_response(body, 200, {"Cache-Control": f"max-age={int(rt.config.matcher_cache_age)}"})


async def update_operations(request: Request) -> Response:
    rt = runtime(request)
    kind = request.query_params.get("kind") or None
    if kind not in (None, "vulnerability", "enrichment"):
        return error(400, "kind must be vulnerability or enrichment")
    latest = request.query_params.get("latest", "").lower() in ("true", "1")
    ops = await rt.update_operations(kind, latest=latest)
    newest = max((op for lst in ops.values() for op in lst), key=lambda op: op["date"], default=None)
    tag = newest["ref"] if newest else ""
    if tag and if_none_match(request, tag):
        return Response(status_code=304, headers={"ETag": quoted(tag)})
    return json_response(ops, 200, {"ETag": quoted(tag)} if tag else None)


async def update_operation_delete(request: Request) -> Response:
    await runtime(request).delete_update_operation(request.path_params["ref"])
    return Response(status_code=200)


async def update_diff(request: Request) -> Response:
    cur = request.query_params.get("cur")
    if not cur:
        return error(400, "cur is required")
    diff = await runtime(request).update_diff(request.query_params.get("prev") or None, cur)
    if diff is None:
        return error(404, "update operation not found")
    return json_response(diff)


routes = [
    Route(f"{PREFIX}/vulnerability_report/{{digest}}", vulnerability_report, methods=["GET"]),
    Route(f"{PREFIX}/internal/update_operation", update_operations, methods=["GET"]),
    Route(f"{PREFIX}/internal/update_operation/{{ref}}", update_operation_delete, methods=["DELETE"]),
    Route(f"{PREFIX}/internal/update_diff", update_diff, methods=["GET"]),
]
