"""The background workers: garbage collection and storage replication, and the loop that runs them.

A worker is a pass function run over and over: every `interval` seconds, sooner when an event
arrives on its channel, under a named lock so that one process of the deployment runs it at a
time (the locks are an economy, never a safeguard: each pass is safe to run twice at once).
A pass that fails is logged and retried after a growing pause; cancelling the task stops it
between or inside passes, releasing the lock.

Where they run: `quaymaster registry` runs them in one of its server processes (unless
--no-workers), `quaymaster worker NAME` runs one alone, and `quaymaster gc` runs one pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

# quaymaster.metrics is imported inside the functions that count: prometheus_client decides at
# import whether to write multiprocess files, and the CLI imports this module before the
# registry's supervisor has set that up.
if TYPE_CHECKING:
    from quaymaster.content.gc import GcReport
    from quaymaster.context import AppContext
    from quaymaster.events import EventBus, Locks, Subscription
    from quaymaster.settings import Settings

log = logging.getLogger(__name__)

NAMES = ("gc", "replication", "securityworker", "repomirror")
GC_LOCK = "gc"
GC_LOCK_TTL_S = 3600.0  # a process that dies holding it delays the others by at most this long
FULL_GC_INTERVAL_S = 3600.0
REPLICATION_LOCK = "replication"
REPLICATION_LOCK_TTL_S = 1200.0
REPLICATION_INTERVAL_S = 30.0  # scan for missing copies this often; pushes wake it sooner
REPLICATION_BATCH = 100  # blobs per database query
STARTUP_DELAY_S = 5.0  # let a starting server settle before its first pass
SETTLE_S = 1.0  # after a wake-up event, gather the burst it belongs to into one pass
BACKOFF_MAX_S = 600.0


@dataclass(frozen=True)
class Worker:
    """One named background job. `run_once` returns True when more work is waiting right now."""

    name: str
    run_once: Callable[[], Awaitable[bool]]
    interval: float
    lock: str
    lock_ttl: float
    wake_channel: str | None = None


class WorkerLoop:
    """Runs one Worker until cancelled; counts what happened, for logs and tests."""

    def __init__(self, worker: Worker, locks: Locks, events: EventBus | None = None, *,
                 first_delay: float | None = None, settle: float = SETTLE_S,
                 backoff_max: float = BACKOFF_MAX_S):
        self.worker = worker
        self.locks = locks
        self.events = events
        self.first_delay = min(worker.interval, STARTUP_DELAY_S) if first_delay is None else first_delay
        self.settle = settle
        self.backoff_max = max(backoff_max, worker.interval)
        self.passes = 0  # passes run under the lock, failed ones included
        self.failures = 0  # failures in a row; 0 after a pass that worked
        self.skipped = 0  # rounds where another process held the lock
        self.woken = 0  # rounds started early by an event

    def backoff(self) -> float:
        """After n failures in a row: interval × 2ⁿ, capped."""
        return min(self.worker.interval * 2 ** min(self.failures, 16), self.backoff_max)

    async def run(self) -> None:
        delay = self.first_delay
        while True:
            try:
                async with self._subscription() as subscription:
                    while True:
                        await self._wait(subscription, delay)
                        delay = await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the event bus failed (Redis away): retry, never die
                self.failures += 1
                delay = self.backoff()
                log.exception("%s worker: event subscription failed; retrying in %.0fs", self.worker.name, delay)
                await asyncio.sleep(delay)
                delay = 0.0

    async def run_pass(self) -> float:
        """One round: take the lock, run the pass; returns the pause before the next round."""
        worker = self.worker
        try:
            async with self.locks.hold(worker.lock, worker.lock_ttl) as taken:
                if not taken:
                    self.skipped += 1
                    log.debug("%s worker: lock %r held elsewhere; skipping this round", worker.name, worker.lock)
                    return worker.interval
                self.passes += 1
                more = await worker.run_once()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed pass must not end the loop
            self.failures += 1
            delay = self.backoff()
            log.exception("%s worker: pass failed (%d in a row); next try in %.0fs", worker.name, self.failures,
                          delay)
            return delay
        if self.failures:
            log.info("%s worker: pass succeeded after %d failure(s)", worker.name, self.failures)
        self.failures = 0
        return 0.0 if more else worker.interval

    def _subscription(self) -> contextlib.AbstractAsyncContextManager[Subscription | None]:
        if self.events is None or self.worker.wake_channel is None:
            return contextlib.nullcontext(None)
        return self.events.subscribe(self.worker.wake_channel)

    async def _wait(self, subscription: Subscription | None, delay: float) -> None:
        """Sleep `delay` seconds, or less when an event arrives (not while backing off after failures)."""
        if delay <= 0:
            await asyncio.sleep(0)  # let the rest of the process run between back-to-back passes
            return
        if subscription is None:
            await asyncio.sleep(delay)
            return
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0:
            event = await subscription.get(remaining)
            if event is None:
                return
            if self.failures:
                continue  # events are hints; a failing pass waits out its backoff
            self.woken += 1
            settle_until = time.monotonic() + self.settle
            while (remaining := settle_until - time.monotonic()) > 0:
                if await subscription.get(remaining) is None:
                    break
            return


def human_bytes(size: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def describe_report(report: GcReport) -> str:
    """One line for the log."""
    parts = [f"{report.tags} tags", f"{report.manifests} manifests",
             f"{report.blobs} blobs ({human_bytes(report.bytes)})", f"{report.uploads} uploads",
             f"{report.repositories} repositories", f"{report.namespaces} namespaces"]
    if report.multipart_aborted:
        parts.append(f"{report.multipart_aborted} multipart uploads aborted")
    if report.failed:
        parts.append(f"{report.failed} items failed (see the log; retried next pass)")
    return ", ".join(parts)


async def gc_pass(ctx: AppContext, *, full: bool = False) -> GcReport:
    """One garbage collection pass, counted in the metrics (`full`: see collect_garbage)."""
    from quaymaster import metrics
    from quaymaster.content.gc import collect_garbage

    try:
        report = await collect_garbage(ctx, full=full)
    except asyncio.CancelledError:
        raise
    except Exception:
        metrics.GC_RUNS.inc()
        metrics.GC_FAILURES.inc()
        raise
    metrics.GC_RUNS.inc()
    metrics.record_gc(report)
    try:
        if removed := await ctx.keys.delete_expired():
            log.info("gc: removed %d expired instance key(s)", removed)
    except Exception:  # noqa: BLE001 - housekeeping; the collection itself succeeded
        log.warning("gc: could not remove expired instance keys", exc_info=True)
    return report


async def replication_pass(ctx: AppContext, limit: int = REPLICATION_BATCH) -> int:
    """Copy up to `limit` blobs to the default locations missing them, counted in the metrics."""
    from quaymaster import metrics
    from quaymaster.content.replication import replicate_pending

    try:
        copies = await replicate_pending(ctx, limit=limit)
    except asyncio.CancelledError:
        raise
    except Exception:
        metrics.REPLICATION_FAILURES.inc()
        raise
    if copies:
        metrics.REPLICATION_COPIES.inc(copies)
    return copies


def disabled_reason(settings: Settings, name: str) -> str | None:
    """Why worker `name` has nothing to do under these settings, or None when it should run."""
    if name == "gc":
        return None if settings.FEATURE_GARBAGE_COLLECTION else "FEATURE_GARBAGE_COLLECTION is off"
    if name == "replication":
        if not settings.FEATURE_STORAGE_REPLICATION:
            return "FEATURE_STORAGE_REPLICATION is off"
        if not settings.DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS:
            return "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS is empty"
        return None
    if name == "securityworker":
        if not settings.FEATURE_SECURITY_SCANNER:
            return "FEATURE_SECURITY_SCANNER is off"
        if not settings.SECURITY_SCANNER_V4_ENDPOINT:
            return "SECURITY_SCANNER_V4_ENDPOINT is not set"
        return None if settings.SECURITY_SCANNER_V4_INDEXING else "SECURITY_SCANNER_V4_INDEXING is off"
    if name == "repomirror":
        return None if settings.FEATURE_REPO_MIRROR else "FEATURE_REPO_MIRROR is off"
    raise ValueError(f"unknown worker {name!r} (known: {', '.join(NAMES)})")


def build_worker(ctx: AppContext, name: str) -> Worker:
    if name == "gc":
        last_full: float | None = None

        async def run_gc() -> bool:
            # The first pass, then one an hour, is full: it also sweeps what a crashed pass left.
            nonlocal last_full
            started = time.monotonic()
            full = last_full is None or started - last_full >= FULL_GC_INTERVAL_S
            report = await gc_pass(ctx, full=full)
            if full:
                last_full = started
            if report.total():
                log.info("gc: reclaimed %s in %.1fs", describe_report(report), time.monotonic() - started)
            return False

        # A deleted repository wakes it early (events are per process without Redis).
        return Worker("gc", run_gc, ctx.settings.GARBAGE_COLLECTION_FREQUENCY, GC_LOCK, GC_LOCK_TTL_S,
                      wake_channel="repositories")
    if name == "replication":
        async def run_replication() -> bool:
            copies = await replication_pass(ctx)
            if copies:
                log.info("replication: copied %d blob(s)", copies)
            return False  # a pass goes through every pending blob, REPLICATION_BATCH per query

        return Worker("replication", run_replication, REPLICATION_INTERVAL_S, REPLICATION_LOCK,
                      REPLICATION_LOCK_TTL_S, wake_channel="manifests")
    if name == "securityworker":
        from quaymaster.secscan.worker import build as build_securityworker

        return build_securityworker(ctx)  # indexes new pushes: woken on "manifests"
    if name == "repomirror":
        from quaymaster.mirroring.worker import build as build_repomirror

        return build_repomirror(ctx)  # syncs due mirrors every REPO_MIRROR_INTERVAL
    raise ValueError(f"unknown worker {name!r} (known: {', '.join(NAMES)})")


async def run_worker(ctx: AppContext, name: str) -> None:
    """Run worker `name` until cancelled; when its settings give it nothing to do, idle instead
    (as Quay's workers do, so that a process supervisor does not restart it over and over)."""
    reason = disabled_reason(ctx.settings, name)
    if reason:
        log.info("%s worker: %s; idle", name, reason)
        await asyncio.Event().wait()
    log.info("%s worker: started", name)
    await WorkerLoop(build_worker(ctx, name), ctx.locks, ctx.events).run()


def start_workers(ctx: AppContext) -> list[asyncio.Task]:
    """Start every worker these settings enable as tasks of the running loop (the registry's way)."""
    tasks = []
    for name in NAMES:
        reason = disabled_reason(ctx.settings, name)
        if reason:
            log.info("%s worker: not started (%s)", name, reason)
            continue
        log.info("%s worker: running in this process (pid %d)", name, os.getpid())
        loop = WorkerLoop(build_worker(ctx, name), ctx.locks, ctx.events)
        tasks.append(asyncio.create_task(loop.run(), name=f"quaymaster-worker-{name}"))
    return tasks


@contextlib.asynccontextmanager
async def worker_context(settings: Settings) -> AsyncIterator[AppContext]:
    """The services a worker or an admin command needs, migrated and connected, closed afterwards."""
    from quaymaster.app import start_context

    ctx = await start_context(settings, register_key=False)
    try:
        yield ctx
    finally:
        with contextlib.suppress(Exception):
            await ctx.audit.flush()
        for closer in (ctx.events.close, ctx.locks.close):
            with contextlib.suppress(Exception):
                await closer()
        await ctx.db.dispose()

