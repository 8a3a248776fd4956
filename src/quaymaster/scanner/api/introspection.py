"""robots.txt, health, readiness and Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from quaymaster.scanner.api.common import runtime


async def robots(_request: Request) -> Response:
    return PlainTextResponse("User-agent: *\nDisallow: /\n")


async def healthz(_request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def readyz(request: Request) -> Response:
    ready = await runtime(request).ready()
    return PlainTextResponse("ok\n" if ready else "not ready\n", status_code=200 if ready else 503)


async def metrics(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


health_routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
routes = [Route("/robots.txt", robots, methods=["GET"]), *health_routes]
