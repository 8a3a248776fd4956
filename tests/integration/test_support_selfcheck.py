"""Self-checks of helpers that need no registry: PostgreSQL, server lifecycle, images."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from support.env import MissingDependencyError, find_binary
from support.images import diff_id, random_layer, sha256_digest
from support.postgres import PostgresServer
from support.servers import quaymaster_server

pytestmark = pytest.mark.integration

# Stands in for the `quaymaster` console script, following the same command-line contract.
STUB_CLI = textwrap.dedent(
    """
    import argparse, http.server, json, os, sys
    from pathlib import Path

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    reg = sub.add_parser("registry")
    reg.add_argument("--config-dir", required=True)
    reg.add_argument("--host", required=True)
    reg.add_argument("--port", type=int, required=True)
    user = sub.add_parser("user").add_subparsers(dest="action", required=True).add_parser("create")
    user.add_argument("name")
    user.add_argument("--email", required=True)
    user.add_argument("--password-stdin", action="store_true")
    user.add_argument("--superuser", action="store_true")
    user.add_argument("--config-dir", required=True)
    args = parser.parse_args()

    if args.cmd == "user":
        record = {"name": args.name, "email": args.email, "superuser": args.superuser,
                  "password": sys.stdin.readline().rstrip("\\n")}
        with open(Path(args.config_dir) / "users.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\\n")
        print("created", args.name)
        sys.exit(0)

    if os.environ.get("STUB_FAIL"):
        print("boom: refusing to start", flush=True)
        sys.exit(3)
    config = Path(args.config_dir) / "config.yaml"
    print("config present:", config.exists(), flush=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer realm="stub"')
            self.send_header("Content-Length", "0")
            self.end_headers()

    http.server.HTTPServer((args.host, args.port), Handler).serve_forever()
    """
)


@pytest.fixture
def stub_cli(tmp_path: Path) -> str:
    """An executable that behaves like `quaymaster` for lifecycle tests."""
    path = tmp_path / "quaymaster-stub"
    path.write_text(f"#!{sys.executable}\n{STUB_CLI}")
    path.chmod(0o755)
    return str(path)


@pytest.mark.postgres
def test_postgres_server_creates_a_reachable_database(postgres: PostgresServer) -> None:
    dsn = postgres.create_database("support_selfcheck")

    assert dsn == f"postgresql://postgres@127.0.0.1:{postgres.port}/support_selfcheck"
    psql = postgres.bindir / "psql"
    out = subprocess.run(
        [str(psql), dsn, "-X", "-A", "-t", "-c", "select 1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert out.stdout.strip() == "1"
    assert postgres.psql("show fsync", "support_selfcheck").strip() == "off"


def test_quaymaster_server_lifecycle_against_stub(tmp_path: Path, stub_cli: str) -> None:
    data_dir = tmp_path / "qm"
    with quaymaster_server(data_dir, config={"SERVER_HOSTNAME": "x"}, binary=stub_cli) as server:
        assert server.host == f"127.0.0.1:{server.port}"
        assert httpx.get(f"{server.url}/v2/", trust_env=False).status_code == 401
        assert (server.config_dir / "config.yaml").read_text().startswith("SERVER_HOSTNAME")

        server.create_user("alice", "s3cret", "alice@example.com", superuser=True)
        users = [
            json.loads(line)
            for line in (server.config_dir / "users.jsonl").read_text().splitlines()
        ]
        assert users == [
            {"name": "alice", "email": "alice@example.com", "superuser": True, "password": "s3cret"}
        ]

        first = server.process
        server.kill()
        assert first is not None and first.returncode == -9
        server.restart()
        assert server.process is not None and server.process is not first
        assert server.process.poll() is None
        assert "config present: True" in server.log_tail()
    assert server.process is not None and server.process.poll() is not None


def test_quaymaster_server_start_failure_shows_log_tail(tmp_path: Path, stub_cli: str) -> None:
    with pytest.raises(RuntimeError, match="boom: refusing to start"):
        with quaymaster_server(tmp_path / "qm", env={"STUB_FAIL": "1"}, binary=stub_cli):
            pass


def test_missing_binary_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        find_binary("quaymaster-no-such-tool")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(MissingDependencyError, match="quaymaster-no-such-tool"):
        find_binary("quaymaster-no-such-tool")


def test_seeded_layers_are_reproducible_and_unseeded_are_fresh() -> None:
    assert random_layer(1024, seed=7) == random_layer(1024, seed=7)
    assert random_layer(1024) != random_layer(1024)
    layer = random_layer(1024, seed=7)
    assert diff_id(layer) != sha256_digest(layer)
