"""`quaymaster generate systemd`: unit files for the registry, the mirror worker, the scanner and
standalone background workers.

`quaymaster-registry.service` serves and (unless --no-workers) runs the background workers.
`quaymaster-worker@.service` is a template, `quaymaster worker %i`, for nodes whose registry
runs with --no-workers: enable `quaymaster-worker@gc.service` (and `@replication`) on one of them.
`quaymaster-repomirror.service` runs repository mirroring alone (Quay's repomirror process), after
the registry it pushes through; `quaymaster-scanner.service` runs the Clair-v4-compatible scanner
from `scanner.yaml` in the config dir, which is written (owner-only, with the registry's
pre-shared key) when missing. A registry whose scanner is on loopback starts after it.
With --with-postgres / --with-redis it also writes units that run PostgreSQL and Redis in podman
containers on loopback, with their passwords in owner-only environment files beside the units.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import click
import yaml

from quaymaster.cli.common import config_dir_option

POSTGRES_IMAGE = "docker.io/library/postgres:15"
REDIS_IMAGE = "docker.io/library/redis:7"
POSTGRES_UNIT = "quaymaster-postgres.service"
REDIS_UNIT = "quaymaster-redis.service"
REGISTRY_UNIT = "quaymaster-registry.service"
WORKER_TEMPLATE = "quaymaster-worker@.service"
MIRROR_UNIT = "quaymaster-repomirror.service"
SCANNER_UNIT = "quaymaster-scanner.service"
SCANNER_CONFIG = "scanner.yaml"  # in the config dir, beside config.yaml


@dataclass(frozen=True)
class Unit:
    name: str
    text: str
    mode: int = 0o644


def quaymaster_executable() -> Path:
    """The `quaymaster` script of this installation (the venv's when run from one)."""
    beside = Path(sys.executable).parent / "quaymaster"
    if beside.is_file():
        return beside.absolute()
    found = shutil.which("quaymaster")
    return Path(found).absolute() if found else Path(sys.argv[0]).absolute()


def _service_unit(description: str, exec_start: str, deps: list[str], user: str | None,
                  after_only: list[str] | None = None) -> str:
    """`deps` are wanted and started first; `after_only` only orders (started first if enabled)."""
    wants = " ".join(["network-online.target", *deps])
    after = " ".join([wants, *(after_only or [])])
    lines = [
        "[Unit]",
        f"Description={description}",
        f"Wants={wants}",
        f"After={after}",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={exec_start}",
        "Restart=on-failure",
        "RestartSec=5",
        "TimeoutStopSec=70",
    ]
    if user:
        lines.append(f"User={user}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def _container_unit(description: str, name: str, run_args: str, podman: str) -> str:
    """podman in the foreground of systemd: notify when the container runs, remove it when it stops."""
    return "\n".join([
        "[Unit]",
        f"Description={description}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=all",
        "Environment=PODMAN_SYSTEMD_UNIT=%n",
        (f"ExecStart={podman} run --name {name} --replace --rm -d --sdnotify=conmon --cgroups=no-conmon "
         f"--cidfile=%t/%n.ctr-id {run_args}"),
        f"ExecStop={podman} stop --ignore -t 10 --cidfile=%t/%n.ctr-id",
        f"ExecStopPost={podman} rm -f --ignore -t 10 --cidfile=%t/%n.ctr-id",
        "Restart=on-failure",
        "RestartSec=5",
        "TimeoutStopSec=70",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def _arg(path: Path) -> str:
    """A path as one ExecStart argument (systemd splits on spaces unless quoted; `%` starts a specifier)."""
    text = str(path).replace("%", "%%")
    return f'"{text}"' if any(c in text for c in ' "\\') else text


def _read_config(config_dir: Path) -> dict:
    try:
        data = yaml.safe_load((config_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_loopback(endpoint: object) -> bool:
    host = urlsplit(endpoint).hostname if isinstance(endpoint, str) else None
    return host in ("localhost", "127.0.0.1", "::1")


def _scanner_config(config: dict, config_dir: Path, database: str | None) -> tuple[str, str | None]:
    """A scanner.yaml that speaks to this registry: the same pre-shared key, the listen port of
    SECURITY_SCANNER_V4_ENDPOINT, notifications to the registry's webhook, public feeds."""
    note = None
    psk = config.get("SECURITY_SCANNER_V4_PSK")
    if not isinstance(psk, str) or not psk:
        psk = base64.b64encode(secrets.token_bytes(32)).decode()
        note = f"set in config.yaml: SECURITY_SCANNER_V4_PSK: {psk} (the key in {config_dir / SCANNER_CONFIG})"
    endpoint = config.get("SECURITY_SCANNER_V4_ENDPOINT")
    port = urlsplit(endpoint).port if isinstance(endpoint, str) else None
    host = "127.0.0.1" if not isinstance(endpoint, str) or _is_loopback(endpoint) else "0.0.0.0"
    listen = f"{host}:{port or 8081}"
    connstring = database or _scanner_database(config, config_dir)
    scheme = config.get("PREFERRED_URL_SCHEME") or "http"
    registry = f"{scheme}://{config.get('SERVER_HOSTNAME') or 'localhost:8080'}"
    body = {
        "http_listen_addr": listen,
        "log_level": "info",
        "indexer": {"connstring": connstring},
        "matcher": {"period": "6h"},
        "updaters": {"sets": ["osv", "debian", "alpine"]},
        "notifier": {"webhook": {"target": f"{registry}/secscan/notification",
                                 "callback": f"http://{listen.replace('0.0.0.0', '127.0.0.1')}"
                                             "/notifier/api/v1/notification"}},
        "auth": {"psk": {"key": psk, "iss": ["quay"]}},
    }
    header = ("# The Quaymaster scanner (Clair v4 API). Feeds come from their public addresses; for an\n"
              "# air-gapped machine set updaters.config.<name>.url to local copies. CVSS scores: add\n"
              "# clair.cvss to updaters.sets with updaters.config.clair.cvss.url = NVD 2.0 JSON feeds.\n")
    return header + yaml.safe_dump(body, sort_keys=False), note


def _scanner_database(config: dict, config_dir: Path) -> str:
    """The registry's PostgreSQL (the scanner's tables are prefixed `scanner_`), else a SQLite file
    beside the registry's (relative paths count from the config dir's parent, as for the registry)."""
    uri = config.get("DB_URI")
    if isinstance(uri, str) and uri.startswith(("postgresql://", "postgres://")):
        return uri
    data_dir = config_dir.parent
    if isinstance(uri, str) and uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        data_dir = (config_dir.parent / uri.removeprefix("sqlite:///")).parent
    return f"sqlite:///{data_dir / 'scanner.db'}"


def _env_value(path: Path, key: str) -> str | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key + "="):
                return line.split("=", 1)[1]
    except OSError:
        pass
    return None


def build_units(output_dir: Path, config_dir: Path, *, with_postgres: bool, with_redis: bool,
                user: str | None = None, no_workers: bool = False) -> tuple[list[Unit], list[str]]:
    """The unit (and environment) files to write, and notes for the person installing them."""
    exe = quaymaster_executable()
    podman = shutil.which("podman") or "/usr/bin/podman"
    config = _read_config(config_dir)
    deps = ([POSTGRES_UNIT] if with_postgres else []) + ([REDIS_UNIT] if with_redis else [])
    conf = f"--config-dir {_arg(config_dir)}"
    exe = _arg(exe)
    registry_args = "registry --no-workers" if no_workers else "registry"
    # The registry starts after a scanner on this machine (so it is healthy at once) but does not
    # need it; the mirror worker pushes through the registry, so it starts after it.
    scanner_here = bool(config.get("FEATURE_SECURITY_SCANNER")) and _is_loopback(
        config.get("SECURITY_SCANNER_V4_ENDPOINT"))
    units = [
        Unit(REGISTRY_UNIT, _service_unit("Quaymaster container registry", f"{exe} {registry_args} {conf}",
                                          deps + ([SCANNER_UNIT] if scanner_here else []), user)),
        Unit(WORKER_TEMPLATE, _service_unit("Quaymaster background worker %i", f"{exe} worker %i {conf}", deps,
                                            user)),
        Unit(MIRROR_UNIT, _service_unit("Quaymaster repository mirroring", f"{exe} repomirror {conf}", deps, user,
                                        after_only=[REGISTRY_UNIT])),
        Unit(SCANNER_UNIT, _service_unit("Quaymaster vulnerability scanner (Clair v4 API)",
                                         f"{exe} scanner --config {_arg(config_dir / SCANNER_CONFIG)}",
                                         [POSTGRES_UNIT] if with_postgres else [], user)),
    ]
    notes: list[str] = []
    scanner_db = None
    if with_postgres:
        env_path = output_dir / "quaymaster-postgres.env"
        password = _env_value(env_path, "POSTGRES_PASSWORD") or secrets.token_urlsafe(24)
        units.append(Unit(env_path.name, f"POSTGRES_USER=quay\nPOSTGRES_PASSWORD={password}\nPOSTGRES_DB=quay\n",
                          0o600))
        units.append(Unit(POSTGRES_UNIT, _container_unit(
            "PostgreSQL for Quaymaster (podman)", "quaymaster-postgres",
            f"-p 127.0.0.1:5432:5432 -v quaymaster-postgres:/var/lib/postgresql/data --env-file={env_path} "
            f"{POSTGRES_IMAGE}", podman)))
        uri = f"postgresql://quay:{quote(password, safe='')}@127.0.0.1:5432/quay"
        scanner_db = uri
        if config.get("DB_URI") != uri:
            notes.append(f"set in config.yaml: DB_URI: {uri}")
    if with_redis:
        env_path = output_dir / "quaymaster-redis.env"
        password = _env_value(env_path, "REDIS_PASSWORD") or secrets.token_urlsafe(24)
        units.append(Unit(env_path.name, f"REDIS_PASSWORD={password}\n", 0o600))
        # `$$` is a literal `$` for systemd; the container's shell expands it from --env-file.
        units.append(Unit(REDIS_UNIT, _container_unit(
            "Redis for Quaymaster (podman)", "quaymaster-redis",
            f"-p 127.0.0.1:6379:6379 -v quaymaster-redis:/data --env-file={env_path} {REDIS_IMAGE} "
            '/bin/sh -c "exec docker-entrypoint.sh redis-server --appendonly yes --requirepass \\"$${REDIS_PASSWORD}\\""', podman)))
        wanted = {"host": "127.0.0.1", "port": 6379, "password": password}
        if any(config.get(key) != wanted for key in ("BUILDLOGS_REDIS", "USER_EVENTS_REDIS")):
            notes.append("set in config.yaml: BUILDLOGS_REDIS and USER_EVENTS_REDIS: "
                         f"{{host: 127.0.0.1, port: 6379, password: {password}}}")
    scanner_config = config_dir / SCANNER_CONFIG
    if not scanner_config.exists():  # never overwrite the admin's scanner settings
        text, note = _scanner_config(config, config_dir, scanner_db)
        units.append(Unit(str(scanner_config), text, 0o600))
        if note:
            notes.append(note)
    return units, notes


def _give_to(path: Path, user: str) -> None:
    """The scanner runs as `user` and must read its owner-only config."""
    try:
        shutil.chown(path, user=user)
    except (LookupError, PermissionError, OSError):
        click.echo(f"note: could not give {path} to user {user}; run: chown {user} {path}")


@click.group("generate")
def generate() -> None:
    """Write deployment files."""


@generate.command("systemd")
@config_dir_option
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where to write the unit files (e.g. /etc/systemd/system).")
@click.option("--with-postgres", is_flag=True, help="Also a unit running PostgreSQL in podman on 127.0.0.1:5432.")
@click.option("--with-redis", is_flag=True, help="Also a unit running Redis in podman on 127.0.0.1:6379.")
@click.option("--user", default=None, help="Run the Quaymaster services as this user (User=).")
@click.option("--no-workers", is_flag=True,
              help="Run the registry with --no-workers; the background workers then run from quaymaster-worker@.")
def systemd(config_dir: Path, output_dir: Path, with_postgres: bool, with_redis: bool, user: str | None,
            no_workers: bool) -> None:
    """Write systemd units for the registry and a template for standalone background workers."""
    output_dir = output_dir.absolute()
    output_dir.mkdir(parents=True, exist_ok=True)
    units, notes = build_units(output_dir, config_dir.resolve(), with_postgres=with_postgres,
                               with_redis=with_redis, user=user, no_workers=no_workers)
    for unit in units:
        path = output_dir / unit.name  # the scanner's config has an absolute name: it lives in the config dir
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created with its final mode: a password file is never readable by others, even briefly.
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, unit.mode), "w") as handle:
            handle.write(unit.text)
        path.chmod(unit.mode)
        click.echo(f"wrote {path}")
        if user and unit.name.endswith(SCANNER_CONFIG):
            _give_to(path, user)
    for note in notes:
        click.echo(note)
    config = _read_config(config_dir)
    services = [REGISTRY_UNIT]
    if config.get("FEATURE_SECURITY_SCANNER") and _is_loopback(config.get("SECURITY_SCANNER_V4_ENDPOINT")):
        services.insert(0, SCANNER_UNIT)
    click.echo(f"then: systemctl daemon-reload && systemctl enable --now {' '.join(services)}")
    workers = ["gc"] + (["replication"] if config.get("FEATURE_STORAGE_REPLICATION") else []) \
        + (["securityworker"] if config.get("FEATURE_SECURITY_SCANNER") and config.get("SECURITY_SCANNER_V4_ENDPOINT")
           else [])
    instances = " ".join(WORKER_TEMPLATE.replace("@", f"@{name}") for name in workers)
    mirroring = config.get("FEATURE_REPO_MIRROR")
    if no_workers:
        click.echo(f"and on one node: systemctl enable --now {instances}"
                   + (f" {MIRROR_UNIT}" if mirroring else ""))
    else:
        click.echo(f"the registry runs the background workers itself; {WORKER_TEMPLATE} is for nodes that run "
                   f"it with --no-workers (systemctl enable --now {instances})")
    if mirroring:
        click.echo(f"{MIRROR_UNIT} runs repository mirroring in its own process (more of them sync more "
                   "repositories at once)")
    if SCANNER_UNIT not in services:
        click.echo(f"{SCANNER_UNIT} runs the scanner; point SECURITY_SCANNER_V4_ENDPOINT at it and set "
                   "FEATURE_SECURITY_SCANNER to use it")