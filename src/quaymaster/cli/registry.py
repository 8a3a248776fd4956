"""`quaymaster registry`: serve /v2 (and, as they arrive, the API and UI) on HTTP."""

import logging
from pathlib import Path

import click
import uvicorn

from quaymaster.cli.common import config_dir_option, settings_or_exit


@click.command("registry")
@config_dir_option
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="HTTP port.")
@click.option("--access-log/--no-access-log", default=False, help="Log every request.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def registry(config_dir: Path, host: str, port: int, access_log: bool, log_level: str) -> None:
    """Start the registry; the first run creates the embedded default config in CONFIG_DIR."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Clients told --tls-verify=false try TLS first on the HTTP port; each try is not worth a warning.
    logging.getLogger("uvicorn.error").addFilter(
        lambda record: record.getMessage() != "Invalid HTTP request received.")
    settings = settings_or_exit(config_dir, create=True, port=port)
    from quaymaster.app import create_app

    click.echo(f"quaymaster: serving {settings.base_url} (listening on {host}:{port}, "
               f"config {config_dir}/config.yaml)", err=True)
    uvicorn.run(create_app(settings), host=host, port=port, loop="uvloop", http="httptools",
                access_log=access_log, log_level=log_level, timeout_keep_alive=75,
                server_header=False)
