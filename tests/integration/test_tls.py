"""HTTPS from ssl.cert/ssl.key in the config dir, as a user deploys it: a throwaway CA made here,
podman trusting it through a per-test --cert-dir (the machine's trust store is never touched),
plain HTTP still answering /v2 and /health and redirecting browsers, and extra_ca_certs/ trusted
for outbound connections even when SSL_CERT_FILE points elsewhere."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from support.certs import TestCA
from support.clients import Podman
from support.images import rootfs_tarball
from support.proc import CommandError, run
from support.servers import (
    LOOPBACK,
    _stop_process,
    free_port,
    quaymaster_binary,
    tail,
    wait_for_http,
)

pytestmark = pytest.mark.integration

ADMIN, PASSWORD = "quayadmin", "quayadmin-password"


@dataclass
class TlsRegistry:
    ca: TestCA
    config_dir: Path
    http_port: int
    https_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def host(self) -> str:
        return f"localhost:{self.https_port}"

    @property
    def https(self) -> str:
        return f"https://{self.host}"

    @property
    def http(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def verify(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca.cert_pem.decode())


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[TlsRegistry]:
    data = tmp_path_factory.mktemp("tls-registry")
    config_dir = data / "config"
    (config_dir / "extra_ca_certs").mkdir(parents=True)
    ca = TestCA()
    server = ca.issue("localhost", "127.0.0.1")
    (config_dir / "ssl.cert").write_bytes(server.cert_pem)
    (config_dir / "ssl.key").write_bytes(server.key_pem)
    (config_dir / "extra_ca_certs" / "test-ca.crt").write_bytes(ca.cert_pem)
    http_port, https_port = free_port(), free_port()
    (config_dir / "config.yaml").write_text(yaml.safe_dump({
        "SERVER_HOSTNAME": f"localhost:{https_port}", "PREFERRED_URL_SCHEME": "https"}))
    binary = quaymaster_binary()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run([binary, "user", "create", ADMIN, "--email", "admin@example.com", "--password-stdin",
         "--config-dir", str(config_dir)], input=PASSWORD + "\n", env=env)
    log_path = data / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [binary, "registry", "--config-dir", str(config_dir), "--host", LOOPBACK, "--port", str(http_port),
             "--https-port", str(https_port), "--workers", "2"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=data,
            start_new_session=True)
    try:
        wait_for_http(f"http://{LOOPBACK}:{http_port}/v2/", 90, process=process, log_path=log_path)
        reg = TlsRegistry(ca, config_dir, http_port, https_port, process, log_path)
        # Both ports answer once the workers are up.
        with httpx.Client(verify=reg.verify(), trust_env=False) as client:
            assert client.get(f"{reg.https}/health/instance").status_code == 200, tail(log_path)
        yield reg
    finally:
        _stop_process(process)


def test_https_serves_with_the_configured_certificate(registry):
    with httpx.Client(verify=registry.verify(), trust_env=False) as client:
        health = client.get(f"{registry.https}/health/instance")
        assert health.status_code == 200
        assert health.json() == {"data": {"services": {"database": True, "storage": True}}, "status_code": 200}
        ping = client.get(f"{registry.https}/v2/")
        assert ping.status_code == 401
        assert f'realm="{registry.https}/v2/auth"' in ping.headers["www-authenticate"]
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{registry.https}/health/instance", trust_env=False)  # an unknown CA is refused


def test_plain_http_keeps_v2_and_health_and_redirects_browsers(registry):
    with httpx.Client(trust_env=False, follow_redirects=False) as client:
        assert client.get(f"{registry.http}/health/instance").status_code == 200
        assert client.get(f"{registry.http}/health/endtoend").status_code == 200
        assert client.get(f"{registry.http}/v2/").status_code == 401
        page = client.get(f"{registry.http}/repository/x?tab=tags")
        assert page.status_code == 301
        assert page.headers["location"] == f"{registry.https}/repository/x?tab=tags"
        assert client.head(f"{registry.http}/").headers["location"] == f"{registry.https}/"
        assert client.post(f"{registry.http}/api/v1/superuser/users/", json={}).status_code != 301


def test_podman_logs_in_and_pushes_with_the_ca_in_a_cert_dir(registry, tmp_path):
    cert_dir = tmp_path / "certs.d" / registry.host
    cert_dir.mkdir(parents=True)
    (cert_dir / "ca.crt").write_bytes(registry.ca.cert_pem)
    with Podman(tmp_path / "podman") as podman:
        def login(*extra: str) -> str:
            return podman.run("login", "--authfile", str(podman.authfile), "--tls-verify=true", *extra,
                              "--username", ADMIN, "--password-stdin", registry.host, input=PASSWORD + "\n")

        with pytest.raises(CommandError, match="certificate"):
            login()  # without the CA: refused, as it should be
        assert "Login Succeeded" in login("--cert-dir", str(cert_dir))
        ref = f"{registry.host}/{ADMIN}/tls-test:1"
        podman.import_(rootfs_tarball(tmp_path / "rootfs.tar").path, ref)
        podman.run("push", "--authfile", str(podman.authfile), "--tls-verify=true", "--cert-dir", str(cert_dir), ref)
        podman.rmi(ref)
        podman.run("pull", "--quiet", "--authfile", str(podman.authfile), "--tls-verify=true",
                   "--cert-dir", str(cert_dir), ref)
        assert podman.image_exists(ref)


OUTBOUND = """
import json, ssl, sys, urllib.request
import httpx
from quaymaster.settings.tls import install_ca_bundle
url = sys.argv[2]
if sys.argv[1] == "install":
    install_ca_bundle(sys.argv[3])
