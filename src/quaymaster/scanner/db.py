"""Engines for the scanner's databases; the schema is created at start (see ARCHITECTURE.md)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import event, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from quaymaster.scanner.models import SCHEMA_VERSION, metadata, schema_version

log = logging.getLogger(__name__)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer scanner; refuse rather than guess."""


class ScannerDB:
    """One database (the indexer's, matcher's or notifier's; in combo mode usually the same one)."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs = {} if self.is_sqlite else {"pool_size": 10, "max_overflow": 10, "pool_pre_ping": True}
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin_immediate)

    async def create_schema(self) -> None:
        """Create missing tables and record the schema version; refuse a newer schema."""
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            found = (await conn.execute(select(schema_version.c.version))).scalar()
            if found is None:
                await conn.execute(insert(schema_version).values(id=1, version=SCHEMA_VERSION))
            elif found > SCHEMA_VERSION:
                raise SchemaTooNew(f"scanner database schema {found} is newer than this build ({SCHEMA_VERSION})")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(sqlite_immediate=True)
            async with conn.begin():
                yield conn

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - readiness reports any failure as "not ready"
            return False

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)


def _sqlite_begin_immediate(conn) -> None:
    # Writers take the lock up front and queue on it, instead of failing with "database is
    # locked" when a read transaction tries to upgrade; readers never block (WAL).
    immediate = conn.get_execution_options().get("sqlite_immediate")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Databases:
    """The three logical databases, sharing one engine when their URLs are equal."""

    def __init__(self, indexer_url: str, matcher_url: str, notifier_url: str):
        engines: dict[str, ScannerDB] = {}
        for url in {indexer_url, matcher_url, notifier_url}:
            engines[url] = ScannerDB(url)
        self.indexer = engines[indexer_url]
        self.matcher = engines[matcher_url]
        self.notifier = engines[notifier_url]
        self._all = list(engines.values())

    async def create_schema(self) -> None:
        for db in self._all:
            await db.create_schema()

    async def close(self) -> None:
        for db in self._all:
            await db.close()
