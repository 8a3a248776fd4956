"""`quaymaster generate systemd`: the unit files parse, point at this installation and at commands
that exist, and order after the network and the database/redis units (the mirror worker after the
registry, the registry after a scanner on loopback); the scanner's config is written once, owner-only,
with the registry's pre-shared key, and the scanner accepts it; `systemd-analyze verify` accepts
them all (the worker template through an instance of it)."""

import configparser
import os
import shutil
import stat
import subprocess

import yaml
from click.testing import CliRunner
from support.env import missing_dependency

from quaymaster.cli.generate import quaymaster_executable
from quaymaster.cli.main import main
from quaymaster.scanner.config import load_config

SERVICES = ["quaymaster-registry.service", "quaymaster-worker@.service", "quaymaster-repomirror.service"]
ALL_UNITS = [*SERVICES, "quaymaster-scanner.service"]


def parse(path):
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read(path)
    return parser


def generate(tmp_path, *flags, config=None):
    out = tmp_path / "units"
    conf = tmp_path / "data" / "config"
    if config is not None:
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "config.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["generate", "systemd", "--output-dir", str(out), "--config-dir", str(conf),
                                       *flags])
    assert result.exit_code == 0, result.output
    return out, conf, result.output


def test_plain_units(tmp_path):
    out, conf, _ = generate(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == sorted(ALL_UNITS)
    exe = quaymaster_executable()
    assert exe.is_absolute() and os.access(exe, os.X_OK)
    for name, command in zip(SERVICES, ["registry", "worker %i", "repomirror"]):
        unit = parse(out / name)
        after = "network-online.target" + (" quaymaster-registry.service" if command == "repomirror" else "")
        assert unit["Unit"]["After"] == after
        assert unit["Unit"]["Wants"] == "network-online.target"
        assert unit["Service"]["Restart"] == "on-failure"
        assert unit["Service"]["ExecStart"] == f"{exe} {command} --config-dir {conf.resolve()}"
        assert unit["Install"]["WantedBy"] == "multi-user.target"
        # Every unit runs a command this quaymaster has.
        subcommand = command.split()[0]
        assert subcommand in main.commands, subcommand
    assert parse(out / "quaymaster-worker@.service")["Unit"]["Description"] == "Quaymaster background worker %i"
    scanner = parse(out / "quaymaster-scanner.service")
    assert scanner["Service"]["ExecStart"] == f"{exe} scanner --config {conf.resolve() / 'scanner.yaml'}"
    assert scanner["Service"]["Restart"] == "on-failure"
    assert "scanner" in main.commands


def test_scanner_config_matches_the_registry_and_is_kept(tmp_path):
    psk = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="
    out, conf, output = generate(tmp_path, config={
        "SERVER_HOSTNAME": "quay.example:8443", "PREFERRED_URL_SCHEME": "https", "FEATURE_SECURITY_SCANNER": True,
        "SECURITY_SCANNER_V4_ENDPOINT": "http://localhost:8082", "SECURITY_SCANNER_V4_PSK": psk,
        "FEATURE_REPO_MIRROR": True})
    path = conf / "scanner.yaml"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # it holds the key
    parsed = load_config(path)  # the scanner starts from it
    assert parsed.http_listen_addr == ("127.0.0.1", 8082)
    raw = yaml.safe_load(path.read_text())
    assert raw["auth"]["psk"] == {"key": psk, "iss": ["quay"]}
    assert raw["notifier"]["webhook"]["target"] == "https://quay.example:8443/secscan/notification"
    assert raw["indexer"]["connstring"] == f"sqlite:///{conf.parent / 'scanner.db'}"
    # A scanner on loopback: the registry starts after it and both are enabled.
    registry = parse(out / "quaymaster-registry.service")
    assert registry["Unit"]["Wants"] == "network-online.target quaymaster-scanner.service"
    assert "enable --now quaymaster-scanner.service quaymaster-registry.service" in output
    assert "quaymaster-repomirror.service runs repository mirroring" in output
    # The admin's edits survive generating again.
    path.write_text(path.read_text().replace("log_level: info", "log_level: debug"))
    generate(tmp_path)
    assert "log_level: debug" in path.read_text()


def test_scanner_without_a_key_gets_one_to_copy(tmp_path):
    _, conf, output = generate(tmp_path, "--with-postgres")
    raw = yaml.safe_load((conf / "scanner.yaml").read_text())
    assert f"SECURITY_SCANNER_V4_PSK: {raw['auth']['psk']['key']}" in output
    assert raw["indexer"]["connstring"].startswith("postgresql://quay:")


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
    assert {"gc", "replication", "securityworker"} <= set(choices)


def test_with_postgres_and_redis(tmp_path):
    out, _, output = generate(tmp_path, "--with-postgres", "--with-redis", "--user", "quay")
    deps = "network-online.target quaymaster-postgres.service quaymaster-redis.service"
    for name in SERVICES:
        unit = parse(out / name)
        after = deps + (" quaymaster-registry.service" if name == "quaymaster-repomirror.service" else "")
        assert unit["Unit"]["After"] == after and unit["Unit"]["Wants"] == deps
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


def test_scanner_shares_the_registry_database(tmp_path):
    uri = "postgresql://quay:pw@db.example:5432/quay"
    _, conf, _ = generate(tmp_path, config={"DB_URI": uri})
    assert yaml.safe_load((conf / "scanner.yaml").read_text())["indexer"]["connstring"] == uri
    (conf / "scanner.yaml").unlink()
    generate(tmp_path, config={"DB_URI": "sqlite:////var/lib/quaymaster/quaymaster.db"})
    raw = yaml.safe_load((conf / "scanner.yaml").read_text())
    assert raw["indexer"]["connstring"] == "sqlite:////var/lib/quaymaster/scanner.db"
