"""Publish/subscribe of small JSON events (a manifest was pushed, a repository was deleted).

Events wake workers early; they are hints, not a queue: a worker that misses one still finds
the work on its next scan."""

import abc
import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

log = logging.getLogger(__name__)


class Subscription(abc.ABC):
    @abc.abstractmethod
    async def get(self, timeout: float) -> dict | None:
        """The next event, or None when `timeout` seconds pass without one."""


class EventBus(abc.ABC):
    @abc.abstractmethod
    async def publish(self, channel: str, event: dict) -> None:
        """Send `event` (JSON-serializable) to the current subscribers of `channel`.

        Implementations drop the event rather than raise when their backend is unreachable."""

    @abc.abstractmethod
    def subscribe(self, channel: str) -> contextlib.AbstractAsyncContextManager[Subscription]: ...

    async def close(self) -> None:
        return None


class _QueueSubscription(Subscription):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict] = asyncio.Queue(maxsize=1000)

    async def get(self, timeout: float) -> dict | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


class InProcessBus(EventBus):
    """The embedded default: events reach subscribers of this process only."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[_QueueSubscription]] = {}

    async def publish(self, channel: str, event: dict) -> None:
        subscribers = list(self._subscribers.get(channel, ()))
        if not subscribers:
            return
        # The same JSON round trip as over Redis: subscribers get their own copy, and an event
        # that would not cross Redis shows up in embedded mode too.
        try:
            payload = json.dumps(event, default=str)
        except (TypeError, ValueError):
            log.warning("events: dropped an event on %r that is not JSON", channel)
            return
        for sub in subscribers:
            with contextlib.suppress(asyncio.QueueFull):  # a slow subscriber loses hints, not data
                sub.queue.put_nowait(json.loads(payload))

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        sub = _QueueSubscription()
        self._subscribers.setdefault(channel, set()).add(sub)
        try:
            yield sub
        finally:
            self._subscribers[channel].discard(sub)


async def publish_quietly(bus: EventBus, channel: str, event: dict) -> None:
    """Publish from a request that has already committed: whatever happens, the request succeeds."""
    try:
        await bus.publish(channel, event)
    except Exception:
        log.warning("events: dropped an event on %r", channel, exc_info=True)
