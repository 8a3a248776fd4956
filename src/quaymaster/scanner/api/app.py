"""Build the Starlette app for a mode: only that mode's routes are mounted, as in Clair."""

from __future__ import annotations

from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from quaymaster.scanner.api import indexer, introspection, matcher, notifier
from quaymaster.scanner.api.auth import PSKMiddleware
from quaymaster.scanner.api.errors import HANDLERS
from quaymaster.scanner.auth import PSKVerifier


def build_app(runtime, *, manage_lifecycle: bool = True) -> Starlette:
    """The main API app; with manage_lifecycle the app starts and stops the runtime itself."""
    mode = runtime.mode
    routes = list(introspection.routes)
    if mode in ("combo", "indexer"):
        routes += indexer.routes
    if mode in ("combo", "matcher"):
        routes += matcher.routes
    if mode in ("combo", "notifier"):
        routes += notifier.routes
    config = runtime.config
    verifier = PSKVerifier(config.psk_key, config.psk_issuers) if config.psk_key else None

    @asynccontextmanager
    async def lifespan(_app):
        if manage_lifecycle:
            await runtime.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await runtime.stop()

    app = Starlette(routes=routes, exception_handlers=HANDLERS, lifespan=lifespan,
                    middleware=[Middleware(PSKMiddleware, verifier=verifier)])
    app.state.runtime = runtime
    return app


def build_introspection_app(runtime) -> Starlette:
    app = Starlette(routes=introspection.health_routes, exception_handlers=HANDLERS)
    app.state.runtime = runtime
    return app
