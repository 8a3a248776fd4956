"""Options and helpers every subcommand shares."""

import asyncio
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable

import click

from quaymaster.db import migrate
from quaymaster.db.engine import Database
from quaymaster.settings import DEFAULT_CONFIG_DIR, ConfigError, Settings, load_settings

config_dir_option = click.option(
    "--config-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_CONFIG_DIR,
    show_default=True, help="Directory holding config.yaml (and ssl.cert/ssl.key).",
)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def settings_or_exit(config_dir: Path, *, create: bool = False, **first_run: Any) -> Settings:
    from quaymaster.accounts import service as accounts

    try:
        settings = load_settings(config_dir, create=create, **first_run)
    except ConfigError as err:
        fail(str(err), 2)
        raise  # unreachable
    accounts.apply_settings(settings)
    return settings


def with_database(settings: Settings, work: Callable[[Database], Awaitable[Any]]) -> Any:
    """Run `work` against a migrated database, then close it."""

    async def _run():
        db = Database(settings.DB_URI, settings.DB_CONNECTION_ARGS)
        try:
            await db.wait_until_ready(attempts=3)
            await migrate.upgrade(db)
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(_run())
