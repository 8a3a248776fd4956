"""`quaymaster config <password>` (the editor) and `quaymaster config validate` (the validators)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import click

from quaymaster.cli.common import config_dir_option, fail
from quaymaster.settings.bundle import (
    CONFIG_FILE,
    BundleError,
    ConfigBundle,
    read_config_dir,
)
from quaymaster.settings.loader import _embedded_default
from quaymaster.settings.tls import install_ca_bundle


class _ConfigGroup(click.Group):
    """`quaymaster config validate ...` runs a subcommand; `quaymaster config PASSWORD ...` the editor."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            return "editor", self.commands["editor"], args
        return super().resolve_command(ctx, args)


@click.group("config", cls=_ConfigGroup)
def config() -> None:
    """Edit and check config.yaml: `quaymaster config PASSWORD` serves the editor.

    A password spelled like a subcommand goes through `quaymaster config editor PASSWORD`."""


@config.command("validate")
@config_dir_option
def validate(config_dir: Path) -> None:
    """Check config.yaml and every service it names; print `KEY: message` per problem."""
    from quaymaster.settings.validators import validate_bundle

    if not (config_dir / CONFIG_FILE).exists():
        fail(f"{config_dir / CONFIG_FILE} not found", 2)
    try:
        bundle = read_config_dir(config_dir)
    except BundleError as exc:
        fail(str(exc), 2)
        return
    override = os.environ.get("QUAY_OVERRIDE_CONFIG")
    if override:  # check what the registry would run with
        try:
            bundle.config.update(json.loads(override))
        except (ValueError, TypeError, AttributeError):
            fail("QUAY_OVERRIDE_CONFIG: not a JSON object", 2)
    # Keys the registry fills in when left out (SQLite and storage beside the config dir): same here.
    defaults = _embedded_default(config_dir)
    for key in ("DB_URI", "DISTRIBUTED_STORAGE_CONFIG", "DISTRIBUTED_STORAGE_PREFERENCE"):
        bundle.config.setdefault(key, defaults[key])
    install_ca_bundle(config_dir)
    issues = asyncio.run(validate_bundle(bundle, config_dir))
    for issue in issues:
        click.echo(str(issue))
    if issues:
        raise SystemExit(1)
    click.echo("configuration is valid")


@config.command("editor")
@click.argument("password", envvar="CONFIG_APP_PASSWORD")
@click.option("--config-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Config directory to start from (read only); defaults when not given.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", default=8080, show_default=True, type=int, help="HTTP port.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def editor(password: str, config_dir: Path | None, host: str, port: int, log_level: str) -> None:
    """Serve the config editor; log in as `quayconfig` with PASSWORD."""
    import uvicorn

    from quaymaster.configeditor import form
    from quaymaster.configeditor.app import USERNAME, create_editor_app

    if not password:
        fail("the editor needs a password: quaymaster config PASSWORD")
    bundle = ConfigBundle(form.default_config())
    if config_dir is not None:
        try:
            bundle = read_config_dir(config_dir)
        except BundleError as exc:
            fail(str(exc), 2)
        if not bundle.config:
            bundle.config = form.default_config()
        form.ensure_secrets(bundle.config)
        install_ca_bundle(config_dir)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    where = f"config from {config_dir}" if config_dir else "default config"
    click.echo(f"quaymaster config editor on http://{host}:{port}/ (user {USERNAME}; {where})", err=True)
    uvicorn.run(create_editor_app(password, bundle, config_dir.resolve() if config_dir else None),
                host=host, port=port, log_level=log_level, server_header=False, access_log=False)
