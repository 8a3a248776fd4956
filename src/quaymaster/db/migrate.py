"""Bring the schema to the newest Alembic revision; the same migrations on SQLite and PostgreSQL."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from quaymaster.db.engine import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(db: Database) -> str:
    """Upgrade to head inside one transaction; returns the revision now current."""
    cfg = alembic_config()

    def _run(sync_conn):
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, "head")
        return MigrationContext.configure(sync_conn).get_current_revision()

    async with db.engine.begin() as conn:
        return await conn.run_sync(_run)


async def current_revision(db: Database) -> str | None:
    async with db.engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def autogenerate(db: Database, message: str) -> None:
    """Developer helper: write a new revision from the difference between models and the database."""
    cfg = alembic_config()

    def _run(sync_conn):
        cfg.attributes["connection"] = sync_conn
        command.revision(cfg, message=message, autogenerate=True)

    async with db.engine.begin() as conn:
        await conn.run_sync(_run)
