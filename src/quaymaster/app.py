"""Builds the ASGI application from settings: /v2, health, and the background loops."""

import asyncio
import contextlib
import logging
from typing import AsyncIterator

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from quaymaster.accounts.tokens import InstanceKeys
from quaymaster.api.app import create_api
from quaymaster.auditlog.service import AuditLog
from quaymaster.context import AppContext
from quaymaster.db import migrate
from quaymaster.db.encryption import FieldCipher
from quaymaster.db.engine import Database
from quaymaster.registry.routes import routes as registry_routes
from quaymaster.settings import Settings
from quaymaster.storage import build_storage

log = logging.getLogger(__name__)


async def start_context(settings: Settings, *, run_migrations: bool = True) -> AppContext:
    """Connect, migrate, register this instance's signing key: everything a node needs to serve."""
    db = Database(settings.DB_URI, settings.DB_CONNECTION_ARGS)
    await db.wait_until_ready()
    if run_migrations:
        await migrate.upgrade(db)
    keys = InstanceKeys(db, settings.INSTANCE_SERVICE_KEY_SERVICE, settings.SERVER_HOSTNAME,
                        settings.REGISTRY_JWT_AUTH_MAX_FRESH_S, settings.INSTANCE_SERVICE_KEY_EXPIRATION)
    await keys.register()
    return AppContext(settings=settings, db=db, storage=build_storage(settings), keys=keys,
                      audit=AuditLog(db), cipher=FieldCipher(settings.DATABASE_SECRET_KEY))


async def health_instance(request: Request) -> JSONResponse:
    ctx: AppContext = request.app.state.ctx
    services = {"database": True, "storage": True}
    try:
        async with ctx.db.read() as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        services["database"] = False
    healthy = all(services.values())
    return JSONResponse({"data": {"services": services}, "status_code": 200 if healthy else 503},
                        status_code=200 if healthy else 503)


def create_app(settings: Settings, *, run_migrations: bool = True) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx = await start_context(settings, run_migrations=run_migrations)
        bind_context(app, ctx)
        tasks = [
            asyncio.create_task(ctx.audit.flush_forever()),
            asyncio.create_task(ctx.keys.refresh_forever(settings.INSTANCE_SERVICE_KEY_REFRESH * 60)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await ctx.audit.flush()
            await ctx.db.dispose()

    api = create_api(settings)
    routes = [
        *registry_routes,
        Mount("/api/v1", app=api),
        Route("/health", health_instance),
        Route("/health/instance", health_instance),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.api = api
    return app


def bind_context(app: Starlette, ctx: AppContext) -> None:
    """Hand the runtime services to the app and its mounted sub-apps (tests call this directly)."""
    app.state.ctx = ctx
    app.state.api.state.ctx = ctx
