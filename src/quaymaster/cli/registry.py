"""`quaymaster registry`: serve /v2, the API and /health on HTTP, and on HTTPS when the config has TLS.

HTTPS is served when `ssl.cert`/`ssl.key` are in the config dir and PREFERRED_URL_SCHEME is https
(and EXTERNAL_TLS_TERMINATION is off). Then HTTP stays open for /v2 and /health and redirects
browser GETs to HTTPS. The parent binds both sockets; each worker process runs two uvicorn
servers (one per socket) in one event loop around one app, so every worker serves both ports.

The background workers (gc, replication) run in exactly one server process, unless
--no-workers: they need no more (a pass is database work, and the locks would let only one
process run it anyway), and one process keeps their memory and connections off the others.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import click
import uvicorn

from quaymaster.cli.common import (
    config_dir_option,
    fail,
    settings_or_exit,
    with_database,
)
from quaymaster.cli.servers import QuietServer, stop_on_signals
from quaymaster.settings import Settings, load_settings
from quaymaster.settings.tls import install_ca_bundle

CONFIG_DIR_ENV = "QUAYMASTER_CONFIG_DIR"
STARTUP_FAILURE = 3
log = logging.getLogger(__name__)


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _quiet_tls_probes() -> None:
    # Clients told --tls-verify=false try TLS first on the HTTP port; each try is not worth a warning.
    logging.getLogger("uvicorn.error").addFilter(
        lambda record: record.getMessage() != "Invalid HTTP request received.")


def worker_app():
    """The app for a process serving CONFIG_DIR_ENV (migrations already ran in the parent)."""
    from quaymaster.app import create_app

    _quiet_tls_probes()
    return create_app(load_settings(os.environ[CONFIG_DIR_ENV]), run_migrations=False)


@dataclass(frozen=True)
class ServePlan:
    """What each worker serves; picklable, handed to spawned workers with the bound sockets."""

    config_dir: str
    run_migrations: bool
    log_level: str
    access_log: bool
    certfile: str | None = None
    keyfile: str | None = None
    https_base: str | None = None  # where plain-HTTP browser GETs are redirected
    run_workers: bool = False  # this process also runs the background workers


class HttpsRedirect:
    """On the plain-HTTP port: GET/HEAD outside /v2, /health and /metrics go to HTTPS with a 301."""

    def __init__(self, app, https_base: str):
        self.app = app
        self.https_base = https_base.rstrip("/")

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and not (
                path in ("/v2", "/metrics") or path.startswith(("/v2/", "/health"))):
            target = self.https_base + (scope.get("raw_path") or path.encode()).decode("latin-1")
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            await send({"type": "http.response.start", "status": 301,
                        "headers": [(b"location", target.encode("latin-1")), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)




def tls_files(config_dir: Path, settings: Settings) -> tuple[Path, Path] | None:
    """(ssl.cert, ssl.key) when this process should terminate TLS itself, else None."""
    cert, key = config_dir / "ssl.cert", config_dir / "ssl.key"
    if settings.PREFERRED_URL_SCHEME != "https" or settings.EXTERNAL_TLS_TERMINATION:
        if cert.exists():
            log.info("ssl.cert is present but PREFERRED_URL_SCHEME is http or TLS ends in front: HTTP only")
        return None
    if not (cert.is_file() and key.is_file()):
        log.warning("PREFERRED_URL_SCHEME is https but ssl.cert/ssl.key are missing: serving HTTP only, "
                    "assuming TLS ends in front of this process")
        return None
    return cert, key


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror}")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def _serve(plan: ServePlan, sockets: list[socket.socket]) -> None:
    """One app, one or two uvicorn servers; the app's lifespan wraps both."""
    from quaymaster.app import create_app

    app = create_app(load_settings(plan.config_dir), run_migrations=plan.run_migrations,
                     run_workers=plan.run_workers)
    common = {"lifespan": "off", "http": "httptools", "access_log": plan.access_log, "log_level": plan.log_level,
              "timeout_keep_alive": 75, "server_header": False}
    if plan.certfile:
        servers = [QuietServer(uvicorn.Config(HttpsRedirect(app, plan.https_base or ""), **common)),
                   QuietServer(uvicorn.Config(app, ssl_certfile=plan.certfile, ssl_keyfile=plan.keyfile, **common))]
    else:
        servers = [QuietServer(uvicorn.Config(app, **common))]
    _quiet_tls_probes()  # after uvicorn.Config, which (re)configures its loggers

    stop_on_signals(servers)
    async with app.router.lifespan_context(app):
        await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in zip(servers, sockets)))


