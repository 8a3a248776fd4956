"""`quaymaster repomirror`: the repository mirror worker alone, as Quay's `repomirror` entry mode."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import click

from quaymaster.cli.common import config_dir_option, settings_or_exit
from quaymaster.settings import Settings

log = logging.getLogger(__name__)


async def run_once(settings: Settings) -> int:
    """One pass over every mirror due now, a line per repository; 1 if any sync failed."""
    from quaymaster.mirroring.models import MirrorStatus
    from quaymaster.mirroring.worker import mirror_pass
    from quaymaster.workers import worker_context

    async with worker_context(settings) as ctx:
        results = await mirror_pass(ctx)
    if not results:
        click.echo("repomirror: no repository is due for mirroring")
    for result in results:
        click.echo(result.line())
    return 1 if any(r.status == MirrorStatus.FAIL for r in results) else 0


async def _main(settings: Settings) -> None:
    from quaymaster.workers import run_worker, worker_context

    async with worker_context(settings) as ctx:
        task = asyncio.create_task(run_worker(ctx, "repomirror"))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("repomirror worker: stopped")


@click.command("repomirror")
@config_dir_option
@click.option("--once", is_flag=True,
              help="Sync every mirror due now (scheduled or \"sync now\"), print a line per repository, "
                   "and exit (status 1 if a sync failed).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def repomirror(config_dir: Path, once: bool, log_level: str) -> None:
    """Mirror repositories from other registries until stopped (SIGTERM or Ctrl-C).

    Every REPO_MIRROR_INTERVAL seconds, each repository in MIRROR state whose mirror is due is
    synced with skopeo (which must be installed). Several of these processes may run: each
    repository is claimed by one of them at a time. With FEATURE_REPO_MIRROR off it stays idle."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_or_exit(config_dir)
    if once:
        if not settings.FEATURE_REPO_MIRROR:
            click.echo("error: FEATURE_REPO_MIRROR is off in config.yaml; nothing to mirror", err=True)
            raise SystemExit(1)
        raise SystemExit(asyncio.run(run_once(settings)))
    asyncio.run(_main(settings))
