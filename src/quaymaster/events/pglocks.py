"""Cross-node locks on PostgreSQL advisory locks, for deployments without Redis."""

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from quaymaster.events.locks import Locks

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """The signed 64-bit advisory lock key of a lock name."""
    digest = hashlib.blake2b(f"quaymaster:lock:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PgLocks(Locks):
    """pg_try_advisory_lock on one connection of this process, kept while it holds any lock.

    The server frees a session's locks when the session ends, so a holder that dies frees them
    without a TTL; the TTL is therefore not enforced (a holder that hangs keeps its lock). The
    connection comes from an autocommit engine so holding a lock never holds a transaction open.
    Advisory locks are re-entrant within one session, so names held here are also kept in a set."""

    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._held: set[str] = set()
        self._guard = asyncio.Lock()  # one statement at a time on the shared connection
        self._failing = False

    @contextlib.asynccontextmanager
    async def hold(self, name: str, ttl_s: float) -> AsyncIterator[bool]:
        taken = await self._acquire(name)
        try:
            yield taken
        finally:
            if taken:
                await self._release(name)

    async def _acquire(self, name: str) -> bool:
        async with self._guard:
            if name in self._held:
                return False
            try:
                if self._conn is None:
                    self._conn = await self._engine.connect()
                taken = bool(await self._conn.scalar(text("SELECT pg_try_advisory_lock(:key)"),
                                                     {"key": lock_key(name)}))
            except Exception as exc:  # noqa: BLE001 - an unreachable database means "not taken"
                self._warn(f"could not take {name!r}", exc)
                await self._discard_connection()
                return False
            self._failing = False
            if taken:
                self._held.add(name)
            elif not self._held:
                await self._return_connection()
            return taken

    async def _release(self, name: str) -> None:
        async with self._guard:
            self._held.discard(name)
            if self._conn is None:
                return
            try:
                await self._conn.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key(name)})
            except Exception as exc:  # noqa: BLE001 - the session (and its locks) is gone with the error
                self._warn(f"could not release {name!r}", exc)
                await self._discard_connection()
                return
            if not self._held:
                await self._return_connection()

    def _warn(self, what: str, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning("locks: %s on PostgreSQL (%s); background work is skipped until it answers",
                        what, exc.__class__.__name__)

    async def _return_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _discard_connection(self) -> None:
        """Never give the pool a connection that might still hold a session lock."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()
        self._held.clear()

    async def close(self) -> None:
        async with self._guard:
            self._held.clear()
            await self._discard_connection()
