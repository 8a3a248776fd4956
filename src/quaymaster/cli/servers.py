"""Several uvicorn servers in one process (HTTP + HTTPS, or API + introspection), stopped together."""

from __future__ import annotations

import contextlib
import signal

import uvicorn


class QuietServer(uvicorn.Server):
    """Without uvicorn's own signal capture: `stop_on_signals` installs one handler for all servers."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def stop_on_signals(servers: list[uvicorn.Server]) -> None:
    """SIGTERM or Ctrl-C: every server finishes its requests and stops; a second Ctrl-C forces it."""

    def stop(sig: int, _frame) -> None:
        for server in servers:
            if server.should_exit and sig == signal.SIGINT:
                server.force_exit = True
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
