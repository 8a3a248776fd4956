"""A deployment the way Quay's proof-of-concept guide does it, with a browser in the config editor.

The administrator makes a root CA and a server certificate with openssl, starts
`quaymaster config <password>`, fills every section in the browser against a real PostgreSQL and a
real redis-server with a password, sees each wrong value named beside its field (MySQL, which this
version does not run on, and a wrong Redis password), fixes them, validates, downloads
quay-config.tar.gz, unpacks it with tar, starts `quaymaster registry` on HTTPS from it, creates
the superuser from the shell, and logs in and pushes with podman trusting the CA through a
certs.d directory for the host: TLS verification stays on throughout."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from support.certs import openssl_ca_and_server_cert
from support.clients import Podman
from support.env import missing_dependency
from support.images import rootfs_tarball
from support.proc import CommandError, run
from support.redisserver import redis_server
from support.servers import (
    LOOPBACK,
    _stop_process,
    free_port,
    quaymaster_binary,
    wait_for_http,
)

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails in CI) with the reason
    expect = None

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

EDITOR_PASSWORD = "config-editor-secret"
ADMIN, ADMIN_PASSWORD = "quayadmin", "quayadmin-password-1"


@contextmanager
def serving(argv: list[str], log_path: Path, cwd: Path, ready_url: str, statuses=(200, 401),
            verify: ssl.SSLContext | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run a quaymaster command until the block ends; wait for ready_url first."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=cwd, env=env, start_new_session=True)
    try:
        wait_for_http(ready_url, 60, statuses=statuses, process=process, log_path=log_path)
        yield process
    finally:
        _stop_process(process)


def shot(page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"config-editor-{name}.png"), full_page=True)


def test_editor_bundle_starts_an_https_registry_podman_pushes_to(browser, postgres, tmp_path, screenshots):
    if not shutil.which("openssl"):
        missing_dependency("openssl not installed (Debian package 'openssl')")
    if not shutil.which("tar"):
        missing_dependency("tar not installed")
    binary = quaymaster_binary()
    editor_port, http_port, https_port = free_port(), free_port(), free_port()
    host = f"localhost:{https_port}"

    # The guide's TLS chapter: a root CA, then a server key and CSR it signs, SAN = the hostname.
    pki = openssl_ca_and_server_cert(tmp_path / "pki", "localhost", LOOPBACK)
    db_uri = httpx.URL(postgres.create_database("seed_guide"))
    storage = tmp_path / "storage"
    storage.mkdir()
    editor_url = f"http://{LOOPBACK}:{editor_port}"

    with redis_server(tmp_path / "redis") as redis, serving(
            [binary, "config", EDITOR_PASSWORD, "--host", LOOPBACK, "--port", str(editor_port)],
            tmp_path / "editor.log", tmp_path, f"{editor_url}/", statuses=(401,)):
        context = browser.new_context(base_url=editor_url, viewport={"width": 1280, "height": 900},
                                      accept_downloads=True,
                                      http_credentials={"username": "quayconfig", "password": EDITOR_PASSWORD})
        context.set_default_timeout(20_000)  # each validation really connects to every service
        page = context.new_page()
        try:
            page.goto("/")
            expect(page.locator("h1")).to_contain_text("Quaymaster configuration")
            page.get_by_label("Registry title", exact=True).fill("Seed Guide Registry")
            page.get_by_label("Server hostname").fill(host)
            page.get_by_label("Quaymaster handles TLS").check()
            page.get_by_label(re.compile(r"^Certificate")).set_input_files(str(pki.ssl_cert))
            page.get_by_label(re.compile(r"^Private key")).set_input_files(str(pki.ssl_key))

            # First MySQL, which this version does not run on, and a wrong Redis password.
            page.get_by_label("Database type").select_option("mysql")
            page.get_by_label("Database server").fill(db_uri.host)
            page.get_by_label("Database name").fill("quay")
            page.get_by_label("Username", exact=True).fill("quay")
            page.get_by_label("Redis host").fill(redis.host)
            page.get_by_label("Redis port").fill(str(redis.port))
            page.get_by_label("Redis password").fill("not-the-password")
            page.get_by_label("Storage engine").select_option("LocalStorage")
            page.get_by_label("Local storage path").fill(str(storage))
            page.get_by_label("Super users").fill(ADMIN)
            page.get_by_role("button", name="Validate configuration changes").click()

            expect(page.locator("#issues")).to_contain_text("problems found")
            # Each problem beside its field, naming the key it sets.
            expect(page.locator("#database .field-error")).to_have_text(re.compile(
                r"^DB_URI: .*MySQL is not supported by this version; use PostgreSQL"))
            expect(page.get_by_label("Database server")).to_have_attribute("aria-invalid", "true")
            expect(page.locator("#redis .field-error")).to_have_count(1)  # both Redis keys, one message
            expect(page.locator("#error-redis_password")).to_have_text(re.compile(
                r"^BUILDLOGS_REDIS, USER_EVENTS_REDIS: .* refused the password"))
            expect(page.get_by_label("Redis password")).to_have_attribute("aria-invalid", "true")
            for section in ("basic", "server", "storage", "access"):
                expect(page.locator(f"#{section} .field-error")).to_have_count(0)
            expect(page.get_by_label("Server hostname")).to_have_value(host)  # what was typed stays
            expect(page.locator("#server")).to_contain_text("uploaded")
            shot(page, screenshots, "01-errors-beside-fields")

            # Fixed: the test cluster's PostgreSQL (trust auth, so no password) and the right password.
            page.get_by_label("Database type").select_option("postgresql")
            page.get_by_label("Database server").fill(db_uri.host)
            page.get_by_label("Port", exact=True).fill(str(db_uri.port))
            page.get_by_label("Database name").fill(db_uri.path.strip("/"))
            page.get_by_label("Username", exact=True).fill(db_uri.username)
            page.get_by_label("Redis password").fill(redis.password)
            page.get_by_role("button", name="Validate configuration changes").click()
            expect(page.locator("#valid")).to_be_visible()
            expect(page.locator(".field-error")).to_have_count(0)
            shot(page, screenshots, "02-valid")

            with page.expect_download() as download:
                page.get_by_role("button", name="Download").click()
            assert download.value.suggested_filename == "quay-config.tar.gz"
            archive = tmp_path / "quay-config.tar.gz"
            download.value.save_as(archive)
        finally:
            context.close()

        # Unpack into a fresh config directory, as the guide does, and start from it.
        config_dir = tmp_path / "deploy" / "config"
        config_dir.mkdir(parents=True)
        subprocess.run(["tar", "xf", str(archive)], cwd=config_dir, check=True, capture_output=True)
        assert sorted(p.name for p in config_dir.iterdir()) == ["config.yaml", "extra_ca_certs", "ssl.cert",
                                                                 "ssl.key"]
        assert (config_dir / "ssl.cert").read_bytes() == pki.ssl_cert.read_bytes()
        config = yaml.safe_load((config_dir / "config.yaml").read_text())
        assert config["SERVER_HOSTNAME"] == host and config["PREFERRED_URL_SCHEME"] == "https"
        assert config["DB_URI"] == str(db_uri) and config["SUPER_USERS"] == [ADMIN]
        assert config["BUILDLOGS_REDIS"] == config["USER_EVENTS_REDIS"] == redis.config()
        assert config["REGISTRY_TITLE"] == "Seed Guide Registry"

        trust = ssl.create_default_context(cafile=str(pki.root_ca_pem))
        with serving([binary, "registry", "--config-dir", str(config_dir), "--host", LOOPBACK,
                      "--port", str(http_port), "--https-port", str(https_port), "--workers", "1"],
                     tmp_path / "registry.log", tmp_path / "deploy", f"http://{LOOPBACK}:{http_port}/v2/"):
            with httpx.Client(verify=trust, trust_env=False, timeout=30) as client:
                health = client.get(f"https://{host}/health/instance")
                assert health.json()["data"]["services"] == {"database": True, "storage": True, "redis": True}
                assert client.get(f"https://{host}/v2/").status_code == 401

            created = run([binary, "user", "create", ADMIN, "--email", "admin@example.com", "--password-stdin",
                           "--superuser", "--config-dir", str(config_dir)], input=ADMIN_PASSWORD + "\n",
                          cwd=tmp_path / "deploy").stdout
            assert f"created user {ADMIN}" in created

            # The client side of the guide: the root CA in certs.d/<host>/ca.crt, verification on.
            certs_d = tmp_path / "certs.d" / host
            certs_d.mkdir(parents=True)
            shutil.copyfile(pki.root_ca_pem, certs_d / "ca.crt")
            with Podman(tmp_path / "podman") as podman:
                def login(*extra: str) -> str:
                    return podman.run("login", "--authfile", str(podman.authfile), *extra, "--username", ADMIN,
                                      "--password-stdin", host, input=ADMIN_PASSWORD + "\n")

                with pytest.raises(CommandError, match="certificate"):
                    login()  # the system trust store does not know this CA
                assert "Login Succeeded" in login("--cert-dir", str(certs_d))
                ref = f"{host}/{ADMIN}/seed-guide:1"
                podman.import_(rootfs_tarball(tmp_path / "rootfs.tar").path, ref)
                podman.run("push", "--authfile", str(podman.authfile), "--cert-dir", str(certs_d), ref)

            with httpx.Client(verify=trust, trust_env=False, timeout=30) as client:
                token = client.get(f"https://{host}/v2/auth", auth=(ADMIN, ADMIN_PASSWORD),
                                   params={"service": host, "scope": f"repository:{ADMIN}/seed-guide:pull"})
                tags = client.get(f"https://{host}/v2/{ADMIN}/seed-guide/tags/list",
                                  headers={"Authorization": f"Bearer {token.json()['token']}"})
                assert tags.json()["tags"] == ["1"]
