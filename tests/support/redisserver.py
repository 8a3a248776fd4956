"""A throwaway redis-server from Debian's binary, on loopback, with a password."""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .env import find_binary
from .servers import LOOPBACK, _stop_process, free_port, tail


@dataclass
class RedisServer:
    host: str
    port: int
    password: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def config(self, password: str | None = None) -> dict:
        """A BUILDLOGS_REDIS / USER_EVENTS_REDIS entry for this server."""
        return {"host": self.host, "port": self.port, "password": self.password if password is None else password}


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return bool(sock.recv(64))
    except OSError:
        return False


@contextmanager
def redis_server(tmpdir: Path, timeout: float = 20.0, *, port: int | None = None,
                 password: str | None = None) -> Iterator[RedisServer]:
    """port/password: given to start a server where a client already expects one."""
    binary = find_binary("redis-server", ["/usr/bin/redis-server"], hint="install the Debian package 'redis-server'")
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    password = password or secrets.token_urlsafe(16)
    log_path = tmpdir / "redis.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [binary, "--bind", LOOPBACK, "--port", str(port), "--requirepass", password, "--save", "",
             "--appendonly", "no", "--dir", str(tmpdir), "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + timeout
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start\n{tail(log_path)}")
            time.sleep(0.05)
        yield RedisServer(LOOPBACK, port, password, process, log_path)
    finally:
        _stop_process(process)
