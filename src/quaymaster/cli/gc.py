"""`quaymaster gc`: one full garbage collection pass now, and what it reclaimed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click

from quaymaster.cli.common import config_dir_option, fail, settings_or_exit
from quaymaster.settings import Settings

LOCK_POLL_S = 1.0


class _LockBusy(Exception):
    pass


async def _collect(settings: Settings, lock_timeout: float):
    from quaymaster.workers import GC_LOCK, GC_LOCK_TTL_S, gc_pass, worker_context

    async with worker_context(settings) as ctx:
        deadline = time.monotonic() + lock_timeout
        said = False
        while True:
            # The lock keeps this pass from running beside the background worker's (which
            # would be safe, only wasteful).
            async with ctx.locks.hold(GC_LOCK, GC_LOCK_TTL_S) as taken:
                if taken:
                    started = time.monotonic()
                    report = await gc_pass(ctx, full=True)
                    return report, time.monotonic() - started
            if time.monotonic() >= deadline:
                raise _LockBusy
            if not said:
                click.echo("waiting for the garbage collection pass running elsewhere...", err=True)
                said = True
            await asyncio.sleep(LOCK_POLL_S)


@click.command("gc")
@config_dir_option
@click.option("--lock-timeout", type=click.FloatRange(0), default=120, show_default=True,
              help="Seconds to wait while another process holds the garbage collection lock.")
def gc(config_dir: Path, lock_timeout: float) -> None:
    """Collect garbage now: expired tags, unreferenced manifests and blobs, deleted repositories
    and namespaces, stale uploads. Safe while the registry serves."""
    from quaymaster.workers import human_bytes

    settings = settings_or_exit(config_dir)
    if not settings.FEATURE_GARBAGE_COLLECTION:
        click.echo("note: FEATURE_GARBAGE_COLLECTION is off, so no background pass runs; collecting as asked",
                   err=True)
    try:
        report, seconds = asyncio.run(_collect(settings, lock_timeout))
    except _LockBusy:
        fail(f"the garbage collection lock stayed taken for {lock_timeout:g}s (another pass is running, or "
             "the lock backend cannot be reached); try again later")
        return
    rows = [("tags", str(report.tags)), ("manifests", str(report.manifests)), ("blobs", str(report.blobs)),
            ("bytes", human_bytes(report.bytes)), ("uploads", str(report.uploads)),
            ("repositories", str(report.repositories)), ("namespaces", str(report.namespaces))]
    if report.multipart_aborted:
        rows.append(("multipart uploads aborted", str(report.multipart_aborted)))
    click.echo(f"garbage collection done in {seconds:.1f}s; reclaimed:")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"  {label:<{width}}  {value}")
    if report.failed:
        fail(f"{report.failed} item(s) could not be collected; the log above says why")
