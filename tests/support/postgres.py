"""A throwaway PostgreSQL cluster from Debian's binaries, so tests hit a real database."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .env import missing_dependency
from .proc import CommandError, run
from .servers import free_port

PG_ROOT = Path("/usr/lib/postgresql")
PG_USER = "postgres"
PG_SPEED_OPTIONS = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort '9.6' < '15' < '16' numerically, not lexically."""
    return tuple(int(part) for part in re.findall(r"\d+", path.name))


def find_pg_bindir() -> Path:
    """Pick the newest installed PostgreSQL major version that has initdb and pg_ctl."""
    candidates = [
        d / "bin"
        for d in PG_ROOT.glob("*")
        if (d / "bin" / "initdb").is_file() and (d / "bin" / "pg_ctl").is_file()
    ]
    if not candidates:
        missing_dependency(
            f"PostgreSQL server binaries not found under {PG_ROOT}/*/bin "
            "(install the Debian package 'postgresql')"
        )
    return max(candidates, key=lambda b: _version_key(b.parent))


def _as_server_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root, so drop to the postgres user when we are root."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", PG_USER, "--", *argv]


def _chown_to_server_user(path: Path) -> None:
    """When root, hand a directory to the postgres user that will run the server."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(PG_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _make_base_dir() -> Path:
    """A dir under /tmp the postgres user can reach (pytest's tmp dirs are 0700 root)."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            missing_dependency(f"running as root but there is no {PG_USER!r} system user")
    base = Path(tempfile.mkdtemp(prefix="quaymaster-pg-", dir="/tmp"))
    base.chmod(0o700)
    _chown_to_server_user(base)
    (base / "sock").mkdir(mode=0o700)
    _chown_to_server_user(base / "sock")
    return base


@dataclass
class PostgresServer:
    """A running cluster listening on 127.0.0.1 with trust auth for the postgres role."""

    bindir: Path
    base_dir: Path
    port: int
    host: str = "127.0.0.1"
    user: str = PG_USER

    @property
    def data_dir(self) -> Path:
        """Where initdb put the cluster."""
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        """Unix sockets stay inside the temp dir instead of /var/run/postgresql."""
        return self.base_dir / "sock"

    @property
    def log_path(self) -> Path:
        """Server log, useful in failure messages."""
        return self.base_dir / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq-style URL for the given database."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def _client_args(self) -> list[str]:
        """Connect over TCP so client tools need no socket-dir access."""
        return ["-h", self.host, "-p", str(self.port), "-U", self.user]

    def create_database(self, name: str) -> str:
        """Create a database and return its DSN."""
        if not _IDENTIFIER.match(name):
            raise ValueError(f"unsafe database name: {name!r}")
        run([str(self.bindir / "createdb"), *self._client_args(), name], timeout=60)
        return self.dsn(name)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL with psql (tuples only, unaligned) and return its stdout."""
        result = run(
            [
                str(self.bindir / "psql"),
                *self._client_args(),
                "-d",
                dbname,
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-A",
                "-t",
                "-c",
                sql,
            ],
            timeout=60,
        )
        return result.stdout

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the server log for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def _initdb(bindir: Path, data_dir: Path) -> None:
    """Create the cluster with trust auth; fast and locale-independent."""
    run(
        _as_server_user(
            [
                str(bindir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                PG_USER,
                "--auth-local=trust",
                "--auth-host=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        ),
        timeout=120,
    )


def _pg_ctl_start(server: PostgresServer) -> None:
    """Start listening on loopback only, with durability off for speed."""
    options = " ".join(
        [
            "-c listen_addresses=127.0.0.1",
            f"-p {server.port}",
            f"-c unix_socket_directories={server.socket_dir}",
            *PG_SPEED_OPTIONS,
        ]
    )
    run(
        _as_server_user(
            [
                str(server.bindir / "pg_ctl"),
                "-D",
                str(server.data_dir),
                "-l",
                str(server.log_path),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        timeout=90,
    )


def _pg_ctl_stop(server: PostgresServer) -> None:
    """Immediate shutdown: the data is thrown away anyway."""
    run(
        _as_server_user(
            [
                str(server.bindir / "pg_ctl"),
                "-D",
                str(server.data_dir),
                "-m",
                "immediate",
                "-w",
                "stop",
            ]
        ),
        timeout=60,
        check=False,
    )


def _start(bindir: Path, base_dir: Path, attempts: int = 3) -> PostgresServer:
    """Start on a free port, retrying if another process grabbed the port first."""
    last: CommandError | None = None
    for _ in range(attempts):
        server = PostgresServer(bindir=bindir, base_dir=base_dir, port=free_port())
        try:
            _pg_ctl_start(server)
            return server
        except CommandError as exc:
            last = exc
            if "already in use" not in server.log_tail():
                break
    assert last is not None
    raise RuntimeError(
        f"PostgreSQL failed to start: {last}\n--- server log ---\n{server.log_tail()}"
    )


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Run a fresh cluster for the duration of the block, then stop it and delete it."""
    bindir = find_pg_bindir()
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing_dependency("running as root needs 'runuser' (util-linux) to start PostgreSQL")
    base_dir = _make_base_dir()
    server: PostgresServer | None = None
    try:
        _initdb(bindir, base_dir / "data")
        server = _start(bindir, base_dir)
        yield server
    finally:
        if server is not None:
            _pg_ctl_stop(server)
        shutil.rmtree(base_dir, ignore_errors=True)
