"""The quaymaster command as a user meets it: clear one-line errors, user creation, migrate."""

import yaml
from click.testing import CliRunner

from quaymaster.accounts import service as accounts
from quaymaster.cli.main import main


def run(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input)


def test_user_create_then_duplicate_and_bad_input(tmp_path, monkeypatch):
    monkeypatch.setattr(accounts, "BCRYPT_ROUNDS", 4)
    cfg = str(tmp_path / "data" / "config")
    r = run("user", "create", "quayadmin", "--email", "admin@example.com", "--password-stdin",
            "--superuser", "--config-dir", cfg, input="a-good-password\n")
    assert r.exit_code == 0, r.output
    assert "created user quayadmin (added to SUPER_USERS" in r.output
    r = run("user", "create", "second", "--password-stdin", "--superuser", "--config-dir", cfg,
            input="a-good-password\n")
    assert r.exit_code == 0 and "added to SUPER_USERS" in r.output
    saved = yaml.safe_load((tmp_path / "data" / "config" / "config.yaml").read_text())
    assert saved["SUPER_USERS"] == ["quayadmin", "second"]
    saved["SUPER_USERS"].append("third")  # named in the file before the account exists
    (tmp_path / "data" / "config" / "config.yaml").write_text(yaml.safe_dump(saved))
    r = run("user", "create", "third", "--password-stdin", "--superuser", "--config-dir", cfg,
            input="a-good-password\n")
    assert r.exit_code == 0 and "already in SUPER_USERS" in r.output
    saved = yaml.safe_load((tmp_path / "data" / "config" / "config.yaml").read_text())
    assert saved["SUPER_USERS"] == ["quayadmin", "second", "third"]
    r = run("user", "create", "quayadmin", "--password-stdin", "--config-dir", cfg, input="another-password\n")
    assert r.exit_code == 1 and "already taken" in r.output
    r = run("user", "create", "Bad Name", "--password-stdin", "--config-dir", cfg, input="a-good-password\n")
    assert r.exit_code == 1 and "invalid username" in r.output
    r = run("user", "create", "short", "--password-stdin", "--config-dir", cfg, input="abc\n")
    assert r.exit_code == 1 and "at least 8 characters" in r.output
    r = run("user", "create", "nopass", "--password-stdin", "--config-dir", cfg, input="")
    assert r.exit_code == 1 and "no password" in r.output


def test_registry_refuses_a_bad_config_with_one_line(tmp_path):
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "config.yaml").write_text(yaml.safe_dump({"DB_URI": "oracle://x", "SECRET_KEY": "a",
                                                     "DATABASE_SECRET_KEY": "b"}))
    r = run("registry", "--config-dir", str(cfg))
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1].startswith("error: DB_URI: unsupported database 'oracle'")


def test_migrate_reports_the_revision(tmp_path):
    cfg = str(tmp_path / "config")
    run("user", "create", "x1", "--password-stdin", "--config-dir", cfg, input="")  # creates config only
    r = run("migrate", "--config-dir", cfg)
    assert r.exit_code == 0, r.output
    assert "database at revision 0007 (head 0007)" in r.output  # bump with each new migration


def test_migrate_without_config_says_how_to_start(tmp_path):
    r = run("migrate", "--config-dir", str(tmp_path / "none"))
    assert r.exit_code == 2 and "not found" in r.output
