"""`quaymaster config <password>` as an administrator uses it: basic auth, the form with its
sections, validation against a real PostgreSQL and redis-server with errors beside their fields,
certificate uploads, and a downloaded quay-config.tar.gz that, unpacked with tar, starts a
registry that reports every dependency healthy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from support.certs import TestCA
from support.env import missing_dependency
from support.redisserver import RedisServer, redis_server
from support.servers import (
    LOOPBACK,
    _stop_process,
    free_port,
    quaymaster_binary,
    wait_for_http,
)

from quaymaster.settings.bundle import read_tarball

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

PASSWORD = "editor-secret"
AUTH = ("quayconfig", PASSWORD)
SECTIONS = ["basic", "server", "database", "redis", "storage", "access", "scanner", "mirroring", "timemachine"]


@dataclass
class Editor:
    url: str
    config_dir: Path
    data_dir: Path
    redis: RedisServer
    db_uri: str

    def client(self, auth=AUTH) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=auth, trust_env=False, timeout=60)


@pytest.fixture(scope="module")
def editor(tmp_path_factory, postgres) -> Iterator[Editor]:
    data = tmp_path_factory.mktemp("editor")
    config_dir = data / "config"
    config_dir.mkdir()
    db_uri = postgres.create_database("editor_db")
    (config_dir / "config.yaml").write_text(yaml.safe_dump({
        "SERVER_HOSTNAME": "localhost:8080", "DB_URI": db_uri, "SECRET_KEY": "k1", "DATABASE_SECRET_KEY": "k2",
        "DISTRIBUTED_STORAGE_CONFIG": {"default": ["LocalStorage", {"storage_path": str(data / "storage")}]},
        "DISTRIBUTED_STORAGE_PREFERENCE": ["default"],
        "SOME_KEY_THE_EDITOR_DOES_NOT_KNOW": {"nested": True},
    }))
    port = free_port()
    with redis_server(data / "redis") as redis:
        log_path = data / "editor.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [quaymaster_binary(), "config", PASSWORD, "--config-dir", str(config_dir), "--host", LOOPBACK,
                 "--port", str(port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=data,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_for_http(f"http://{LOOPBACK}:{port}/", 60, statuses=(401,), process=process, log_path=log_path)
            yield Editor(f"http://{LOOPBACK}:{port}", config_dir, data, redis, db_uri)
        finally:
            _stop_process(process)


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def fieldset(html: str, section: str) -> str:
    return html.split(f'<fieldset id="{section}">', 1)[1].split("</fieldset>", 1)[0]


def form_fields(editor: Editor, **overrides: str) -> dict[str, str]:
    """What a browser submits after the administrator filled in PostgreSQL and Redis."""
    pg = httpx.URL(editor.db_uri)
    fields = {
        "REGISTRY_TITLE": "Example Registry", "REGISTRY_TITLE_SHORT": "Example",
        "SERVER_HOSTNAME": "localhost:8080", "tls_mode": "none",
        "db_type": "postgresql", "db_host": pg.host, "db_port": str(pg.port), "db_name": pg.path.strip("/"),
        "db_user": pg.username, "db_password": "",
        "redis_host": editor.redis.host, "redis_port": str(editor.redis.port), "redis_password": editor.redis.password,
        "storage_driver": "LocalStorage", "local_storage_path": str(editor.data_dir / "storage"),
        "SUPER_USERS": "admin, ops", "FEATURE_USER_CREATION": "on", "AUTHENTICATION_TYPE": "Database",
        "SECURITY_SCANNER_INDEXING_INTERVAL": "30", "REPO_MIRROR_INTERVAL": "60", "REPO_MIRROR_TLS_VERIFY": "on",
        "TAG_EXPIRATION_OPTIONS": "0s, 1d, 1w, 2w", "DEFAULT_TAG_EXPIRATION": "1w",
    }
    fields.update(overrides)
    return fields


def post_form(client: httpx.Client, fields: dict, files: dict | None = None) -> httpx.Response:
    page = client.get("/")
    return client.post("/", data={"csrf": csrf(page.text), **fields},
                       files=files or {"ssl_cert": ("", b"", "application/octet-stream")})


def test_basic_auth_is_required(editor):
    for auth in (None, ("quayconfig", "wrong"), ("admin", PASSWORD), ("quayconfig", PASSWORD + "x")):
        with editor.client(auth=auth) as client:
            response = client.get("/api/v1/config")
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Basic ")
    with editor.client() as client:
        assert client.get("/api/v1/config").status_code == 200


def test_page_shows_every_section_with_the_loaded_values(editor):
    with editor.client() as client:
        html = client.get("/").text
    for section in SECTIONS:
        assert f'<fieldset id="{section}">' in html
    assert 'value="localhost:8080"' in fieldset(html, "server")
    assert "Validate configuration changes" in html and ">Download<" in html


def test_api_reports_config_and_certs_and_validates_against_real_services(editor):
    with editor.client() as client:
        current = client.get("/api/v1/config").json()
        assert current["config"]["SOME_KEY_THE_EDITOR_DOES_NOT_KNOW"] == {"nested": True}
        assert current["certs"] == []
        config = {**current["config"], "BUILDLOGS_REDIS": editor.redis.config(),
                  "USER_EVENTS_REDIS": editor.redis.config()}
        assert client.post("/api/v1/config/validate", json={"config": config}).json() == {"issues": []}

        config["USER_EVENTS_REDIS"] = editor.redis.config("wrong")
        config["DB_URI"] = f"postgresql://postgres@127.0.0.1:{free_port()}/nope"
        issues = client.post("/api/v1/config/validate", json={"config": config}).json()["issues"]
        assert [i["key"] for i in issues] == ["DB_URI", "USER_EVENTS_REDIS"]
        assert "refused the password" in issues[1]["message"]

        # Only JSON: another site's form cannot drive the API with the browser's credentials.
        assert client.post("/api/v1/config/validate", data={"config": "x"}).status_code == 415


def test_form_validation_puts_each_error_beside_its_field(editor):
    with editor.client() as client:
        fields = form_fields(editor, redis_password="wrong", SERVER_HOSTNAME="bad host",
                             DEFAULT_TAG_EXPIRATION="4w", action="validate")
        html = post_form(client, fields).text
        assert "problems found" in html
        # Both Redis keys name the same server: one message, beside the password that was wrong.
        redis_errors = re.findall(r'<p class="field-error"[^>]*>[^<]*', fieldset(html, "redis"))
        assert len(redis_errors) == 1 and 'data-key="BUILDLOGS_REDIS USER_EVENTS_REDIS"' in redis_errors[0]
        assert "refused the password" in redis_errors[0]
        assert fieldset(html, "redis").index('id="error-redis_password"') > fieldset(html, "redis").index(
            'id="redis_password"')
        assert 'data-key="SERVER_HOSTNAME"' in fieldset(html, "server")
        assert 'data-key="DEFAULT_TAG_EXPIRATION"' in fieldset(html, "timemachine")
        assert "data-key" not in fieldset(html, "database")

        html = post_form(client, form_fields(editor, action="validate")).text
        assert 'id="valid"' in html and "data-key" not in html
        saved = client.get("/api/v1/config").json()["config"]
        assert saved["SUPER_USERS"] == ["admin", "ops"]
        assert saved["BUILDLOGS_REDIS"] == saved["USER_EVENTS_REDIS"] == editor.redis.config()
        assert saved["DB_URI"] == editor.db_uri
        assert saved["FEATURE_ANONYMOUS_ACCESS"] is False and saved["REPO_MIRROR_INTERVAL"] == 60
        assert saved["SOME_KEY_THE_EDITOR_DOES_NOT_KNOW"] == {"nested": True}

        # A stale or forged form is refused.
        assert client.post("/", data={"csrf": "forged", **form_fields(editor)}).status_code == 403


def test_mysql_is_refused_by_name_beside_the_database_fields(editor):
    with editor.client() as client:
        fields = form_fields(editor, db_type="mysql", db_host="db.example.com", db_port="", db_user="quay",
                             db_password="pw", db_name="quay", action="validate")
        html = post_form(client, fields).text
        database = fieldset(html, "database")
        assert 'data-key="DB_URI"' in database
        assert "MySQL is not supported by this version; use PostgreSQL" in database
        assert '<option value="mysql" selected>' in database  # the choice is kept for the next try
        assert 'value="db.example.com"' in database
        issues = client.post("/api/v1/config/validate", json={"config": {
            **client.get("/api/v1/config").json()["config"]}}).json()["issues"]
        assert [i["key"] for i in issues] == ["DB_URI"] and "MySQL is not supported" in issues[0]["message"]

        # SQLite chosen without a file: required, shown beside the SQLite field, not the old database kept.
        html = post_form(client, form_fields(editor, db_type="sqlite", sqlite_path="", action="validate")).text
        database = fieldset(html, "database")
        assert '<option value="sqlite" selected>' in database
        assert database.index('data-key="DB_URI"') > database.index('id="sqlite_path"')
        assert "DB_URI" not in client.get("/api/v1/config").json()["config"]

        html = post_form(client, form_fields(editor, action="validate")).text
        assert 'id="valid"' in html


def test_generate_psk(editor):
    with editor.client() as client:
        html = post_form(client, form_fields(editor, action="generate_psk")).text
        psk = re.search(r'name="SECURITY_SCANNER_V4_PSK" value="([^"]+)"', html).group(1)
        import base64

        assert len(base64.b64decode(psk, validate=True)) == 32
        assert client.get("/api/v1/config").json()["config"]["SECURITY_SCANNER_V4_PSK"] == psk


def test_certificate_uploads_and_tls_validation(editor):
    ca = TestCA()
    good, other = ca.issue("registry.example.com"), ca.issue("elsewhere.example.com")
    with editor.client() as client:
        assert client.put("/api/v1/config/certs/extra_ca_certs/corp.crt", content=ca.cert_pem).status_code == 200
        assert client.put("/api/v1/config/certs/..%2F..%2Fetc%2Fpasswd", content=b"x").status_code in (400, 404)
        assert client.put("/api/v1/config/certs/config.yaml", content=b"x").status_code == 400
        fields = form_fields(editor, SERVER_HOSTNAME="registry.example.com", tls_mode="quaymaster", action="validate")
        html = post_form(client, fields, files={"ssl_cert": ("ssl.cert", other.cert_pem),
                                                "ssl_key": ("ssl.key", other.key_pem)}).text
        assert "not valid for SERVER_HOSTNAME registry.example.com" in fieldset(html, "server")
        html = post_form(client, fields, files={"ssl_cert": ("ssl.cert", good.cert_pem),
                                                "ssl_key": ("ssl.key", good.key_pem)}).text
        assert 'id="valid"' in html, html.split('id="issues"')[-1][:2000]
        assert client.get("/api/v1/config").json()["certs"] == ["extra_ca_certs/corp.crt", "ssl.cert", "ssl.key"]
        bundle = read_tarball(client.post("/api/v1/config/download", json={}).content)
        assert bundle.files["ssl.cert"] == good.cert_pem and bundle.config["PREFERRED_URL_SCHEME"] == "https"
        # Back to plain HTTP: the certificates leave the bundle, the extra CA stays.
        post_form(client, form_fields(editor, action="validate"))
        assert client.get("/api/v1/config").json()["certs"] == ["extra_ca_certs/corp.crt"]
        assert client.delete("/api/v1/config/certs/extra_ca_certs/corp.crt").status_code == 200


def test_downloaded_bundle_starts_a_healthy_registry(editor, tmp_path):
    with editor.client() as client:
        response = post_form(client, form_fields(editor, action="download"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    assert 'filename="quay-config.tar.gz"' in response.headers["content-disposition"]
    archive = tmp_path / "quay-config.tar.gz"
    archive.write_bytes(response.content)

    if not shutil.which("tar"):
        missing_dependency("tar not installed")
    config_dir = tmp_path / "deploy" / "config"
    config_dir.mkdir(parents=True)
    subprocess.run(["tar", "xvf", str(archive)], cwd=config_dir, check=True, capture_output=True)
    config = yaml.safe_load((config_dir / "config.yaml").read_text())
    assert config["SOME_KEY_THE_EDITOR_DOES_NOT_KNOW"] == {"nested": True}
    assert config["REGISTRY_TITLE"] == "Example Registry"
    assert config["SECRET_KEY"] == "k1"  # secrets carried over, so every node shares them

    port = free_port()
    log_path = tmp_path / "registry.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [quaymaster_binary(), "registry", "--config-dir", str(config_dir), "--host", LOOPBACK,
             "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        health = wait_for_http(f"http://{LOOPBACK}:{port}/health/instance", 90, statuses=(200,), process=process,
                               log_path=log_path)
        assert health.json()["data"]["services"] == {"database": True, "storage": True, "redis": True}
    finally:
        _stop_process(process)


def test_form_mapping_for_other_databases_and_s3():
    from quaymaster.configeditor.form import apply_form, default_config, form_values

    config = {**default_config(), "DISTRIBUTED_STORAGE_CONFIG": {
        "default": ["LocalStorage", {"storage_path": "storage"}],
        "eu": ["S3Storage", {"s3_bucket": "eu-bucket"}]}, "DISTRIBUTED_STORAGE_PREFERENCE": ["default", "eu"]}
    values = form_values(config, {})
    fields = {k: ("on" if v is True else "" if v is False else str(v)) for k, v in values.items()}
    fields.update(db_type="mysql", db_host="db.example.com", db_user="quay", db_password="p@ss/word", db_name="quay",
                  storage_driver="S3Storage", s3_bucket="registry", s3_region="us-east-1", s3_access_key="AK",
                  s3_secret_key="SK", s3_endpoint_url="https://s3.example.com", s3_storage_path="/registry")
    out = apply_form(config, fields)
    assert out["DB_URI"] == "mysql+pymysql://quay:p%40ss%2Fword@db.example.com:3306/quay"
    assert out["DISTRIBUTED_STORAGE_CONFIG"]["default"] == ["S3Storage", {
        "s3_bucket": "registry", "storage_path": "/registry", "s3_access_key": "AK", "s3_secret_key": "SK",
        "s3_region": "us-east-1", "endpoint_url": "https://s3.example.com"}]
    assert out["DISTRIBUTED_STORAGE_CONFIG"]["eu"] == ["S3Storage", {"s3_bucket": "eu-bucket"}]  # untouched
    again = form_values(out, {})
    assert again["db_type"] == "mysql" and again["db_password"] == "p@ss/word" and again["s3_bucket"] == "registry"
    sqlite = apply_form(out, {**fields, "db_type": "sqlite", "sqlite_path": "/var/lib/quaymaster/q.db"})
    assert sqlite["DB_URI"] == "sqlite:////var/lib/quaymaster/q.db"
    assert "LDAP_URI" not in apply_form(config, {**fields, "LDAP_URI": "ldap://x"})  # only with LDAP chosen
    assert apply_form(config, {**fields, "AUTHENTICATION_TYPE": "LDAP", "LDAP_URI": "ldap://x",
                               "LDAP_BASE_DN": "dc=example, dc=org"})["LDAP_BASE_DN"] == ["dc=example", "dc=org"]


def test_each_issue_is_placed_beside_the_field_that_sets_its_key():
    from quaymaster.configeditor.app import group_issues
    from quaymaster.configeditor.form import (
        default_config,
        field_for_issue,
        form_values,
    )
    from quaymaster.settings.validators import ValidationIssue

    sqlite = form_values(default_config(), {})
    postgres = form_values({**default_config(), "DB_URI": "postgresql://quay@db/quay"}, {})
    assert field_for_issue("DB_URI", "required", sqlite) == "sqlite_path"
    assert field_for_issue("DB_URI", "cannot connect: connection refused", postgres) == "db_host"
    assert field_for_issue("DB_URI", 'password authentication failed for user "quay"', postgres) == "db_password"
    assert field_for_issue("USER_EVENTS_REDIS.port", "not an integer", postgres) == "redis_port"
    assert field_for_issue("BUILDLOGS_REDIS", "cannot reach Redis at r:6379", postgres) == "redis_host"
    assert field_for_issue("DISTRIBUTED_STORAGE_CONFIG.default", "write failed", postgres) == "local_storage_path"
    assert field_for_issue("DISTRIBUTED_STORAGE_CONFIG.eu", "write failed", postgres) == "storage_driver"
    assert field_for_issue("ssl.key", "does not match", postgres) == "ssl_key"
    assert field_for_issue("TAG_EXPIRATION_OPTIONS.1", "not a duration", postgres) == "TAG_EXPIRATION_OPTIONS"
    assert field_for_issue("SECRET_KEY", "missing", postgres) is None  # listed in the summary only

    message = "127.0.0.1:6379 refused the password"
    problems = group_issues([ValidationIssue("BUILDLOGS_REDIS", message), ValidationIssue("USER_EVENTS_REDIS", message),
                             ValidationIssue("DB_URI", "required")], sqlite)
    assert [(p.keys, p.field) for p in problems] == [(["BUILDLOGS_REDIS", "USER_EVENTS_REDIS"], "redis_password"),
                                                     (["DB_URI"], "sqlite_path")]
