"""`quaymaster generate systemd`: the unit files parse, point at this installation and at commands
that exist, and order after the network and the database/redis units; `systemd-analyze verify`
accepts them (the worker template through an instance of it)."""

import configparser
import os
import shutil
import stat
import subprocess

from click.testing import CliRunner
from support.env import missing_dependency

from quaymaster.cli.generate import quaymaster_executable
from quaymaster.cli.main import main

SERVICES = ["quaymaster-registry.service", "quaymaster-worker@.service"]


def parse(path):
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read(path)
    return parser


def generate(tmp_path, *flags):
    out = tmp_path / "units"
    conf = tmp_path / "data" / "config"
    result = CliRunner().invoke(main, ["generate", "systemd", "--output-dir", str(out), "--config-dir", str(conf),
                                       *flags])
    assert result.exit_code == 0, result.output
    return out, conf, result.output


def test_plain_units(tmp_path):
    out, conf, _ = generate(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == sorted(SERVICES)
    exe = quaymaster_executable()
    assert exe.is_absolute() and os.access(exe, os.X_OK)
    for name, command in zip(SERVICES, ["registry", "worker %i"]):
        unit = parse(out / name)
        assert unit["Unit"]["After"] == "network-online.target"
        assert unit["Unit"]["Wants"] == "network-online.target"
        assert unit["Service"]["Restart"] == "on-failure"
        assert unit["Service"]["ExecStart"] == f"{exe} {command} --config-dir {conf.resolve()}"
        assert unit["Install"]["WantedBy"] == "multi-user.target"
        # Every unit runs a command this quaymaster has.
        subcommand = command.split()[0]
        assert subcommand in main.commands, subcommand
    assert parse(out / "quaymaster-worker@.service")["Unit"]["Description"] == "Quaymaster background worker %i"


def test_no_workers_moves_them_to_the_template(tmp_path):
    out, conf, output = generate(tmp_path, "--no-workers")
    exe = quaymaster_executable()
    registry = parse(out / "quaymaster-registry.service")
    assert registry["Service"]["ExecStart"] == f"{exe} registry --no-workers --config-dir {conf.resolve()}"
    assert "systemctl enable --now quaymaster-worker@gc.service" in output
    # Both flags exist on the commands the units run.
    params = {p.name for p in main.commands["registry"].params}
    assert "no_workers" in params
    (choices,) = [p.type.choices for p in main.commands["worker"].params if p.name == "name"]
    assert {"gc", "replication"} <= set(choices)


def test_with_postgres_and_redis(tmp_path):
    out, _, output = generate(tmp_path, "--with-postgres", "--with-redis", "--user", "quay")
    deps = "network-online.target quaymaster-postgres.service quaymaster-redis.service"
    for name in SERVICES:
        unit = parse(out / name)
        assert unit["Unit"]["After"] == deps and unit["Unit"]["Wants"] == deps
        assert unit["Service"]["User"] == "quay"
    for name, image in (("postgres", "postgres:15"), ("redis", "redis:7")):
        unit = parse(out / f"quaymaster-{name}.service")
        start = unit["Service"]["ExecStart"]
        assert "podman run" in start and image in start and "-p 127.0.0.1:" in start
        assert f"--env-file={out / f'quaymaster-{name}.env'}" in start
        assert unit["Service"]["Restart"] == "on-failure"
        assert stat.S_IMODE(os.stat(out / f"quaymaster-{name}.env").st_mode) == 0o600
    password = (out / "quaymaster-postgres.env").read_text().split("POSTGRES_PASSWORD=")[1].split()[0]
    assert f"DB_URI: postgresql://quay:{password}@127.0.0.1:5432/quay" in output
    # Generating again keeps the passwords (and so the config that uses them).
    generate(tmp_path, "--with-postgres", "--with-redis")
    assert password in (out / "quaymaster-postgres.env").read_text()


def test_systemd_analyze_verify_accepts_them(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing_dependency("systemd-analyze not found (Debian package 'systemd')")
    out, _, _ = generate(tmp_path, "--with-postgres", "--with-redis")
    units = sorted(str(p) for p in out.glob("*.service"))
    assert str(out / "quaymaster-worker@.service") in units
    units.append(str(out / "quaymaster-worker@gc.service"))  # an instance: verify loads the template beside it
    if not shutil.which("podman") and not os.path.exists("/usr/bin/podman"):
        missing_dependency("the podman units name /usr/bin/podman, which verify wants to exist")
    result = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    assert result.returncode == 0, result.stdout + result.stderr
    noise = [line for line in (result.stdout + result.stderr).splitlines() if "quaymaster" in line]
    assert noise == [], noise
