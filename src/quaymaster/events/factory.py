"""Chooses the event bus and the locks a process uses, from the settings and the database."""

from pathlib import Path

from sqlalchemy.engine import make_url

from quaymaster.db.engine import Database
from quaymaster.events.bus import EventBus, InProcessBus
from quaymaster.events.locks import FileLocks, InProcessLocks, Locks
from quaymaster.settings import Settings


def build_events(settings: Settings, db: Database) -> tuple[EventBus, Locks]:
    """Redis for both when one is configured; otherwise an in-process bus and database-side locks.

    Nothing here connects: a Redis or database that is down when the registry starts only
    makes events drop and locks go untaken until it answers."""
    redis_config = settings.USER_EVENTS_REDIS or settings.BUILDLOGS_REDIS
    if redis_config is not None:
        from quaymaster.events.redis import RedisBus, RedisLocks

        return RedisBus(redis_config), RedisLocks(redis_config)
    return InProcessBus(), _database_locks(db)


def _database_locks(db: Database) -> Locks:
    # PostgreSQL may serve many nodes: its advisory locks exclude them all. SQLite is one
    # machine, but the registry runs several worker processes there, so lock files beside the
    # database exclude those; an in-memory database has one process and keeps InProcessLocks.
    if not db.is_sqlite:
        from quaymaster.events.pglocks import PgLocks

        return PgLocks(db.autocommit_engine)
    database = make_url(db.db_uri).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return InProcessLocks()
    path = Path(database)
    return FileLocks(path.with_name(path.name + "-locks"))
