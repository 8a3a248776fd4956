"""Events and locks over a real redis-server that requires a password, as between two nodes.

Each RedisBus / RedisLocks below has its own client and connections, as separate registry
nodes would; the last tests build a registry from settings with USER_EVENTS_REDIS and push
through the in-process app."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import uuid

import pytest
import redis.asyncio as aioredis
from support.redisserver import RedisServer, redis_server
from support.servers import free_port

from quaymaster.events.redis import LOCK_PREFIX, RedisBus, RedisLocks
from quaymaster.settings.model import RedisConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis(tmp_path_factory) -> RedisServer:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


def _config(redis: RedisServer, password: str | None = None) -> RedisConfig:
    return RedisConfig(**redis.config(password))


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def two_nodes(redis):
    """Two buses and two lock sets, each on its own client: two registry nodes."""
    made = [RedisBus(_config(redis)), RedisBus(_config(redis)), RedisLocks(_config(redis)),
            RedisLocks(_config(redis))]
    yield made
    for item in made:
        await item.close()


@pytest.fixture
async def raw(redis):
    client = aioredis.Redis(host=redis.host, port=redis.port, password=redis.password)
    yield client
    await client.aclose()


# --- bus -----------------------------------------------------------------------------------------

async def test_two_nodes_see_each_others_events(two_nodes):
    a, b, _, _ = two_nodes
    channel = _name("manifests")
    async with a.subscribe(channel) as on_a, b.subscribe(channel) as on_b:
        await a.publish(channel, {"from": "a", "digest": "sha256:" + "1" * 64})
        await b.publish(channel, {"from": "b", "tag": None})
        for sub in (on_a, on_b):
            assert await sub.get(5) == {"from": "a", "digest": "sha256:" + "1" * 64}
            assert await sub.get(5) == {"from": "b", "tag": None}
        assert await on_a.get(0.2) is None


async def test_channels_are_separate_and_prefixed(two_nodes, raw):
    a, b, _, _ = two_nodes
    channel = _name("repositories")
    async with b.subscribe(channel) as sub, b.subscribe(_name("other")) as other:
        raw_sub = raw.pubsub()
        await raw_sub.subscribe(f"quaymaster:events:{channel}")
        await raw_sub.get_message(timeout=2)  # the subscribe confirmation
        await a.publish(channel, {"repository_id": 7, "event": "deleted"})
        assert await sub.get(5) == {"repository_id": 7, "event": "deleted"}
        assert await other.get(0.2) is None
        message = await raw_sub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message["data"] == b'{"repository_id":7,"event":"deleted"}'
        await raw_sub.aclose()


async def test_get_times_out_and_ignores_foreign_messages(two_nodes, raw):
    _, b, _, _ = two_nodes
    channel = _name("manifests")
    async with b.subscribe(channel) as sub:
        await raw.publish(f"quaymaster:events:{channel}", b"not json")
        await raw.publish(f"quaymaster:events:{channel}", b"[1, 2]")
        started = time.monotonic()
        assert await sub.get(0.5) is None
        assert 0.4 <= time.monotonic() - started < 3


async def test_a_waiting_subscriber_wakes_at_once(two_nodes):
    a, b, _, _ = two_nodes
    channel = _name("manifests")
    async with b.subscribe(channel) as sub:
        started = time.monotonic()
        waiter = asyncio.create_task(sub.get(20))  # longer than the socket timeout
        await asyncio.sleep(0.1)
        await a.publish(channel, {"n": 1})
        assert await waiter == {"n": 1}
        assert time.monotonic() - started < 5


# --- locks ---------------------------------------------------------------------------------------

async def test_second_holder_is_refused_until_the_first_releases(two_nodes, raw):
    _, _, a, b = two_nodes
    name = _name("gc")
    async with a.hold(name, 60) as first:
        assert first is True
        ttl = await raw.pttl(LOCK_PREFIX + name)
        assert 55_000 < ttl <= 60_000
        async with b.hold(name, 60) as second:
            assert second is False
        async with a.hold(name, 60) as same_node:
            assert same_node is False
        async with b.hold(_name("replication"), 60) as other:
            assert other is True
    assert await raw.exists(LOCK_PREFIX + name) == 0
    async with b.hold(name, 60) as after:
        assert after is True


_HOLDER = """
import asyncio, json, os
from quaymaster.events.redis import RedisLocks
from quaymaster.settings.model import RedisConfig

