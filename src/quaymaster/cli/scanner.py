"""`quaymaster scanner`: the Clair-v4-compatible vulnerability scanner, and `scanner update`."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click
import uvicorn

from quaymaster.cli.servers import QuietServer, stop_on_signals

log = logging.getLogger(__name__)


def _config_or_exit(path: Path | None):
    from quaymaster.scanner.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per layer fetch is noise




async def _serve(config, mode: str) -> None:
    from quaymaster.scanner.api.app import build_app, build_introspection_app
    from quaymaster.scanner.runtime import Runtime

    runtime = Runtime(config, mode)
    # In-flight index requests get 30 s to finish on SIGTERM; Quay retries the ones cut off.
    common = {"lifespan": "off", "access_log": False, "log_level": config.log_level, "server_header": False,
              "timeout_graceful_shutdown": 30}
    host, port = config.http_listen_addr
    servers = [QuietServer(uvicorn.Config(build_app(runtime, manage_lifecycle=False), host=host, port=port, **common))]
    if config.introspection_addr:
        ihost, iport = config.introspection_addr
        servers.append(QuietServer(uvicorn.Config(build_introspection_app(runtime), host=ihost, port=iport, **common)))

    stop_on_signals(servers)
    await runtime.start()
    log.info("scanner (%s mode) starting on %s:%d", mode, host, port)
    try:
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        await runtime.stop()
    if any(not server.started for server in servers):
        raise SystemExit(1)  # a port could not be bound


@click.group("scanner", invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=lambda: os.environ.get("CLAIR_CONF") or None,
              help="Clair-style YAML config (env CLAIR_CONF). Without one: combo mode on 127.0.0.1:8081, "
                   "SQLite under ./quaymaster-scanner-data/, the default feeds (osv, debian, alpine).")
@click.option("--mode", type=click.Choice(["combo", "indexer", "matcher", "notifier"]),
              default=lambda: os.environ.get("CLAIR_MODE") or "combo", show_default="combo",
              help="Which services to run (env CLAIR_MODE).")
@click.option("--http-listen-addr", default=None, help="HOST:PORT, overriding http_listen_addr.")
@click.pass_context
def scanner(ctx: click.Context, config_path: Path | None, mode: str, http_listen_addr: str | None) -> None:
    """Run the vulnerability scanner (Clair v4 API) until SIGTERM or Ctrl-C."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    if ctx.invoked_subcommand is not None:
        return
    from quaymaster.scanner.config import ConfigError, parse_hostport

    if mode not in ("combo", "indexer", "matcher", "notifier"):
        click.echo(f"error: CLAIR_MODE: unknown mode {mode!r}", err=True)
        sys.exit(2)
    config = _config_or_exit(config_path)
    if http_listen_addr:
        try:
            config.http_listen_addr = parse_hostport(http_listen_addr, "--http-listen-addr")
        except ConfigError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
    _logging(config.log_level)
    if config_path is None:
        log.info("no config given: embedded defaults, data in %s", config.data_dir)
    asyncio.run(_serve(config, mode))


@scanner.command("update")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Clair-style YAML config whose updaters.sets to run (default: the group's --config / CLAIR_CONF).")
@click.pass_context
def update(ctx: click.Context, config_path: Path | None) -> None:
    """Run the configured updaters once, print what changed, and exit (1 if any failed)."""
    config = _config_or_exit(config_path or ctx.obj.get("config_path"))
    _logging("warning" if config.log_level == "info" else config.log_level)
    if not config.updater_sets:
        click.echo("no updaters configured (updaters.sets is empty)")
        return

    async def run():
        from quaymaster.scanner.runtime import Runtime

        runtime = Runtime(config, "matcher")
        await runtime.dbs.create_schema()
        try:
            results = await runtime.run_updates()
            if runtime.dbs.notifier is runtime.dbs.matcher and await runtime.notifier.process():
                await runtime.notifier.deliver()
            return results
        finally:
            await runtime.stop()

    results = asyncio.run(run())
    for result in results:
        click.echo(result.describe())
    if any(r.outcome == "error" for r in results):
        sys.exit(1)