def _run(plan: ServePlan, sockets: list[socket.socket]) -> None:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        runner = asyncio.Runner()
    with runner:
        runner.run(_serve(plan, sockets))


def _worker_main(plan: ServePlan, sockets: list[socket.socket]) -> None:
    """Entry point of a spawned worker process."""
    logging.basicConfig(level=plan.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _run(plan, sockets)
    except Exception:
        log.exception("worker failed")
        raise SystemExit(STARTUP_FAILURE) from None


def _supervise(workers: int, plan: ServePlan, sockets: list[socket.socket]) -> None:
    """Keep `workers` processes serving the shared sockets; replace any that dies; stop on SIGINT/SIGTERM.

    The first process (and whichever replaces it) runs the background workers when plan.run_workers.
    Metrics go to files in a fresh directory that lives as long as this supervisor, so that
    /metrics sums every process's counters whichever process answers."""
    metrics_dir = tempfile.mkdtemp(prefix="quaymaster-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by the spawned processes
    try:
        _supervise_processes(workers, plan, sockets)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise_processes(workers: int, plan: ServePlan, sockets: list[socket.socket]) -> None:
    spawn_ctx = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())

    def start(index: int) -> multiprocessing.process.BaseProcess:
        process_plan = replace(plan, run_workers=plan.run_workers and index == 0)
        process = spawn_ctx.Process(target=_worker_main, args=(process_plan, sockets), name="quaymaster-worker")
        process.start()
        return process

    processes = [start(i) for i in range(workers)]
    failed = False
    while not stopping.wait(0.5):
        for i, process in enumerate(processes):
            if process.exitcode is None:
                continue
            if process.exitcode == STARTUP_FAILURE:
                log.error("worker %s failed; stopping", process.pid)
                failed = True
                stopping.set()
                break
            log.warning("worker %s exited with %s; starting another", process.pid, process.exitcode)
            processes[i] = start(i)
    for process in processes:
        if process.exitcode is None:
            process.terminate()
    for process in processes:
        process.join(30)
        if process.exitcode is None:
            process.kill()
            process.join()
    if failed:
        raise SystemExit(STARTUP_FAILURE)  # a failure, so a supervisor (systemd) restarts us


@click.command("registry")
@config_dir_option
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="HTTP port.")
@click.option("--https-port", default=8443, show_default=True, type=int,
              help="HTTPS port, used when ssl.cert/ssl.key are in the config dir and PREFERRED_URL_SCHEME is https.")
@click.option("--workers", default=_default_workers, show_default="CPUs, at most 4", type=click.IntRange(1, 64),
              help="Server processes sharing the ports.")
@click.option("--no-workers", is_flag=True,
              help="Do not run the background workers (gc, replication) here; run `quaymaster worker NAME` "
                   "on some node instead.")
@click.option("--access-log/--no-access-log", default=False, help="Log every request.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def registry(config_dir: Path, host: str, port: int, https_port: int, workers: int, no_workers: bool,
             access_log: bool, log_level: str) -> None:
    """Start the registry; the first run creates the embedded default config in CONFIG_DIR."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _quiet_tls_probes()
    settings = settings_or_exit(config_dir, create=True, port=port)
    install_ca_bundle(config_dir)
    sqlite = settings.DB_URI.startswith("sqlite")
    if sqlite:
        with_database(settings, lambda db: _noop())  # migrate once, before any worker starts
    # A server database may not be up yet: workers wait for it in the background (serving 503
    # meanwhile) and migrate under a lock, so start order does not matter.
    plan = ServePlan(str(config_dir.resolve()), run_migrations=not sqlite, log_level=log_level,
                     access_log=access_log, run_workers=not no_workers)
    sockets = [_bind(host, port)]
    listening = f"http on {host}:{port}"
    tls = tls_files(config_dir, settings)
    if tls:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(*tls)
        except (ssl.SSLError, OSError, ValueError) as exc:
            fail(f"ssl.cert/ssl.key: cannot be used for TLS ({exc})", 2)
        plan = replace(plan, certfile=str(tls[0]), keyfile=str(tls[1]),
                       https_base=f"https://{settings.SERVER_HOSTNAME}")
        sockets.append(_bind(host, https_port))
        listening += f", https on {host}:{https_port}"
    background = "no background workers" if no_workers else "background workers in-process"
    click.echo(f"quaymaster: serving {settings.base_url} ({listening}, {workers} worker(s), {background}, "
               f"config {config_dir}/config.yaml)", err=True)
    os.environ[CONFIG_DIR_ENV] = plan.config_dir
    if workers == 1:
        _run(plan, sockets)
    else:
        _supervise(workers, plan, sockets)


async def _noop() -> None:
    return None