async def main():
    locks = RedisLocks(RedisConfig(**json.loads(os.environ["LOCK_REDIS"])))
    async with locks.hold(os.environ["LOCK_NAME"], 2.0) as taken:
        print("taken" if taken else "busy", flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_lock_of_a_crashed_holder_frees_itself_after_its_ttl(redis, two_nodes):
    """Another process takes the lock and is killed (no release runs): the TTL frees it."""
    _, _, _, b = two_nodes
    name = _name("gc")
    env = {**os.environ, "LOCK_REDIS": json.dumps(redis.config()), "LOCK_NAME": name}
    holder = await asyncio.create_subprocess_exec(sys.executable, "-c", _HOLDER, env=env,
                                                  stdout=asyncio.subprocess.PIPE)
    try:
        assert (await asyncio.wait_for(holder.stdout.readline(), 30)).strip() == b"taken"
    finally:
        holder.kill()
        await holder.wait()
    killed_at = time.monotonic()
    async with b.hold(name, 60) as while_its_ttl_runs:
        assert while_its_ttl_runs is False
    await asyncio.sleep(max(0.0, 2.3 - (time.monotonic() - killed_at)))
    async with b.hold(name, 60) as after_ttl:
        assert after_ttl is True


async def test_release_never_deletes_another_holders_lock(two_nodes, raw):
    _, _, a, b = two_nodes
    name = _name("gc")
    first = a.hold(name, 0.3)
    assert await first.__aenter__() is True
    await asyncio.sleep(0.6)
    async with b.hold(name, 60) as second:
        assert second is True
        token = await raw.get(LOCK_PREFIX + name)
        await first.__aexit__(None, None, None)  # a finishes late and releases
        assert await raw.get(LOCK_PREFIX + name) == token  # b's lock is still there
        async with a.hold(name, 60) as third:
            assert third is False


# --- failures ------------------------------------------------------------------------------------

async def test_wrong_password_is_reported_clearly_and_fails_softly(redis, caplog):
    caplog.set_level(logging.INFO, logger="quaymaster.events")
    bus = RedisBus(_config(redis, "wrong-password-123"))
    locks = RedisLocks(_config(redis, "wrong-password-123"))
    try:
        await bus.publish("manifests", {"x": 1})  # dropped, not raised
        await bus.publish("manifests", {"x": 2})
        async with bus.subscribe("manifests") as sub:
            assert await sub.get(0.2) is None
        async with locks.hold(_name("gc"), 60) as taken:
            assert taken is False
    finally:
        await bus.close()
        await locks.close()
    for item in (bus, locks):
        assert "refused the credentials" in item.last_error
        assert f"{redis.host}:{redis.port}" in item.last_error
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if w.startswith("events:")]) == 1  # once per outage
    assert any("locks:" in w and "refused the credentials" in w for w in warnings)
    text = caplog.text
    assert "wrong-password-123" not in text and redis.password not in text


