"""Which bus and locks a process gets, from its settings and database (nothing connects here)."""

from quaymaster.db.engine import Database
from quaymaster.events import FileLocks, InProcessBus, InProcessLocks, build_events
from quaymaster.events.pglocks import PgLocks, lock_key
from quaymaster.events.redis import RedisBus, RedisLocks, describe
from quaymaster.settings.model import RedisConfig, settings_from_dict


def _settings(tmp_path, db_uri: str, **extra):
    return settings_from_dict({
        "SERVER_HOSTNAME": "registry.test", "DB_URI": db_uri,
        "DISTRIBUTED_STORAGE_CONFIG": {"default": ["LocalStorage", {"storage_path": str(tmp_path / "s")}]},
        "DISTRIBUTED_STORAGE_PREFERENCE": ["default"], "SECRET_KEY": "k", "DATABASE_SECRET_KEY": "d",
        **extra,
    })


async def test_sqlite_file_gets_in_process_bus_and_file_locks_beside_the_database(tmp_path):
    uri = f"sqlite:///{tmp_path / 'quaymaster.db'}"
    db = Database(uri)
    try:
        bus, locks = build_events(_settings(tmp_path, uri), db)
        assert isinstance(bus, InProcessBus)
        assert isinstance(locks, FileLocks)
        assert locks.directory == tmp_path / "quaymaster.db-locks"
    finally:
        await db.dispose()


async def test_sqlite_in_memory_keeps_in_process_locks(tmp_path):
    db = Database("sqlite://")
    try:
        _, locks = build_events(_settings(tmp_path, "sqlite://"), db)
        assert isinstance(locks, InProcessLocks)
    finally:
        await db.dispose()


async def test_postgresql_without_redis_gets_advisory_locks(tmp_path):
    uri = "postgresql://nobody@127.0.0.1:1/none"
    db = Database(uri)
    try:
        bus, locks = build_events(_settings(tmp_path, uri), db)
        assert isinstance(bus, InProcessBus)
        assert isinstance(locks, PgLocks)
    finally:
        await db.dispose()


async def test_redis_when_configured_without_connecting(tmp_path):
    uri = f"sqlite:///{tmp_path / 'quaymaster.db'}"
    db = Database(uri)
    unreachable = {"host": "127.0.0.1", "port": 1, "password": "s3cret-pw"}
    try:
        for extra in ({"USER_EVENTS_REDIS": unreachable}, {"BUILDLOGS_REDIS": unreachable},
                      {"USER_EVENTS_REDIS": unreachable, "BUILDLOGS_REDIS": {"host": "elsewhere"}}):
            bus, locks = build_events(_settings(tmp_path, uri, **extra), db)
            assert isinstance(bus, RedisBus) and isinstance(locks, RedisLocks)
            assert "127.0.0.1:1" in repr(bus) and "s3cret-pw" not in repr(bus) + repr(locks)
            await bus.close()
            await locks.close()
    finally:
        await db.dispose()


def test_describe_names_the_server_without_its_password():
    assert describe(RedisConfig(host="r.example", port=6380, password="pw", ssl=True, db=2)) == \
        "rediss://r.example:6380/2"


def test_lock_keys_are_stable_signed_64_bit_and_distinct():
    keys = {lock_key(name) for name in ("gc", "replication", "gc2", "")}
    assert len(keys) == 4
    assert all(-2**63 <= key < 2**63 for key in keys)
    assert lock_key("gc") == lock_key("gc")
