"""The real `quaymaster scanner` process, driven the way Quay drives Clair v4."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import jwt
import pytest
import yaml
from support.clairschema import validate
from support.scannerimages import DATA, blob_server, debian_layer, python_layer
from support.servers import free_port, quaymaster_binary, tail, wait_for_http

pytestmark = pytest.mark.integration

PSK = b"integration-pre-shared-key-bytes"
MANIFEST = "sha256:" + "ab" * 32


def quay_headers(key: bytes = PSK, iss: str = "quay", exp_in: int = 300) -> dict[str, str]:
    token = jwt.encode({"iss": iss, "exp": int(time.time()) + exp_in}, key, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def write_config(tmp_path: Path, connstring: str, port: int) -> Path:
    config = {
        "http_listen_addr": f"127.0.0.1:{port}",
        "log_level": "info",
        "indexer": {"connstring": connstring, "airgap": True},
        "matcher": {"connstring": connstring, "disable_updaters": True},
        "notifier": {"connstring": connstring},
        "updaters": {"sets": ["osv", "debian", "clair.cvss"], "config": {
            "osv": {"url": f"file://{DATA / 'osv-pypi'}"},
            "debian": {"url": str(DATA / "debian" / "bookworm-synthetic.json")},
            "clair.cvss": {"url": str(DATA / "nvd" / "nvdcve-2.0-excerpt.json")},
        }},
        "auth": {"psk": {"key": base64.b64encode(PSK).decode(), "iss": ["quay"]}},
        "some_future_key": {"kept": True},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([quaymaster_binary(), "scanner", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(params=["sqlite", "postgres"])
def connstring(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/scanner.db"
    server = request.getfixturevalue("postgres")
    name = "scanner_" + uuid.uuid4().hex[:10]
    server.create_database(name)
    return f"host={server.host} port={server.port} user={server.user} dbname={name}"


def start_scanner(tmp_path: Path, args_for_port, *, cwd: Path | None = None, env: dict | None = None,
                  attempts: int = 3) -> tuple[subprocess.Popen, int, Path]:
    """Start `quaymaster scanner` on a free port; retry if another process took the port first."""
    log_path = tmp_path / "scanner.log"
    for attempt in range(attempts):
        port = free_port()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([quaymaster_binary(), "scanner", *args_for_port(port)], cwd=cwd, env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/readyz", timeout=60, statuses=(200,), process=proc,
                          log_path=log_path)
            return proc, port, log_path
        except RuntimeError:
            if attempt == attempts - 1 or "address already in use" not in log_path.read_text().lower():
                raise
    raise AssertionError("unreachable")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_scanner_service_end_to_end(tmp_path, connstring):
    config_path = tmp_path / "config.yaml"

    def args(port: int) -> list[str]:
        write_config(tmp_path, connstring, port)
        return ["--config", str(config_path)]

    proc, port, log_path = start_scanner(tmp_path, args)
    config = config_path
    base_url = f"http://127.0.0.1:{port}"
    try:
        client = httpx.Client(base_url=base_url, trust_env=False, timeout=120)

        # 401 paths: no token, wrong key, wrong issuer, expired
        path = "/indexer/api/v1/index_state"
        assert client.get(path).status_code == 401
        assert client.get(path, headers=quay_headers(key=b"k" * 32)).status_code == 401
        assert client.get(path, headers=quay_headers(iss="clairctl")).status_code == 401
        assert client.get(path, headers=quay_headers(exp_in=-120)).status_code == 401

        state = client.get(path, headers=quay_headers())
        validate(state.json(), "State")
        etag = state.headers["etag"]
        assert client.get(path, headers={**quay_headers(), "If-None-Match": etag}).status_code == 304

        # Before any update the matcher answers 202 with an empty body.
        early = client.get(f"/matcher/api/v1/vulnerability_report/{MANIFEST}", headers=quay_headers())
        assert early.status_code == 202 and early.content == b""

        update = run_cli("update", "--config", str(config))
        assert update.returncode == 0, update.stderr
        assert "osv: new update operation" in update.stdout and "debian: new update operation" in update.stdout
        again = run_cli("update", "--config", str(config))
        assert again.stdout.count("unchanged") == 3, again.stdout

        base, py = debian_layer(), python_layer()
        with blob_server({base.digest: base.blob, py.digest: py.blob}, token="pull-token") as srv:
            body = {"hash": MANIFEST, "layers": [
                {"hash": layer.digest, "uri": f"{srv.url}/blobs/{layer.digest}",
                 "headers": {"Accept": ["application/gzip"], "Authorization": ["Bearer pull-token"]}}
                for layer in (base, py)]}
            resp = client.post("/indexer/api/v1/index_report", json=body, headers=quay_headers())
            assert resp.status_code == 201, resp.text
            validate(resp.json(), "IndexReport")
            assert resp.json()["state"] == "IndexFinished"
            assert resp.headers["etag"] == etag
            precondition = client.post("/indexer/api/v1/index_report", json=body,
                                       headers={**quay_headers(), "If-None-Match": etag})
            assert precondition.status_code == 412

        got = client.get(f"/indexer/api/v1/index_report/{MANIFEST}", headers=quay_headers())
        validate(got.json(), "IndexReport")
        assert client.get(f"/indexer/api/v1/index_report/{MANIFEST}",
                          headers={**quay_headers(), "If-None-Match": etag}).status_code == 304

        vr = client.get(f"/matcher/api/v1/vulnerability_report/{MANIFEST}", headers=quay_headers())
        assert vr.status_code == 200
        report = vr.json()
        validate(report, "VulnerabilityReport")
        names = {}
        for pid, ids in report["package_vulnerabilities"].items():
            for vid in ids:
                vuln = report["vulnerabilities"][vid]
                validate(vuln, "Vulnerability")
                names.setdefault(report["packages"][pid]["name"], {})[vuln["name"]] = vuln
        assert names["urllib3"]["PYSEC-2019-132"]["fixed_in_version"] == "fixed=1.24.3"
        assert "CVE-2019-11236" in names["urllib3"]["PYSEC-2019-132"]["links"]
        assert "PYSEC-2020-96" in names["pyyaml"]
        coreutils = names["coreutils"]["CVE-2016-2781"]
        assert coreutils["updater"] == "debian" and coreutils["normalized_severity"] == "Medium"
        [mapping] = next(iter(report["enrichments"].values()))
        assert mapping[coreutils["id"]][0]["baseScore"] == 6.5

        # Quay's notification GET for an unknown set is a 404, which it treats as "gone".
        missing = client.get(f"/notifier/api/v1/notification/{uuid.uuid4()}", headers=quay_headers())
        assert missing.status_code == 404 and missing.json()["code"] == "not-found"
        assert client.get("/robots.txt").status_code == 200

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, tail(log_path)
    finally:
        stop(proc)


def test_bad_config_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"matcher": {"period": "whenever"}, "indexer": {"connstring": "sqlite:///x.db"}}))
    result = run_cli("--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "matcher.period" in result.stderr


def test_runs_without_a_config(tmp_path):
    """Embedded default: combo mode, SQLite under ./quaymaster-scanner-data/, the default feeds, no
    auth. The feeds' hosts are unreachable here (a proxy that refuses): the updaters fail, are logged,
    and the service answers anyway."""
    env = {k: v for k, v in os.environ.items() if k not in ("CLAIR_CONF", "CLAIR_MODE", "NO_PROXY", "no_proxy")}
    env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")  # discard port: refused
    proc, port, log_path = start_scanner(tmp_path, lambda port: ["--http-listen-addr", f"127.0.0.1:{port}"],
                                         cwd=tmp_path, env=env)
    try:
        state = httpx.get(f"http://127.0.0.1:{port}/indexer/api/v1/index_state", trust_env=False)
        assert state.status_code == 200
        assert (tmp_path / "quaymaster-scanner-data" / "scanner.db").is_file()
        deadline = time.monotonic() + 30
        while not all(f"updater {name} failed" in log_path.read_text() for name in ("osv", "debian", "alpine")):
            assert time.monotonic() < deadline, tail(log_path)
            time.sleep(0.2)
        report = httpx.get(f"http://127.0.0.1:{port}/matcher/api/v1/vulnerability_report/sha256:{'0' * 64}",
                           trust_env=False)
        assert report.status_code == 202  # no feed has loaded yet
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, tail(log_path)
    finally:
        stop(proc)