results = {}
try:
    results["httpx"] = httpx.get(url).status_code
except Exception as exc:
    results["httpx"] = type(exc).__name__
try:
    results["urllib"] = urllib.request.urlopen(url, context=ssl.create_default_context()).status
except Exception as exc:
    results["urllib"] = type(exc).__name__
print(json.dumps(results))
"""


def test_extra_ca_certs_are_trusted_outbound_even_with_ssl_cert_file_set(registry, tmp_path):
    other = tmp_path / "other-ca.pem"
    other.write_bytes(TestCA("Some other CA").cert_pem)
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    env.update(SSL_CERT_FILE=str(other), REQUESTS_CA_BUNDLE=str(other), AWS_CA_BUNDLE=str(other))
    url = f"{registry.https}/health/instance"

    def probe(mode: str) -> dict:
        out = run([sys.executable, "-c", OUTBOUND, mode, url, str(registry.config_dir)], env=env).stdout
        return yaml.safe_load(out)

    assert probe("plain") == {"httpx": "ConnectError", "urllib": "URLError"}
    assert probe("install") == {"httpx": 200, "urllib": 200}


def test_config_validate_trusts_extra_ca_certs_for_the_scanner_endpoint(registry, tmp_path):
    conf = tmp_path / "config"
    conf.mkdir()
    for name in ("ssl.cert", "ssl.key"):
        (conf / name).write_bytes((registry.config_dir / name).read_bytes())
    config = yaml.safe_load((registry.config_dir / "config.yaml").read_text())
    config["SECURITY_SCANNER_V4_ENDPOINT"] = f"{registry.https}/"
    (conf / "config.yaml").write_text(yaml.safe_dump(config))
    binary = quaymaster_binary()
    result = run([binary, "config", "validate", "--config-dir", str(conf)], check=False)
    assert result.returncode == 1
    assert "SECURITY_SCANNER_V4_ENDPOINT: no HTTP answer" in result.stdout
    assert "CERTIFICATE_VERIFY_FAILED" in result.stdout
    (conf / "extra_ca_certs").mkdir()
    (conf / "extra_ca_certs" / "ca.crt").write_bytes(registry.ca.cert_pem)
    result = run([binary, "config", "validate", "--config-dir", str(conf)], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "configuration is valid"


def test_unusable_certificate_stops_the_start_with_one_line(tmp_path):
    conf = tmp_path / "config"
    conf.mkdir()
    ca = TestCA()
    issued, other = ca.issue("localhost"), ca.issue("localhost")
    (conf / "ssl.cert").write_bytes(issued.cert_pem)
    (conf / "ssl.key").write_bytes(other.key_pem)  # not this certificate's key
    (conf / "config.yaml").write_text(yaml.safe_dump({"SERVER_HOSTNAME": "localhost", "PREFERRED_URL_SCHEME": "https"}))
    result = run([quaymaster_binary(), "registry", "--config-dir", str(conf), "--host", LOOPBACK,
                  "--port", str(free_port()), "--https-port", str(free_port())], check=False, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ssl.cert/ssl.key: cannot be used for TLS")
