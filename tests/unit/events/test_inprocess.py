"""The embedded event bus and locks: fan-out, timeouts, exclusion; and file locks for SQLite."""

import asyncio
import sys
import time

import pytest

from quaymaster.events import (
    EventBus,
    FileLocks,
    InProcessBus,
    InProcessLocks,
    publish_quietly,
)


async def test_every_subscriber_of_a_channel_gets_each_event():
    bus = InProcessBus()
    async with bus.subscribe("manifests") as first, bus.subscribe("manifests") as second, \
            bus.subscribe("repositories") as other:
        await bus.publish("manifests", {"digest": "sha256:aa", "n": 1})
        await bus.publish("manifests", {"digest": "sha256:bb", "n": 2})
        for sub in (first, second):
            assert await sub.get(1) == {"digest": "sha256:aa", "n": 1}
            assert await sub.get(1) == {"digest": "sha256:bb", "n": 2}
        assert await other.get(0.05) is None


async def test_subscribers_get_their_own_copy():
    bus = InProcessBus()
    event = {"tags": ["a"]}
    async with bus.subscribe("c") as first, bus.subscribe("c") as second:
        await bus.publish("c", event)
        got = await first.get(1)
        got["tags"].append("changed")
        assert await second.get(1) == {"tags": ["a"]}
        assert event == {"tags": ["a"]}


async def test_get_returns_none_after_the_timeout():
    bus = InProcessBus()
    async with bus.subscribe("manifests") as sub:
        started = time.monotonic()
        assert await sub.get(0.2) is None
        assert 0.15 <= time.monotonic() - started < 2


async def test_get_wakes_as_soon_as_an_event_arrives():
    bus = InProcessBus()
    async with bus.subscribe("manifests") as sub:
        started = time.monotonic()
        waiter = asyncio.create_task(sub.get(10))
        await asyncio.sleep(0.05)
        await bus.publish("manifests", {"x": 1})
        assert await waiter == {"x": 1}
        assert time.monotonic() - started < 2


async def test_events_before_subscribing_or_after_leaving_are_not_seen():
    bus = InProcessBus()
    await bus.publish("manifests", {"early": True})
    async with bus.subscribe("manifests") as sub:
        assert await sub.get(0.05) is None
    await bus.publish("manifests", {"late": True})  # no subscriber left: nothing to do, no error
    assert await sub.get(0.05) is None


async def test_an_event_that_is_not_json_is_dropped_not_raised():
    bus = InProcessBus()
    loop = {}
    loop["self"] = loop
    async with bus.subscribe("c") as sub:
        await bus.publish("c", loop)
        assert await sub.get(0.05) is None


async def test_publish_quietly_never_raises():
    class Broken(EventBus):
        async def publish(self, channel, event):
            raise RuntimeError("backend exploded")

        def subscribe(self, channel):  # not used here: only publishing is under test
            raise RuntimeError("not subscribable")

    await publish_quietly(Broken(), "manifests", {"x": 1})


async def test_in_process_lock_excludes_until_released():
    locks = InProcessLocks()
    async with locks.hold("gc", 60) as first:
        assert first is True
        async with locks.hold("gc", 60) as second:
            assert second is False
        async with locks.hold("replication", 60) as other:
            assert other is True
    async with locks.hold("gc", 60) as again:
        assert again is True


async def test_in_process_lock_is_released_when_the_body_fails():
    locks = InProcessLocks()
    with pytest.raises(ValueError):
        async with locks.hold("gc", 60) as taken:
            assert taken
            raise ValueError("boom")
    async with locks.hold("gc", 60) as taken:
        assert taken


async def test_file_locks_exclude_each_other_and_release(tmp_path):
    a, b = FileLocks(tmp_path / "locks"), FileLocks(tmp_path / "locks")
    async with a.hold("gc", 60) as first:
        assert first is True
        async with b.hold("gc", 60) as second:
            assert second is False
        async with a.hold("gc", 60) as same_instance:
            assert same_instance is False
        async with b.hold("odd/name with spaces", 60) as other:
            assert other is True
    async with b.hold("gc", 60) as after:
        assert after is True


async def test_file_lock_of_a_killed_process_is_free(tmp_path):
    """Another process takes the lock and is killed while holding it: the kernel frees it."""
    directory = tmp_path / "locks"
    script = (
        "import asyncio, sys\n"
        "from quaymaster.events import FileLocks\n"
        "async def main():\n"
        f"    async with FileLocks({str(directory)!r}).hold('gc', 60) as taken:\n"
        "        print('taken' if taken else 'busy', flush=True)\n"
        "        await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    holder = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    try:
        assert (await asyncio.wait_for(holder.stdout.readline(), 30)).strip() == b"taken"
        async with FileLocks(directory).hold("gc", 60) as taken:
            assert taken is False
    finally:
        holder.kill()
        await holder.wait()
    async with FileLocks(directory).hold("gc", 60) as taken:
        assert taken is True


async def test_file_locks_in_an_unusable_directory_are_not_taken(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    async with FileLocks(blocker / "locks").hold("gc", 60) as taken:
        assert taken is False
