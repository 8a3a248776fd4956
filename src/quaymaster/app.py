"""Builds the ASGI application from settings: /v2, health, and the background loops."""

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable
from typing import AsyncIterator

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from quaymaster.accounts import service as accounts_service
from quaymaster.accounts.tokens import InstanceKeys
from quaymaster.api.app import create_api
from quaymaster.auditlog.service import AuditLog
from quaymaster.context import AppContext
from quaymaster.db import migrate
from quaymaster.db.encryption import FieldCipher
from quaymaster.db.engine import Database
from quaymaster.events import build_events
from quaymaster.metrics import metrics_endpoint
from quaymaster.registry.routes import routes as registry_routes
from quaymaster.secscan.api import routes as secscan_routes
from quaymaster.settings import Settings
from quaymaster.settings.model import RedisConfig
from quaymaster.storage import build_storage
from quaymaster.web.routes import create_web

log = logging.getLogger(__name__)


MIGRATION_LOCK = 7_170_601  # pg_advisory_lock key: one node migrates, the others wait
HEALTH_TIMEOUT = 3.0
RETRY_MAX_DELAY = 5.0
FIRST_TRY_TIMEOUT = 30.0


async def start_context(settings: Settings, *, run_migrations: bool = True,
                        connect_attempts: int = 30, register_key: bool = True) -> AppContext:
    """Connect, migrate, register this instance's signing key: everything a node needs to serve.

    Background workers and admin commands sign no tokens: they pass register_key=False."""
    accounts_service.apply_settings(settings)
    db = Database(settings.DB_URI, settings.DB_CONNECTION_ARGS)
    try:
        await db.wait_until_ready(attempts=connect_attempts)
        if run_migrations:
            await _migrate_once(db)
        keys = InstanceKeys(db, settings.INSTANCE_SERVICE_KEY_SERVICE, settings.SERVER_HOSTNAME,
                            settings.REGISTRY_JWT_AUTH_MAX_FRESH_S, settings.INSTANCE_SERVICE_KEY_EXPIRATION)
        if register_key:
            await keys.register()
        storage = build_storage(settings)
    except BaseException:
        await db.dispose()
        raise
    events, locks = build_events(settings, db)  # connects lazily: Redis may come up later
    return AppContext(settings=settings, db=db, storage=storage, keys=keys,
                      audit=AuditLog(db), cipher=FieldCipher(settings.DATABASE_SECRET_KEY),
                      events=events, locks=locks)


async def _migrate_once(db: Database) -> None:
    """Upgrade the schema; on PostgreSQL under an advisory lock, as every worker of every node may try."""
    if db.is_sqlite:
        await migrate.upgrade(db)
        return
    async with db.engine.connect() as lock:
        await lock.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
        try:
            await migrate.upgrade(db)
        finally:
            await lock.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")


async def _start_when_ready(app: Starlette, settings: Settings, run_migrations: bool,
                            first_try: asyncio.Event, run_workers: bool = False) -> None:
    """Retry with backoff until the database answers, then bind the services and start the loops.

    Meanwhile the process serves: /health/* answers 503 and everything else 503 (see _ReadyGate)."""
    delay = 0.25
    while True:
        try:
            ctx = await start_context(settings, run_migrations=run_migrations, connect_attempts=1)
            break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            first_try.set()
            log.warning("dependencies not ready (%s: %s); retrying in %.1fs", exc.__class__.__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)
    bind_context(app, ctx)
    app.state.tasks = [
        asyncio.create_task(ctx.audit.flush_forever()),
        asyncio.create_task(ctx.keys.refresh_forever(settings.INSTANCE_SERVICE_KEY_REFRESH * 60)),
    ]
    if run_workers:
        from quaymaster.workers import start_workers

        app.state.tasks += start_workers(ctx)
    first_try.set()
    log.info("database, migrations and signing key ready; serving")


