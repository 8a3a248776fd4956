"""Start order does not matter: the registry comes up before its PostgreSQL, answers 503 on
/health and /v2 meanwhile, and turns healthy on its own once the database appears. Health
reports each dependency, Redis included when configured."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import httpx
import pytest
from support.env import missing_dependency
import yaml
from support.postgres import (
    PostgresServer,
    _initdb,
    _make_base_dir,
    _pg_ctl_start,
    _pg_ctl_stop,
    find_pg_bindir,
)
from support.redisserver import redis_server
from support.servers import (
    LOOPBACK,
    _stop_process,
    free_port,
    quaymaster_binary,
    tail,
    wait_for_http,
)

from quaymaster.app import create_app
from quaymaster.settings.model import settings_from_dict

pytestmark = pytest.mark.integration

HEALTHY_WITHIN = 30.0  # seconds from PostgreSQL accepting connections to /health/endtoend 200


@pytest.mark.postgres
def test_registry_waits_for_a_database_that_starts_later(tmp_path):
    bindir = find_pg_bindir()
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing_dependency("running as root needs runuser to start PostgreSQL")
    base = _make_base_dir()
    _initdb(bindir, base / "data")
    pg = PostgresServer(bindir=bindir, base_dir=base, port=free_port())
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "config.yaml").write_text(yaml.safe_dump({
        "SERVER_HOSTNAME": "localhost", "DB_URI": pg.dsn("postgres")}))
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [quaymaster_binary(), "registry", "--config-dir", str(config_dir), "--host", LOOPBACK,
             "--port", str(port), "--workers", "2"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    url = f"http://{LOOPBACK}:{port}"
    try:
        down = wait_for_http(f"{url}/health/endtoend", 90, statuses=(503,), process=process, log_path=log_path)
        assert down.json() == {"data": {"services": {"database": False, "storage": True}}, "status_code": 503}
        with httpx.Client(trust_env=False) as client:
            v2 = client.get(f"{url}/v2/")
            assert v2.status_code == 503 and v2.json()["errors"][0]["code"] == "UNAVAILABLE"
            assert client.get(f"{url}/health/instance").status_code == 503

        _pg_ctl_start(pg)  # blocks until PostgreSQL accepts connections
        started = time.monotonic()
        up = wait_for_http(f"{url}/health/endtoend", HEALTHY_WITHIN, statuses=(200,), process=process,
                           log_path=log_path)
        assert up.json() == {"data": {"services": {"database": True, "storage": True}}, "status_code": 200}
        # Every worker gets there (each retries on its own; they migrate under one lock).
        with httpx.Client(trust_env=False) as client:
            streak = 0
            while streak < 20:
                assert time.monotonic() - started < HEALTHY_WITHIN, tail(log_path)
                streak = streak + 1 if client.get(f"{url}/v2/").status_code == 401 else 0
        log_text = log_path.read_text()
        assert "dependencies not ready" in log_text
        assert pg.psql("SELECT version_num FROM alembic_version").strip()
        assert "DuplicateTable" not in log_text and "Traceback" not in log_text  # one worker migrated
    finally:
        _stop_process(process)
        _pg_ctl_stop(pg)
        shutil.rmtree(base, ignore_errors=True)


async def _health(config: dict) -> httpx.Response:
    app = create_app(settings_from_dict(config))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get("/health/endtoend")


async def test_health_reports_redis_when_configured(tmp_path):
    base = {
        "DB_URI": f"sqlite:///{tmp_path / 'q.db'}", "SECRET_KEY": "a", "DATABASE_SECRET_KEY": "b",
        "DISTRIBUTED_STORAGE_CONFIG": {"default": ["LocalStorage", {"storage_path": str(tmp_path / "s")}]},
    }
    with redis_server(tmp_path / "redis") as redis:
        good = await _health({**base, "BUILDLOGS_REDIS": redis.config(), "USER_EVENTS_REDIS": redis.config()})
        assert good.status_code == 200
        assert good.json()["data"]["services"] == {"database": True, "storage": True, "redis": True}
        bad = await _health({**base, "BUILDLOGS_REDIS": redis.config(),
                             "USER_EVENTS_REDIS": redis.config("wrong")})
        assert bad.status_code == 503
        assert bad.json() == {"data": {"services": {"database": True, "storage": True, "redis": True,
                                                    "user_events_redis": False}}, "status_code": 503}
