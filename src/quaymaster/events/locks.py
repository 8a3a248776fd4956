"""Named locks with a time to live, so one node (or process) at a time does a piece of background work.

Correctness never rests on them (transactions do that); they only keep workers from doing
the same work twice."""

import abc
import asyncio
import contextlib
from typing import AsyncIterator


class Locks(abc.ABC):
    @abc.abstractmethod
    def hold(self, name: str, ttl_s: float) -> contextlib.AbstractAsyncContextManager[bool]:
        """Try once to take `name` for at most `ttl_s` seconds; yields whether it was taken."""

    async def close(self) -> None:
        return None


class InProcessLocks(Locks):
    """The embedded default: one process runs the background workers, so a set of names suffices."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._guard = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def hold(self, name: str, ttl_s: float) -> AsyncIterator[bool]:
        async with self._guard:
            taken = name not in self._held
            if taken:
                self._held.add(name)
        try:
            yield taken
        finally:
            if taken:
                self._held.discard(name)