async def test_redis_down_at_start_then_up_then_restarted(tmp_path, caplog):
    """Start order does not matter: nothing fails while Redis is away, and it is used once it answers."""
    port = free_port()
    password = "later-password"
    config = RedisConfig(host="127.0.0.1", port=port, password=password)
    bus, other, locks = (RedisBus(config, retry_after=0.1), RedisBus(config, retry_after=0.1),
                         RedisLocks(config, retry_after=0.1))
    try:
        started = time.monotonic()
        await bus.publish("manifests", {"lost": True})
        async with locks.hold("gc", 60) as taken:
            assert taken is False
        async with other.subscribe("manifests") as sub:
            assert await sub.get(0.3) is None
            assert time.monotonic() - started < 5
            assert "unavailable" in bus.last_error
            with redis_server(tmp_path / "late-redis", port=port, password=password):
                deadline = time.monotonic() + 10
                received = None
                while received is None and time.monotonic() < deadline:
                    await bus.publish("manifests", {"found": True})
                    received = await sub.get(0.3)  # the subscription reconnects by itself
                assert received == {"found": True}
                assert bus.last_error is None
                async with locks.hold("gc", 60) as taken:
                    assert taken is True
            # Redis restarts under a live subscription: it resubscribes and sees new events.
            await bus.publish("manifests", {"lost": True})
            assert await sub.get(0.3) is None
            with redis_server(tmp_path / "restarted-redis", port=port, password=password):
                deadline = time.monotonic() + 10
                received = None
                while received is None and time.monotonic() < deadline:
                    await bus.publish("manifests", {"again": True})
                    received = await sub.get(0.3)
                assert received == {"again": True}
    finally:
        for item in (bus, other, locks):
            await item.close()
    assert password not in caplog.text


# --- a registry configured with USER_EVENTS_REDIS ------------------------------------------------

@pytest.fixture
def config(config, redis):
    """The app fixtures' config (SQLite and PostgreSQL), with Redis for events and locks."""
    return {**config, "USER_EVENTS_REDIS": redis.config()}


async def test_registry_push_and_delete_reach_a_subscriber_on_another_node(ctx, http, redis):
    from api.helpers import bearer
    from protocol.v2client import V2Client
    from web.conftest import browser_session

    assert isinstance(ctx.events, RedisBus) and isinstance(ctx.locks, RedisLocks)
    other_node = RedisBus(_config(redis))
    client = V2Client(http)
    try:
        async with other_node.subscribe("manifests") as manifests, \
                other_node.subscribe("repositories") as repositories:
            headers = await client.auth("alice/evented")
            digest, _ = await client.push_image("alice/evented", "v1", headers)
            event = await manifests.get(5)
            assert event is not None
            repository_id = event.pop("repository_id")
            assert isinstance(repository_id, int)
            assert event == {"namespace": "alice", "repository": "evented", "digest": digest, "tag": "v1"}

            by_digest, _ = await client.push_image("alice/evented", None, headers)
            assert await manifests.get(5) == {"namespace": "alice", "repository": "evented",
                                              "repository_id": repository_id, "digest": by_digest,
                                              "tag": None}

            r = await http.delete("/api/v1/repository/alice/evented", headers=await bearer(ctx, "alice"))
            assert r.status_code == 204, r.text
            assert await repositories.get(5) == {"repository_id": repository_id, "event": "deleted"}

            await client.push_image("alice/viaui", "v1", await client.auth("alice/viaui"))
            ui_repository_id = (await manifests.get(5))["repository_id"]
            csrf = await browser_session(http, "alice")
            r = await http.post("/repository/alice/viaui/delete", data={"_csrf_token": csrf, "confirm_name": "viaui"})
            assert r.status_code == 303, r.text
            assert await repositories.get(5) == {"repository_id": ui_repository_id, "event": "deleted"}
    finally:
        await other_node.close()
    elsewhere = RedisLocks(_config(redis))
    async with ctx.locks.hold("gc", 60) as taken:
        assert taken is True
        async with elsewhere.hold("gc", 60) as other_node_took_it:
            assert other_node_took_it is False
    await elsewhere.close()
    await ctx.events.close()
    await ctx.locks.close()


async def test_registry_push_succeeds_when_redis_refuses(ctx, http, redis, caplog):
    """A Redis that refuses the password costs the event, never the push."""
    await ctx.events.close()
    ctx.events = RedisBus(_config(redis, "not-the-password"))
    from protocol.v2client import V2Client

    client = V2Client(http)
    headers = await client.auth("alice/quiet")
    await client.push_image("alice/quiet", "v1", headers)
    assert "refused the credentials" in ctx.events.last_error
    await ctx.events.close()
    await ctx.locks.close()
