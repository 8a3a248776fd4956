"""Named locks with a time to live, so one node (or process) at a time does a piece of background work.

Correctness never rests on them (transactions do that); they only keep workers from doing
the same work twice. `hold()` never raises for a backend that cannot be reached: it yields
False, and the worker skips this round."""

import abc
import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

log = logging.getLogger(__name__)


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


def _file_name(name: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64]
    return f"{readable}.{hashlib.sha256(name.encode()).hexdigest()[:12]}.lock"


class FileLocks(Locks):
    """flock(2) on one file per name in `directory`, for the processes of one machine (SQLite).

    The kernel frees the lock of a process that dies, so the TTL is not needed for that and is
    not enforced; a holder that hangs keeps its lock. Lock files are left in place on purpose:
    deleting them would let two processes lock two different files of the same name."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self._warned = False

    @contextlib.asynccontextmanager
    async def hold(self, name: str, ttl_s: float) -> AsyncIterator[bool]:
        fd: int | None = None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.directory / _file_name(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if fd is not None:
                os.close(fd)
                fd = None
            if not isinstance(exc, BlockingIOError) and not self._warned:
                self._warned = True
                log.warning("locks: cannot lock files in %s (%s); background work is skipped", self.directory, exc)
        try:
            yield fd is not None
        finally:
            if fd is not None:
                os.close(fd)  # closing the descriptor releases the lock
