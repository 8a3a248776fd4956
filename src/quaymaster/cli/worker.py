"""`quaymaster worker NAME`: run one background worker alone, for nodes that serve with --no-workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import click

from quaymaster.cli.common import config_dir_option, settings_or_exit
from quaymaster.settings import Settings
from quaymaster.workers import NAMES

log = logging.getLogger(__name__)


async def _once(settings: Settings, name: str) -> None:
    from quaymaster.workers import describe_report, gc_pass, replication_pass, worker_context

    async with worker_context(settings) as ctx:
        if name == "gc":
            click.echo(describe_report(await gc_pass(ctx, full=True)))
        elif name == "securityworker":
            from quaymaster.secscan.worker import run_once_cli
            from quaymaster.workers import disabled_reason

            if reason := disabled_reason(settings, name):
                click.echo(f"securityworker: {reason}; nothing to do")
                return
            report = await run_once_cli(ctx)
            click.echo(f"securityworker: {report.describe()}")
            if report.skipped:
                raise SystemExit(1)
        elif name == "repomirror":
            from quaymaster.mirroring.worker import mirror_pass

            results = await mirror_pass(ctx)
            for result in results:
                click.echo(result.line())
            if not results:
                click.echo("repomirror: no repository is due for mirroring")
        else:
            click.echo(f"replication: {await replication_pass(ctx)} copies made")


async def _main(settings: Settings, name: str) -> None:
    from quaymaster.workers import run_worker, worker_context

    async with worker_context(settings) as ctx:
        task = asyncio.create_task(run_worker(ctx, name))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("%s worker: stopped", name)


@click.command("worker")
@click.argument("name", type=click.Choice(NAMES))
@config_dir_option
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve this worker's Prometheus counters on this port (at any path).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port.")
@click.option("--once", is_flag=True, help="Run one pass now, print what it did, and exit.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def worker(name: str, config_dir: Path, metrics_port: int | None, metrics_host: str, once: bool,
           log_level: str) -> None:
    """Run background worker NAME until stopped (SIGTERM or Ctrl-C).

    gc collects garbage every GARBAGE_COLLECTION_FREQUENCY seconds; replication copies blobs to
    DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS; securityworker sends new manifests to the Clair v4
    scanner at SECURITY_SCANNER_V4_ENDPOINT. A worker its settings turn off stays idle."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_or_exit(config_dir)
    if once:
        asyncio.run(_once(settings, name))
        return
    if metrics_port is not None:
        from prometheus_client import start_http_server

        from quaymaster.metrics import collector_registry

        try:
            start_http_server(metrics_port, addr=metrics_host, registry=collector_registry())
        except OSError as exc:
            click.echo(f"error: cannot serve metrics on {metrics_host}:{metrics_port}: {exc.strerror}", err=True)
            raise SystemExit(1) from None
    asyncio.run(_main(settings, name))
