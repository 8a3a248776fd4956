"""Start real registry servers on loopback ports and wait until they answer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import yaml

from .env import find_binary
from .proc import run

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_REGISTRY_BINARY = "/usr/bin/docker-registry"


def free_port() -> int:
    """Ask the kernel for an unused loopback port (another process may still race us for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 60) -> str:
    """Last lines of a log file for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def wait_for_http(
    url: str,
    timeout: float = 30.0,
    *,
    statuses: Collection[int] = (200, 401),
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> httpx.Response:
    """Poll url until it answers with one of statuses; fail early if the server process died."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt made"
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while True:
            if process is not None and process.poll() is not None:
                log = f"\n--- log tail ({log_path}) ---\n{tail(log_path)}" if log_path else ""
                raise RuntimeError(
                    f"server exited with {process.returncode} before {url} answered{log}"
                )
            try:
                response = client.get(url)
                if response.status_code in statuses:
                    return response
                last_error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                log = f"\n--- log tail ({log_path}) ---\n{tail(log_path)}" if log_path else ""
                raise TimeoutError(f"{url} did not answer within {timeout}s ({last_error}){log}")
            time.sleep(0.1)


def _stop_process(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if the process ignores it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


def docker_registry_config(
    root: Path, port: int, htpasswd_path: Path | None = None
) -> dict[str, Any]:
    """Minimal distribution config: loopback, filesystem storage, deletes allowed."""
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"{LOOPBACK}:{port}", "secret": "quaymaster-tests"},
    }
    if htpasswd_path is not None:
        config["auth"] = {"htpasswd": {"realm": "quaymaster-tests", "path": str(htpasswd_path)}}
    return config


def write_htpasswd(path: Path, users: Mapping[str, str]) -> Path:
    """An htpasswd file with bcrypt hashes, the only scheme distribution accepts."""
    lines = [
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}"
        for user, password in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class DockerRegistry:
    """Debian's reference registry (distribution 2.8) running on loopback."""

    url: str
    host: str
    process: subprocess.Popen[bytes]
    log_path: Path
    storage_dir: Path


@contextmanager
def docker_registry_server(
    tmpdir: Path,
    *,
    users: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Iterator[DockerRegistry]:
    """Run /usr/bin/docker-registry with storage in tmpdir; users= turns on htpasswd auth."""
    binary = find_binary(
        "docker-registry",
        [DOCKER_REGISTRY_BINARY],
        hint="install the Debian package 'docker-registry'",
    )
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    storage = tmpdir / "storage"
    storage.mkdir(exist_ok=True)
    port = free_port()
    config_path = tmpdir / "config.yml"
    htpasswd = write_htpasswd(tmpdir / "htpasswd", users) if users else None
    config_path.write_text(yaml.safe_dump(docker_registry_config(storage, port, htpasswd)))
    log_path = tmpdir / "registry.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [binary, "serve", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        url = f"http://{LOOPBACK}:{port}"
        wait_for_http(f"{url}/v2/", timeout, process=process, log_path=log_path)
        yield DockerRegistry(
            url=url,
            host=f"{LOOPBACK}:{port}",
            process=process,
            log_path=log_path,
            storage_dir=storage,
        )
    finally:
        _stop_process(process)


def quaymaster_binary() -> str:
    """The console script installed next to the running interpreter, else the repo venv's."""
    return find_binary(
        "quaymaster",
        [Path(sys.executable).parent / "quaymaster", REPO_ROOT / ".venv" / "bin" / "quaymaster"],
        hint="run `make install-test` so the venv has the quaymaster console script",
    )


@dataclass
class QuaymasterServer:
    """A `quaymaster registry` subprocess that tests can kill, restart and administer."""

    data_dir: Path
    port: int
    env: dict[str, str]
    binary: str
    start_timeout: float = 60.0
    args: tuple[str, ...] = ()  # more `quaymaster registry` options, e.g. ("--workers", "2")
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def host(self) -> str:
        """host:port as used in image references."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{self.host}"

    @property
    def config_dir(self) -> Path:
        """Directory passed as --config-dir to every quaymaster command."""
        return self.data_dir / "config"

    @property
    def log_path(self) -> Path:
        """The server's combined stdout/stderr, appended to across restarts."""
        return self.data_dir / "server.log"

    def log_tail(self, lines: int = 60) -> str:
        """Last lines of the server log for assertion messages."""
        return tail(self.log_path, lines)

    def start(self) -> None:
        """Spawn the server and block until GET /v2/ answers 200 or 401."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("quaymaster server is already running")
        with self.log_path.open("ab") as log:
            log.write(f"\n=== starting quaymaster on {self.host} ===\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "registry",
                    "--config-dir",
                    str(self.config_dir),
                    "--host",
                    LOOPBACK,
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.data_dir,
                start_new_session=True,  # its own process group: kill() reaches every worker
            )
        try:
            wait_for_http(
                f"{self.url}/v2/",
                self.start_timeout,
                process=self.process,
                log_path=self.log_path,
            )
        except BaseException:
            _stop_process(self.process)
            raise

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM), escalating to SIGKILL."""
        if self.process is not None:
            _stop_process(self.process)

    def kill(self) -> None:
        """Simulate a crash: SIGKILL to the supervisor and all its workers, no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port and data dir."""
        self.stop()
        self.start()

    def cli(self, *args: str, input: str | None = None, timeout: float = 60.0) -> str:
        """Run `quaymaster ARGS --config-dir CONFIG` with the server's env; return stdout."""
        result = run(
            [self.binary, *args, "--config-dir", str(self.config_dir)],
            input=input,
            env=self.env,
            cwd=self.data_dir,
            timeout=timeout,
        )
        return result.stdout

    def create_user(self, name: str, password: str, email: str, superuser: bool = False) -> str:
        """Create an account through the CLI, passing the password on stdin."""
        args = ["user", "create", name, "--email", email, "--password-stdin"]
        if superuser:
            args.append("--superuser")
        return self.cli(*args, input=password + "\n")


def write_config(config_dir: Path, config: Mapping[str, Any]) -> Path:
    """Write config.yaml; the server fills in defaults for keys left out."""
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "config.yaml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


@contextmanager
def quaymaster_server(
    data_dir: Path,
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
    start_timeout: float = 60.0,
    binary: str | None = None,
    args: Collection[str] = (),
) -> Iterator[QuaymasterServer]:
    """Run `quaymaster registry` from data_dir on loopback for the duration of the block.

    config.yaml is always pre-written with SERVER_HOSTNAME set to the loopback host:port
    unless config gives its own; keys left out get the server's defaults."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    server = QuaymasterServer(
        data_dir=data_dir,
        port=port if port is not None else free_port(),
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        binary=binary or quaymaster_binary(),
        start_timeout=start_timeout,
        args=tuple(args),
    )
    server.config_dir.mkdir(parents=True, exist_ok=True)
    # The Bearer realm and the token audience come from SERVER_HOSTNAME, so it must be the
    # host:port clients actually use; the server fills in every other default.
    config = {"SERVER_HOSTNAME": server.host, **(config or {})}
    write_config(server.config_dir, config)
    server.start()
    try:
        yield server
    finally:
        server.stop()
