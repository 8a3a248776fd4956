"""`quaymaster user ...`: manage accounts from the shell (before the web UI exists, and for scripts)."""

import sys
from pathlib import Path

import click

from quaymaster.accounts import service as accounts
from quaymaster.accounts.service import AccountError
from quaymaster.cli.common import config_dir_option, fail, settings_or_exit, with_database
from quaymaster.settings.loader import add_superuser


@click.group("user")
def user() -> None:
    """Create and manage user accounts."""


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail("no password on standard input")
        return password
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@user.command("create")
@config_dir_option
@click.argument("username")
@click.option("--email", default=None, help="Email address (unique).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--superuser", is_flag=True, help="Add the user to SUPER_USERS in config.yaml.")
def create(config_dir: Path, username: str, email: str | None, password_stdin: bool, superuser: bool) -> None:
    """Create USERNAME with a password."""
    settings = settings_or_exit(config_dir, create=True)
    password = _read_password(password_stdin)

    async def work(db):
        async with db.write() as session:
            await accounts.create_user(session, username, email, password)

    try:
        with_database(settings, work)
    except AccountError as err:
        fail(str(err))
    note = ""
    if superuser and not settings.is_superuser(username):
        add_superuser(config_dir, username)
        note = " (added to SUPER_USERS; restart a running registry to apply)"
    elif superuser:
        note = " (already in SUPER_USERS)"
    click.echo(f"created user {username}{note}")
