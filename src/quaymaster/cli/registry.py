"""`quaymaster registry`: serve /v2 (and, as they arrive, the API and UI) on HTTP."""

import logging
import os
from pathlib import Path

import click
import uvicorn

from quaymaster.cli.common import config_dir_option, settings_or_exit, with_database
from quaymaster.settings import load_settings

CONFIG_DIR_ENV = "QUAYMASTER_CONFIG_DIR"


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _quiet_tls_probes() -> None:
    # Clients told --tls-verify=false try TLS first on the HTTP port; each try is not worth a warning.
    logging.getLogger("uvicorn.error").addFilter(
        lambda record: record.getMessage() != "Invalid HTTP request received.")


def worker_app():
    """The app factory each worker process imports (migrations already ran in the parent)."""
    from quaymaster.app import create_app

    _quiet_tls_probes()
    return create_app(load_settings(os.environ[CONFIG_DIR_ENV]), run_migrations=False)


@click.command("registry")
@config_dir_option
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="HTTP port.")
@click.option("--workers", default=_default_workers, show_default="CPUs, at most 4", type=click.IntRange(1, 64),
              help="Server processes sharing the port.")
@click.option("--access-log/--no-access-log", default=False, help="Log every request.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def registry(config_dir: Path, host: str, port: int, workers: int, access_log: bool, log_level: str) -> None:
    """Start the registry; the first run creates the embedded default config in CONFIG_DIR."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _quiet_tls_probes()
    settings = settings_or_exit(config_dir, create=True, port=port)
    with_database(settings, lambda db: _noop())  # migrate once, before any worker starts
    click.echo(f"quaymaster: serving {settings.base_url} (listening on {host}:{port}, {workers} worker(s), "
               f"config {config_dir}/config.yaml)", err=True)
    os.environ[CONFIG_DIR_ENV] = str(config_dir.resolve())
    uvicorn.run("quaymaster.cli.registry:worker_app", factory=True, workers=workers, host=host, port=port,
                loop="uvloop", http="httptools", access_log=access_log, log_level=log_level,
                timeout_keep_alive=75, server_header=False)


async def _noop() -> None:
    return None
