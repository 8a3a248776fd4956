"""In-process app fixtures for protocol and API tests, on SQLite and on PostgreSQL.

Each test gets a fresh database copied from one migrated once per session (a file copy on
SQLite, CREATE DATABASE ... TEMPLATE on PostgreSQL), so migrations run once, not per test.
`ctx` is the running app's services with users alice and bob (passwords `<name>-password`);
`http` is an httpx client talking to the app in-process.
"""

import asyncio
import itertools
import shutil
from pathlib import Path

import httpx
import pytest

from quaymaster.accounts import service as accounts
from quaymaster.app import bind_context, create_app, start_context
from quaymaster.db import migrate
from quaymaster.db.engine import Database
from quaymaster.settings.model import settings_from_dict

HOST = "registry.test"

_db_counter = itertools.count()


def _migrate(uri: str) -> None:
    async def run():
        db = Database(uri)
        await migrate.upgrade(db)
        await db.dispose()

    asyncio.run(run())


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    _migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template(postgres) -> str:
    postgres.create_database("proto_template")
    _migrate(postgres.dsn("proto_template"))
    return "proto_template"


@pytest.fixture(params=["sqlite", "postgres"])
def db_uri(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "quaymaster.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    template = request.getfixturevalue("pg_template")
    pg = request.getfixturevalue("postgres")
    name = f"proto_{next(_db_counter)}"
    pg.psql(f"CREATE DATABASE {name} TEMPLATE {template}")
    return pg.dsn(name)


@pytest.fixture
def config(tmp_path: Path, db_uri: str) -> dict:
    return {
        "SERVER_HOSTNAME": HOST,
        "DB_URI": db_uri,
        "DISTRIBUTED_STORAGE_CONFIG": {"default": ["LocalStorage", {"storage_path": str(tmp_path / "storage")}]},
        "DISTRIBUTED_STORAGE_PREFERENCE": ["default"],
        "SECRET_KEY": "test-secret",
        "DATABASE_SECRET_KEY": "test-db-secret",
        "MAXIMUM_LAYER_SIZE": "1M",
        "MAXIMUM_MANIFEST_SIZE": "64K",
    }


@pytest.fixture
async def ctx(config: dict, monkeypatch):
    monkeypatch.setattr(accounts, "BCRYPT_ROUNDS", 4)
    settings = settings_from_dict(config)
    app = create_app(settings)
    context = await start_context(settings)
    bind_context(app, context)
    async with context.db.write() as session:
        for name in ("alice", "bob"):
            await accounts.create_user(session, name, f"{name}@example.com", f"{name}-password")
    context.app = app
    yield context
    await context.audit.flush()
    await context.db.dispose()


@pytest.fixture
async def http(ctx):
    transport = httpx.ASGITransport(app=ctx.app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}") as client:
        yield client
