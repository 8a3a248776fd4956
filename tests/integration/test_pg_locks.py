"""Advisory locks on a real PostgreSQL, as between two nodes that share it and have no Redis."""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import text

from quaymaster.db.engine import Database
from quaymaster.events import FileLocks, InProcessBus
from quaymaster.events.pglocks import PgLocks

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_dsn(postgres) -> str:
    return postgres.create_database("locks_" + uuid.uuid4().hex[:8])


@pytest.fixture
async def two_nodes(pg_dsn):
    dbs = [Database(pg_dsn), Database(pg_dsn)]
    locks = [PgLocks(db.autocommit_engine) for db in dbs]
    yield locks
    for item, db in zip(locks, dbs):
        await item.close()
        await db.dispose()


async def _advisory_holders(dsn: str) -> int:
    db = Database(dsn)
    try:
        async with db.autocommit_engine.connect() as conn:
            return await conn.scalar(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"))
    finally:
        await db.dispose()


async def test_second_node_is_refused_until_the_first_releases(two_nodes, pg_dsn):
    a, b = two_nodes
    async with a.hold("gc", 60) as first:
        assert first is True
        async with b.hold("gc", 60) as second:
            assert second is False
        async with a.hold("gc", 60) as same_process:  # advisory locks re-enter; ours do not
            assert same_process is False
        async with b.hold("replication", 60) as other:
            assert other is True
        assert await _advisory_holders(pg_dsn) == 1
    assert await _advisory_holders(pg_dsn) == 0
    async with b.hold("gc", 60) as after:
        assert after is True


async def test_holding_keeps_no_transaction_open_and_returns_the_connection(two_nodes, pg_dsn):
    a, _ = two_nodes
    async with a.hold("gc", 60) as taken:
        assert taken
        db = Database(pg_dsn)
        try:
            async with db.autocommit_engine.connect() as conn:
                states = (await conn.execute(text(
                    "SELECT state FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"))).scalars().all()
        finally:
            await db.dispose()
        assert states and "idle in transaction" not in states
    assert a._conn is None


async def test_a_dead_holders_lock_is_free(two_nodes, pg_dsn, caplog):
    """The holder's session ends (its process died, or the server dropped it): the lock goes with it."""
    a, b = two_nodes
    holding = a.hold("gc", 60)
    assert await holding.__aenter__() is True
    db = Database(pg_dsn)
    try:
        async with db.autocommit_engine.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks "
                                    "WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"))
    finally:
        await db.dispose()
    async with b.hold("gc", 60) as taken:
        assert taken is True
        caplog.set_level(logging.WARNING, logger="quaymaster.events")
        await holding.__aexit__(None, None, None)  # the old holder's release fails softly
        assert any("could not release" in r.getMessage() for r in caplog.records)
        async with a.hold("gc", 60) as again:  # a reconnects, and b still holds the lock
            assert again is False


async def test_unreachable_database_means_not_taken():
    db = Database("postgresql://nobody@127.0.0.1:1/none", {"connect_timeout": 2})
    locks = PgLocks(db.autocommit_engine)
    try:
        async with locks.hold("gc", 60) as taken:
            assert taken is False
    finally:
        await locks.close()
        await db.dispose()


async def test_registry_without_redis_locks_in_its_database(ctx):
    assert isinstance(ctx.events, InProcessBus)
    assert isinstance(ctx.locks, FileLocks if ctx.db.is_sqlite else PgLocks)
    async with ctx.locks.hold("gc", 60) as taken:
        assert taken is True
    await ctx.locks.close()
