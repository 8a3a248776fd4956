"""Publish/subscribe of small JSON events (a manifest was pushed, a repository was deleted).

Events wake workers early; they are hints, not a queue: a worker that misses one still finds
the work on its next scan."""

import abc
import asyncio
import contextlib
from typing import AsyncIterator


class Subscription(abc.ABC):
    @abc.abstractmethod
    async def get(self, timeout: float) -> dict | None:
        """The next event, or None when `timeout` seconds pass without one."""


class EventBus(abc.ABC):
    @abc.abstractmethod
    async def publish(self, channel: str, event: dict) -> None: ...

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
        except asyncio.TimeoutError:
            return None


class InProcessBus(EventBus):
    """The embedded default: events reach subscribers of this process only."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[_QueueSubscription]] = {}

    async def publish(self, channel: str, event: dict) -> None:
        for sub in list(self._subscribers.get(channel, ())):
            with contextlib.suppress(asyncio.QueueFull):  # a slow subscriber loses hints, not data
                sub.queue.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        sub = _QueueSubscription()
        self._subscribers.setdefault(channel, set()).add(sub)
        try:
            yield sub
        finally:
            self._subscribers[channel].discard(sub)
