"""`quaymaster migrate`: bring the database schema up to date (the registry also does this on start)."""

from pathlib import Path

import click

from quaymaster.cli.common import config_dir_option, settings_or_exit, with_database
from quaymaster.db import migrate as migrations


@click.command("migrate")
@config_dir_option
def migrate(config_dir: Path) -> None:
    """Upgrade the database to the newest schema revision."""
    settings = settings_or_exit(config_dir)
    revision = with_database(settings, migrations.current_revision)
    click.echo(f"database at revision {revision} (head {migrations.head_revision()})")
