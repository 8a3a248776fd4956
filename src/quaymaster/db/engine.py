"""Engine and session factory built from DB_URI; read and write sessions kept apart for SQLite."""

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger(__name__)


def async_url(db_uri: str) -> str:
    """Translate Quay's DB_URI (sqlite:///, postgresql://) to the asyncio driver URL."""
    scheme, rest = db_uri.split(":", 1)
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return "sqlite+aiosqlite:" + rest
    if base in ("postgresql", "postgres"):
        return "postgresql+asyncpg:" + rest
    raise ValueError(f"unsupported database URI scheme {scheme!r}")


def _connect_args(db_uri: str, args: dict) -> tuple[dict, dict]:
    """Split DB_CONNECTION_ARGS into driver connect args and pool options."""
    connect: dict = {}
    pool: dict = {}
    if db_uri.startswith("sqlite"):
        connect["timeout"] = float(args.get("timeout", 30))
        return connect, pool
    if "connect_timeout" in args:
        connect["timeout"] = float(args["connect_timeout"])
    if "sslmode" in args:
        connect["ssl"] = args["sslmode"]
    if "max_connections" in args:
        pool["pool_size"] = int(args["max_connections"])
    if "stale_timeout" in args:
        pool["pool_recycle"] = int(args["stale_timeout"])
    return connect, pool


class Database:
    """Owns the engine; `read()` and `write()` give sessions with the right locking."""

    def __init__(self, db_uri: str, connection_args: dict | None = None):
        self.db_uri = db_uri
        self.is_sqlite = db_uri.startswith("sqlite")
        connect, pool = _connect_args(db_uri, connection_args or {})
        self.engine: AsyncEngine = create_async_engine(
            async_url(db_uri), connect_args=connect, pool_pre_ping=not self.is_sqlite, **pool
        )
        # A second pool in autocommit mode for single-statement reads on the hot path: no
        # BEGIN/ROLLBACK round trips around a query that is atomic on its own.
        self.autocommit_engine: AsyncEngine = create_async_engine(
            async_url(db_uri), connect_args=connect, pool_pre_ping=not self.is_sqlite,
            isolation_level="AUTOCOMMIT", **pool
        )
        if self.is_sqlite:
            self._tune_sqlite(self.engine, manual_begin=True)
            self._tune_sqlite(self.autocommit_engine, manual_begin=False)
        self._read = async_sessionmaker(self.engine, expire_on_commit=False)
        # On SQLite a writer takes the lock up front (BEGIN IMMEDIATE): a read-then-write
        # transaction would otherwise fail with "database is locked" instead of waiting.
        self._write = async_sessionmaker(
            self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False
        )

    @staticmethod
    def _tune_sqlite(engine: AsyncEngine, manual_begin: bool) -> None:
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        if manual_begin:
            @event.listens_for(sync_engine, "begin")
            def _on_begin(conn):
                immediate = conn.get_execution_options().get("sqlite_immediate")
                conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction, committed on success and rolled back on error."""
        async with self._write() as session:
            async with session.begin():
                yield session

    async def fetch_one(self, statement, params: dict):
        """One row of a single read statement, outside any transaction (the hot path)."""
        async with self.autocommit_engine.connect() as conn:
            return (await conn.execute(statement, params)).first()

    async def wait_until_ready(self, attempts: int = 30, delay: float = 1.0) -> None:
        """Retry the first connection with backoff so start order does not crash the process."""
        for attempt in range(1, attempts + 1):
            try:
                async with self.engine.connect() as conn:
                    await conn.exec_driver_sql("SELECT 1")
                return
            except (OperationalError, OSError) as exc:
                if attempt == attempts:
                    raise
                log.warning("database not reachable yet (%s); retrying", exc.__class__.__name__)
                await asyncio.sleep(min(delay * attempt, 10))

    async def dispose(self) -> None:
        await self.engine.dispose()
        await self.autocommit_engine.dispose()