class _ReadyGate:
    """Until the services are bound, answer 503 everywhere except /health (which reports why)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not hasattr(scope["app"].state, "ctx") \
                and not scope["path"].startswith(("/health", "/metrics")):
            message = "the registry is starting: waiting for its database"
            if scope["path"].startswith("/v2"):
                body: dict = {"errors": [{"code": "UNAVAILABLE", "message": message, "detail": None}]}
            else:
                body = {"error_message": message, "status": 503}
            await JSONResponse(body, status_code=503, headers={"Retry-After": "5"})(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _database_ok(ctx: AppContext | None) -> bool:
    if ctx is None:
        return False
    async with ctx.db.read() as session:
        await session.execute(text("SELECT 1"))
    return True


async def _storage_ok(app: Starlette, ctx: AppContext | None) -> bool:
    storage = ctx.storage if ctx else getattr(app.state, "health_storage", None)
    if storage is None:
        storage = app.state.health_storage = build_storage(app.state.settings)
    store = storage.preferred
    root = getattr(store, "root", None)  # local drivers: the directory must be writable
    if root is not None and not os.access(root, os.W_OK):
        return False
    await store.exists("sha256:" + "0" * 64)  # any answer from the backend will do
    return True


async def _redis_ok(app: Starlette, config: RedisConfig) -> bool:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    clients = app.state.redis_clients
    key = (config.host, config.port, config.password, config.ssl, config.db)
    if key not in clients:
        clients[key] = aioredis.Redis(host=config.host, port=config.port, password=config.password,
                                      ssl=config.ssl, db=config.db, socket_connect_timeout=2, socket_timeout=2,
                                      retry=Retry(NoBackoff(), 0))
    return bool(await clients[key].ping())


async def _check(probe: Awaitable[bool]) -> bool:
    try:
        return await asyncio.wait_for(probe, HEALTH_TIMEOUT)
    except Exception:  # noqa: BLE001 - a failing probe is an unhealthy service
        return False


async def _scanner_ok(settings: Settings) -> bool:
    from quaymaster.secscan import service as secscan

    await secscan.shared_client(settings).index_state(timeout=HEALTH_TIMEOUT)
    return True


# Reported by both, but only end-to-end health fails on them: a node whose scanner is down still
# serves pulls and pushes, and a load balancer must not take it out for that.
END_TO_END_ONLY = {"security_scanner"}


async def health(request: Request) -> JSONResponse:
    """Quay's health format: each dependency true/false, 503 unless all are up."""
    from quaymaster.secscan import service as secscan

    app = request.app
    settings: Settings = app.state.settings
    ctx: AppContext | None = getattr(app.state, "ctx", None)
    probes = {"database": _database_ok(ctx), "storage": _storage_ok(app, ctx)}
    for name, config in (("redis", settings.BUILDLOGS_REDIS), ("user_events_redis", settings.USER_EVENTS_REDIS)):
        if config is not None and (name == "redis" or config != settings.BUILDLOGS_REDIS):
            probes[name] = _redis_ok(app, config)
    if secscan.enabled(settings):
        probes["security_scanner"] = _scanner_ok(settings)
    results = await asyncio.gather(*(_check(p) for p in probes.values()))
    services = dict(zip(probes, results))
    counted = services if request.url.path.endswith("/endtoend") else {
        name: ok for name, ok in services.items() if name not in END_TO_END_ONLY}
    status = 200 if all(counted.values()) else 503
    return JSONResponse({"data": {"services": services}, "status_code": status}, status_code=status)


health_instance = health  # kept for callers of the old name


def create_app(settings: Settings, *, run_migrations: bool = True, run_workers: bool = False) -> Starlette:
    """run_workers: also run the background workers (gc, replication) in this process."""
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The database may come up later (start order must not matter): after one try, serve
        # anyway and keep retrying. Waiting for that try keeps a worker whose database is up from
        # answering 503 merely because it is still starting.
        first_try = asyncio.Event()
        starter = asyncio.create_task(_start_when_ready(app, settings, run_migrations, first_try, run_workers))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(first_try.wait(), FIRST_TRY_TIMEOUT)
        try:
            yield
        finally:
            starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starter
            tasks = getattr(app.state, "tasks", [])
            for task in tasks:
                task.cancel()
            if tasks:  # let a worker's transaction roll back before the database closes
                await asyncio.wait(tasks, timeout=10)
            ctx = getattr(app.state, "ctx", None)
            if ctx is not None:
                await ctx.audit.flush()
                await ctx.events.close()
                await ctx.locks.close()
                await ctx.db.dispose()
            for client in app.state.redis_clients.values():
                with contextlib.suppress(Exception):
                    await client.aclose()

    api = create_api(settings)
    web = create_web(settings)
    routes = [
        *registry_routes,
        Mount("/api/v1", app=api),
        Route("/health", health),
        Route("/health/instance", health),
        Route("/health/endtoend", health),
        Route("/metrics", metrics_endpoint),
        *secscan_routes,  # POST /secscan/notification, the scanner's webhook
        Mount("", app=web),  # the UI last: its pages live at Quay's root URLs
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(_ReadyGate)])
    app.state.api = api
    app.state.web = web
    app.state.settings = settings
    app.state.redis_clients = {}
    return app


def bind_context(app: Starlette, ctx: AppContext) -> None:
    """Hand the runtime services to the app and its mounted sub-apps (tests call this directly)."""
    app.state.ctx = ctx
    app.state.api.state.ctx = ctx
    app.state.web.state.ctx = ctx
