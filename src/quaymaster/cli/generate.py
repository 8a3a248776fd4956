"""`quaymaster generate systemd`: unit files for the registry and for standalone background workers.

`quaymaster-registry.service` serves and (unless --no-workers) runs the background workers.
`quaymaster-worker@.service` is a template, `quaymaster worker %i`, for nodes whose registry
runs with --no-workers: enable `quaymaster-worker@gc.service` (and `@replication`) on one of them.
With --with-postgres / --with-redis it also writes units that run PostgreSQL and Redis in podman
containers on loopback, with their passwords in owner-only environment files beside the units.
"""

from __future__ import annotations

import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import click
import yaml

from quaymaster.cli.common import config_dir_option

POSTGRES_IMAGE = "docker.io/library/postgres:15"
REDIS_IMAGE = "docker.io/library/redis:7"
POSTGRES_UNIT = "quaymaster-postgres.service"
REDIS_UNIT = "quaymaster-redis.service"
REGISTRY_UNIT = "quaymaster-registry.service"
WORKER_TEMPLATE = "quaymaster-worker@.service"


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


def _service_unit(description: str, exec_start: str, deps: list[str], user: str | None) -> str:
    wants = " ".join(["network-online.target", *deps])
    lines = [
        "[Unit]",
        f"Description={description}",
        f"Wants={wants}",
        f"After={wants}",
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
    units = [
        Unit(REGISTRY_UNIT, _service_unit("Quaymaster container registry", f"{exe} {registry_args} {conf}", deps,
                                          user)),
        Unit(WORKER_TEMPLATE, _service_unit("Quaymaster background worker %i", f"{exe} worker %i {conf}", deps,
                                            user)),
    ]
    notes: list[str] = []
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
    return units, notes


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
        path = output_dir / unit.name
        path.write_text(unit.text)
        path.chmod(unit.mode)
        click.echo(f"wrote {path}")
    for note in notes:
        click.echo(note)
    click.echo(f"then: systemctl daemon-reload && systemctl enable --now {REGISTRY_UNIT}")
    workers = ["gc"] + (["replication"] if _read_config(config_dir).get("FEATURE_STORAGE_REPLICATION") else [])
    instances = " ".join(WORKER_TEMPLATE.replace("@", f"@{name}") for name in workers)
    if no_workers:
        click.echo(f"and on one node: systemctl enable --now {instances}")
    else:
        click.echo(f"the registry runs the background workers itself; {WORKER_TEMPLATE} is for nodes that run "
                   f"it with --no-workers (systemctl enable --now {instances})")
