"""Events and locks over Redis: both on USER_EVENTS_REDIS (Quay's GlobalLock server), else on BUILDLOGS_REDIS.

Connections are made on first use, so the registry starts whatever Redis is doing. Every
operation fails softly: a publish that cannot reach Redis is dropped (events are hints), a
lock that cannot be asked for is not taken, and a subscription that lost Redis waits out its
timeout and tries again. The first failure of an outage is logged once, as a warning; after a
failure Redis is left alone for `retry_after` seconds so an unreachable server costs requests
nothing. Passwords are never logged: a server is named by host, port and database only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, RedisError

from quaymaster.events.bus import EventBus, Subscription
from quaymaster.events.locks import Locks
from quaymaster.settings.model import RedisConfig

log = logging.getLogger(__name__)

EVENT_PREFIX = "quaymaster:events:"
LOCK_PREFIX = "quaymaster:lock:"
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 2.0
RETRY_AFTER = 5.0
RETRY_AFTER_MAX = 60.0

# Delete the key only if it still holds our token: a holder whose TTL ran out must not free
# the lock someone else has taken since.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""

_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


def describe(config: RedisConfig) -> str:
    """Where a Redis server is, for logs: never the password."""
    scheme = "rediss" if config.ssl else "redis"
    return f"{scheme}://{config.host}:{config.port}/{config.db}"


def redis_client(config: RedisConfig) -> aioredis.Redis:
    """A client that connects on first use, gives up quickly and retries a broken connection once."""
    return aioredis.Redis(host=config.host, port=config.port, password=config.password, ssl=config.ssl,
                          db=config.db, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=COMMAND_TIMEOUT,
                          retry=Retry(NoBackoff(), 1), health_check_interval=30)


def explain(exc: BaseException, where: str) -> str:
    """A one-line reason a Redis operation failed, worded for an operator."""
    detail = str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return f"Redis at {where} refused the credentials; check the password in the config ({detail})"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"Redis at {where} did not answer in time"
    return f"Redis at {where} is unavailable ({exc.__class__.__name__}: {detail})"


class _Link:
    """One Redis server as this process sees it: the client, and whether it failed lately."""

    def __init__(self, config: RedisConfig, purpose: str, retry_after: float):
        self.client = redis_client(config)
        self.where = describe(config)
        self.purpose = purpose
        self.retry_after = retry_after
        self.down = False
        self.last_error: str | None = None
        self._quiet_until = 0.0
        self._pause = retry_after

    def resting(self) -> bool:
        """True while a recent failure says not to bother Redis yet."""
        return self.down and time.monotonic() < self._quiet_until

    def failed(self, exc: BaseException) -> None:
        self.last_error = explain(exc, self.where)
        if self.down:
            self._pause = min(self._pause * 2, max(RETRY_AFTER_MAX, self.retry_after))
        else:
            self.down = True
            self._pause = self.retry_after
            log.warning("%s: %s; %s until it answers", self.purpose, self.last_error,
                        "events are dropped" if self.purpose == "events" else "locks are not taken")
        self._quiet_until = time.monotonic() + self._pause

    def answered(self) -> None:
        if self.down:
            self.down = False
            self.last_error = None
            log.info("%s: Redis at %s answers again", self.purpose, self.where)

    def rest_left(self) -> float:
        return max(0.0, self._quiet_until - time.monotonic())

    async def close(self) -> None:
        with contextlib.suppress(*_ERRORS):
            await self.client.aclose()


class RedisBus(EventBus):
    """Pub/sub across every process and node that shares the Redis server; payloads are JSON."""

    def __init__(self, config: RedisConfig, *, retry_after: float = RETRY_AFTER):
        self._link = _Link(config, "events", retry_after)

    def __repr__(self) -> str:
        return f"RedisBus({self._link.where})"

    @property
    def last_error(self) -> str | None:
        """Why the last operation failed, while Redis has not answered since (None when healthy)."""
        return self._link.last_error

    async def publish(self, channel: str, event: dict) -> None:
        """Send `event` to the subscribers of `channel`; never raises (the event is dropped instead)."""
        link = self._link
        if link.resting():
            return
        try:
            payload = json.dumps(event, separators=(",", ":"), default=str)
        except (TypeError, ValueError):
            log.warning("events: dropped an event on %r that is not JSON", channel)
            return
        try:
            await asyncio.wait_for(link.client.publish(EVENT_PREFIX + channel, payload), COMMAND_TIMEOUT)
        except _ERRORS as exc:
            link.failed(exc)
            return
        link.answered()

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        """Events published on `channel` once this is entered (if Redis answers; later ones otherwise)."""
        sub = _RedisSubscription(self._link, EVENT_PREFIX + channel)
        await sub.connect()
        try:
            yield sub
        finally:
            await sub.disconnect()

    async def close(self) -> None:
        await self._link.close()


class _RedisSubscription(Subscription):
    def __init__(self, link: _Link, name: str):
        self._link = link
        self._name = name
        self._pubsub: PubSub | None = None

    async def connect(self) -> bool:
        """Subscribe and wait for Redis to confirm, so nothing published afterwards is missed."""
        if self._pubsub is not None:
            return True
        if self._link.resting():
            return False
        pubsub = self._link.client.pubsub()
        try:
            await pubsub.subscribe(self._name)
            deadline = time.monotonic() + COMMAND_TIMEOUT
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError()
                message = await pubsub.get_message(timeout=remaining)
                if message is not None and message["type"] == "subscribe":
                    break
        except _ERRORS as exc:
            with contextlib.suppress(*_ERRORS):
                await pubsub.aclose()
            self._link.failed(exc)
            return False
        self._pubsub = pubsub
        self._link.answered()
        return True

    async def disconnect(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*_ERRORS):
                await pubsub.aclose()

    async def get(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if not await self.connect():
                # Redis is away: wait as a quiet bus would, trying again now and then.
                await asyncio.sleep(min(remaining, max(self._link.rest_left(), 0.05)))
                continue
            assert self._pubsub is not None
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                         timeout=max(0.0, deadline - time.monotonic()))
            except (*_ERRORS, RuntimeError) as exc:  # RuntimeError: redis-py lost the pubsub connection
                await self.disconnect()
                self._link.failed(exc)
                continue
            if message is None or message["type"] != "message":
                continue
            try:
                event = json.loads(message["data"])
            except ValueError:
                log.debug("events: ignored a message on %s that is not JSON", self._name)
                continue
            if isinstance(event, dict):
                return event
        return None


class RedisLocks(Locks):
    """SET NX PX with a random token: the TTL frees the lock of a holder that died, and a holder
    releases only its own lock (compare-and-delete in one Lua script)."""

    def __init__(self, config: RedisConfig, *, retry_after: float = RETRY_AFTER):
        self._link = _Link(config, "locks", retry_after)
        self._release = self._link.client.register_script(_RELEASE)

    def __repr__(self) -> str:
        return f"RedisLocks({self._link.where})"

    @property
    def last_error(self) -> str | None:
        return self._link.last_error

    @contextlib.asynccontextmanager
    async def hold(self, name: str, ttl_s: float) -> AsyncIterator[bool]:
        key = LOCK_PREFIX + name
        token = secrets.token_hex(16)
        taken = False
        if not self._link.resting():
            try:
                taken = bool(await asyncio.wait_for(
                    self._link.client.set(key, token, nx=True, px=max(1, int(ttl_s * 1000))), COMMAND_TIMEOUT))
            except _ERRORS as exc:
                self._link.failed(exc)
            else:
                self._link.answered()
        try:
            yield taken
        finally:
            if taken:
                try:
                    await asyncio.wait_for(self._release(keys=[key], args=[token]), COMMAND_TIMEOUT)
                except _ERRORS as exc:  # the TTL frees it
                    log.warning("locks: could not release %r: %s", name, explain(exc, self._link.where))

    async def close(self) -> None:
        await self._link.close()
