"""The background worker loop: it repeats a pass, backs off after failures, wakes early on an
event, skips a round when another process holds the lock, and stops cleanly when cancelled.
Also: each gc pass feeds the Prometheus counters, and /metrics sums them across processes."""

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.routing import Route

from quaymaster import workers
from quaymaster.events import InProcessBus, InProcessLocks
from quaymaster.metrics import metrics_endpoint
from quaymaster.settings.model import settings_from_dict
from quaymaster.workers import Worker, WorkerLoop

INTERVAL = 0.05


class FakePass:
    """Records when it ran; fails while `failing`; returns `more`; may block until released."""

    def __init__(self, *, failing: bool = False, more: bool = False):
        self.times: list[float] = []
        self.failing = failing
        self.more = more
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def __call__(self) -> bool:
        self.times.append(time.monotonic())
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise RuntimeError("storage is on fire")
        return self.more


def make_loop(fake, *, interval=INTERVAL, locks=None, events=None, channel=None, **kwargs):
    worker = Worker("test", fake, interval, "test-lock", 30.0, wake_channel=channel)
    kwargs.setdefault("first_delay", 0.0)
    kwargs.setdefault("settle", 0.02)
    return WorkerLoop(worker, locks or InProcessLocks(), events, **kwargs)


@contextlib.asynccontextmanager
async def running(loop: WorkerLoop):
    task = asyncio.create_task(loop.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_runs_a_pass_every_interval():
    fake = FakePass()
    loop = make_loop(fake)
    async with running(loop):
        await eventually(lambda: len(fake.times) >= 4)
    gaps = [b - a for a, b in zip(fake.times, fake.times[1:])]
    assert all(gap >= INTERVAL * 0.9 for gap in gaps), gaps
    assert loop.failures == 0 and loop.passes >= 4


async def test_more_work_means_no_pause():
    fake = FakePass(more=True)
    loop = make_loop(fake, interval=60)
    async with running(loop):
        await eventually(lambda: len(fake.times) >= 20, timeout=2)


async def test_failures_back_off_and_the_loop_goes_on(caplog):
    fake = FakePass(failing=True)
    loop = make_loop(fake, backoff_max=1.0)
    async with running(loop):
        await eventually(lambda: len(fake.times) >= 4)
        gaps = [b - a for a, b in zip(fake.times, fake.times[1:])]
        # interval × 2, × 4, × 8 after one, two, three failures in a row
        for gap, expected in zip(gaps, (2 * INTERVAL, 4 * INTERVAL, 8 * INTERVAL)):
            assert gap >= expected * 0.9, gaps
        assert loop.failures >= 3
        assert "pass failed" in caplog.text and "storage is on fire" in caplog.text
        # Once the pass works again the loop is back on its interval.
        fake.failing = False
        await eventually(lambda: loop.failures == 0)
        count = len(fake.times)
        await eventually(lambda: len(fake.times) >= count + 3)
    assert fake.times[-1] - fake.times[-2] < 6 * INTERVAL  # not the 16 × INTERVAL a fourth failure costs


async def test_backoff_is_capped():
    loop = make_loop(FakePass(), interval=10, backoff_max=60)
    loop.failures = 30
    assert loop.backoff() == 60
    loop.failures = 1
    assert loop.backoff() == 20
    # A cap below the interval never makes a failing worker run more often than a healthy one.
    assert make_loop(FakePass(), interval=100, backoff_max=60).backoff_max == 100


async def test_an_event_wakes_it_early_and_a_burst_is_one_pass():
    bus = InProcessBus()
    fake = FakePass()
    loop = make_loop(fake, interval=60, events=bus, channel="repositories", settle=0.1)
    async with running(loop):
        await eventually(lambda: len(fake.times) == 1)  # the first pass, then a long wait
        await asyncio.sleep(0.05)  # subscribed by now
        for i in range(20):
            await bus.publish("repositories", {"id": i})
        await eventually(lambda: len(fake.times) == 2, timeout=2)
        await asyncio.sleep(0.3)
        assert len(fake.times) == 2  # the burst was gathered into one pass
        assert loop.woken == 1
        await bus.publish("other-channel", {})
        await asyncio.sleep(0.2)
        assert len(fake.times) == 2


async def test_events_do_not_cut_a_backoff_short():
    bus = InProcessBus()
    fake = FakePass(failing=True)
    loop = make_loop(fake, interval=0.5, events=bus, channel="manifests")
    async with running(loop):
        await eventually(lambda: len(fake.times) == 1)
        await asyncio.sleep(0.05)
        await bus.publish("manifests", {})
        await asyncio.sleep(0.3)
        assert len(fake.times) == 1  # still backing off (1s after the first failure)
        assert loop.woken == 0


async def test_lock_held_elsewhere_skips_the_round():
    locks = InProcessLocks()
    fake = FakePass()
    loop = make_loop(fake, locks=locks)
    async with locks.hold("test-lock", 30) as taken:
        assert taken
        async with running(loop):
            await eventually(lambda: loop.skipped >= 3)
            assert fake.times == [] and loop.passes == 0
    async with running(loop):
        await eventually(lambda: len(fake.times) >= 1)
    assert loop.failures == 0


async def test_cancelling_mid_pass_stops_cleanly_and_releases_the_lock():
    locks = InProcessLocks()
    fake = FakePass()
    fake.gate = asyncio.Event()  # the pass blocks until released: cancel it in the middle
    loop = make_loop(fake, locks=locks)
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(fake.entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    async with locks.hold("test-lock", 30) as taken:
        assert taken


class FlakyBus(InProcessBus):
    """A bus whose first subscriptions fail, as a Redis that is still starting would."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures

    def subscribe(self, channel):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis is not up yet")
        return super().subscribe(channel)


async def test_a_failing_event_bus_is_retried(caplog):
    bus = FlakyBus(failures=2)
    fake = FakePass()
    loop = make_loop(fake, interval=0.02, events=bus, channel="manifests")
    async with running(loop):
        await eventually(lambda: len(fake.times) >= 2, timeout=5)
    assert bus.failures == 0
    assert "event subscription failed" in caplog.text


def _settings(**overrides):
    return settings_from_dict({"SERVER_HOSTNAME": "registry.test", "SECRET_KEY": "s", "DATABASE_SECRET_KEY": "d",
                               **overrides})


def test_which_workers_the_settings_enable():
    assert workers.disabled_reason(_settings(), "gc") is None
    assert "FEATURE_GARBAGE_COLLECTION" in workers.disabled_reason(_settings(FEATURE_GARBAGE_COLLECTION=False), "gc")
    assert "FEATURE_STORAGE_REPLICATION" in workers.disabled_reason(_settings(), "replication")
    with pytest.raises(ValueError):
        workers.disabled_reason(_settings(), "nope")


async def test_start_workers_starts_only_enabled_ones():
    ctx = SimpleNamespace(settings=_settings(GARBAGE_COLLECTION_FREQUENCY=3600), locks=InProcessLocks(),
                          events=InProcessBus())
    tasks = workers.start_workers(ctx)
    try:
        assert [t.get_name() for t in tasks] == ["quaymaster-worker-gc"]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    ctx.settings = _settings(FEATURE_GARBAGE_COLLECTION=False)
    assert workers.start_workers(ctx) == []


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_each_gc_pass_feeds_the_counters(monkeypatch):
    from quaymaster.content import gc

    outcomes = [None, gc.GcReport(tags=3, manifests=2, blobs=4, bytes=5000, uploads=1, repositories=1),
                gc.GcReport()]
    calls = []

    async def fake_collect(ctx, *, full=False):
        calls.append(full)
        outcome = outcomes.pop(0)
        if outcome is None:
            raise RuntimeError("database went away")
        return outcome

    monkeypatch.setattr(gc, "collect_garbage", fake_collect)
    names = ["quaymaster_gc_runs_total", "quaymaster_gc_failures_total", "quaymaster_gc_tags_reclaimed_total",
             "quaymaster_gc_manifests_reclaimed_total", "quaymaster_gc_blobs_reclaimed_total",
             "quaymaster_gc_bytes_reclaimed_total", "quaymaster_gc_uploads_reclaimed_total",
             "quaymaster_gc_repositories_reclaimed_total"]
    before = {name: _sample(name) for name in names}
    ctx = SimpleNamespace(settings=_settings(), locks=InProcessLocks(), events=None)
    run_gc = workers.build_worker(ctx, "gc").run_once
    with pytest.raises(RuntimeError):
        await run_gc()
    assert await run_gc() is False
    assert await run_gc() is False
    delta = {name: _sample(name) - before[name] for name in names}
    assert delta == {"quaymaster_gc_runs_total": 3, "quaymaster_gc_failures_total": 1,
                     "quaymaster_gc_tags_reclaimed_total": 3, "quaymaster_gc_manifests_reclaimed_total": 2,
                     "quaymaster_gc_blobs_reclaimed_total": 4, "quaymaster_gc_bytes_reclaimed_total": 5000,
                     "quaymaster_gc_uploads_reclaimed_total": 1, "quaymaster_gc_repositories_reclaimed_total": 1}
    # The first pass is full, and so is the retry of a failed full pass; then one an hour.
    assert calls == [True, True, False]


async def test_replication_pass_counts_copies(monkeypatch):
    from quaymaster.content import replication

    async def fake_replicate(ctx, *, limit=100):
        return limit

    monkeypatch.setattr(replication, "replicate_pending", fake_replicate)
    before = _sample("quaymaster_replication_copies_total")
    ctx = SimpleNamespace(settings=_settings(), locks=InProcessLocks(), events=None)
    assert await workers.build_worker(ctx, "replication").run_once() is False  # the pass saw everything
    assert _sample("quaymaster_replication_copies_total") - before == workers.REPLICATION_BATCH


def test_human_bytes():
    assert workers.human_bytes(0) == "0 B"
    assert workers.human_bytes(1023) == "1023 B"
    assert workers.human_bytes(1536) == "1.5 KiB"
    assert workers.human_bytes(5 * 1024**3) == "5.0 GiB"


async def test_metrics_endpoint_speaks_prometheus_text():
    app = Starlette(routes=[Route("/metrics", metrics_endpoint)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "# TYPE quaymaster_gc_runs_total counter" in response.text
        assert "quaymaster_replication_copies_total" in response.text
        openmetrics = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")


COUNT_IN_A_PROCESS = textwrap.dedent("""
    import sys
    from quaymaster import metrics
    metrics.GC_RUNS.inc(int(sys.argv[1]))
""")
RENDER = textwrap.dedent("""
    from quaymaster import metrics
    body, _ = metrics.render()
    print(body.decode())
""")


def test_multiprocess_mode_sums_every_process(tmp_path):
    """What the registry's supervisor sets up: each process counts into files, a scrape sums them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for count in (2, 5):
        subprocess.run([sys.executable, "-c", COUNT_IN_A_PROCESS, str(count)], env=env, check=True, timeout=60)
    out = subprocess.run([sys.executable, "-c", RENDER], env=env, check=True, timeout=60, capture_output=True,
                         text=True).stdout
    assert "quaymaster_gc_runs_total 7.0" in out
    assert "quaymaster_gc_bytes_reclaimed_total 0.0" in out
