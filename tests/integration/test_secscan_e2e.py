"""Security scanning end to end, with nothing stubbed: a real `quaymaster registry` (FEATURE_SECURITY_SCANNER,
SECURITY_SCANNER_V4_ENDPOINT and a PSK), the real `quaymaster scanner` loaded with local feed files
by `quaymaster scanner update`, an image pushed with skopeo (a Debian dpkg database and a Python
site-packages layer holding urllib3 1.24.1), and `quaymaster worker securityworker --once`.

The scanner fetches the layers from the registry's /v2 with the pull token the worker minted, and
the security API then shows urllib3's advisories as Quay would; the page lists them too."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
import pytest
import yaml
from support.proc import run
from support.scannerimages import DATA, debian_layer, python_layer
from support.servers import (
    _stop_process,
    free_port,
    quaymaster_binary,
    quaymaster_server,
    wait_for_http,
)

pytestmark = pytest.mark.integration

PSK = base64.b64encode(b"e2e registry-scanner shared key!").decode()
ADMIN, PASSWORD = "admin", "admin-password"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_oci_image(root: Path, layers: list[bytes]) -> str:
    """An OCI layout with one image of these gzip layers; returns the manifest digest."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = _sha(data)
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return digest

    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [_sha(gzip.decompress(layer)) for layer in layers]},
                         "config": {}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(layer),
                    "size": len(layer)} for layer in layers]}).encode()
    digest = put(manifest)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    return digest


def scanner_token() -> str:
    return jwt.encode({"iss": "quay", "exp": int(time.time()) + 300}, base64.b64decode(PSK), algorithm="HS256")


@contextmanager
def running_scanner(data: Path, port: int | None = None):
    """`quaymaster scanner` on loopback with the test feeds loaded; yields its URL and log path."""
    port = port or free_port()
    data.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{data / 'scanner.db'}"
    config = {
        "http_listen_addr": f"127.0.0.1:{port}",
        "indexer": {"connstring": db},
        "matcher": {"connstring": db, "disable_updaters": True},  # fed once below, not in the background
        "notifier": {"connstring": db},
        "updaters": {"sets": ["osv", "debian", "clair.cvss"], "config": {
            "osv": {"url": str(DATA / "osv-pypi")},
            "debian": {"url": f"file://{DATA / 'debian' / 'bookworm-synthetic.json'}"},
            "clair.cvss": {"url": str(DATA / "nvd")},
        }},
        "auth": {"psk": {"key": PSK, "iss": ["quay"]}},
    }
    path = data / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    binary = quaymaster_binary()
    run([binary, "scanner", "update", "--config", str(path)], cwd=data, timeout=120)
    log_path = data / "scanner.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([binary, "scanner", "--config", str(path)], cwd=data, stdout=log,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/robots.txt", 60, statuses=(200,), process=process, log_path=log_path)
        yield url, log_path
    finally:
        _stop_process(process)


@pytest.fixture
def scanner(tmp_path: Path):
    with running_scanner(tmp_path / "scanner") as started:
        yield started


def test_push_index_and_read_the_vulnerabilities(tmp_path: Path, scanner, skopeo) -> None:
    scanner_url, scanner_log = scanner
    # The scanner is protected by the PSK: the registry must sign its requests.
    assert httpx.get(f"{scanner_url}/indexer/api/v1/index_state", trust_env=False).status_code == 401
    state = httpx.get(f"{scanner_url}/indexer/api/v1/index_state", trust_env=False,
                      headers={"Authorization": f"Bearer {scanner_token()}"}).json()["state"]

    layout = tmp_path / "image"
    digest = write_oci_image(layout, [debian_layer().blob, python_layer().blob])
    config = {"FEATURE_SECURITY_SCANNER": True, "SECURITY_SCANNER_V4_ENDPOINT": scanner_url,
              "SECURITY_SCANNER_V4_PSK": PSK}
    with quaymaster_server(tmp_path / "registry", config=config, args=("--no-workers",)) as server:
        server.create_user(ADMIN, PASSWORD, "admin@example.com")
        skopeo.copy(f"oci:{layout}:latest", f"docker://{server.host}/{ADMIN}/pyapp:latest",
                    dest_creds=f"{ADMIN}:{PASSWORD}")

        with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as web:
            r = web.post("/api/v1/signin", json={"username": ADMIN, "password": PASSWORD})
            assert r.status_code == 200, r.text
            security = f"/api/v1/repository/{ADMIN}/pyapp/manifest/{digest}/security?vulnerabilities=true"
            assert web.get(security).json() == {"status": "queued", "data": None}

            out = server.cli("worker", "securityworker", "--once", timeout=300)
            assert "1 indexed" in out, out + server.log_tail() + scanner_log.read_text()[-3000:]

            body = web.get(security).json()
            assert body["status"] == "scanned", body
            layer = body["data"]["Layer"]
            assert layer["Name"] == digest and layer["IndexedByVersion"] == 4
            features = {(f["Name"].lower(), f["Version"]): f for f in layer["Features"]}
            urllib3 = features[("urllib3", "1.24.1")]
            names = {v["Name"] for v in urllib3["Vulnerabilities"]}
            assert "PYSEC-2019-132" in names or "CVE-2019-11236" in names, names
            (advisory,) = [v for v in urllib3["Vulnerabilities"] if v["Name"] in ("PYSEC-2019-132", "CVE-2019-11236")]
            assert advisory["FixedBy"] == "1.24.3"
            assert advisory["Severity"] in ("Low", "Medium", "High", "Critical", "Unknown")
            assert "CVE-2019-11236" in urllib3["CVEIds"] or "CVE-2019-11236" in advisory["Link"] \
                or "CVE-2019-11236" in advisory["Description"], advisory
            # The dpkg database of the first layer was read too.
            assert any(f["AddedBy"] == _sha(debian_layer().blob) for f in layer["Features"]), features.keys()

            # What the UI shows: the column, the summary and the page.
            tags = web.get(f"/repository/{ADMIN}/pyapp?tab=tags").text
            assert "Security scan" in tags and f"/manifest/{digest}/security-summary" in tags
            summary = web.get(f"/repository/{ADMIN}/pyapp/manifest/{digest}/security-summary",
                              headers={"HX-Request": "true"}).text
            assert "unavailable" not in summary and "Passed" not in summary
            page = web.get(f"/repository/{ADMIN}/pyapp/manifest/{digest}/security").text
            assert advisory["Name"] in page and "1.24.3" in page

    assert httpx.get(f"{scanner_url}/indexer/api/v1/index_state", trust_env=False,
                     headers={"Authorization": f"Bearer {scanner_token()}"}).json()["state"] == state

    # The same registry running its workers in-process: a push wakes the securityworker at once
    # (its interval is an hour here, so only the "manifests" event can explain a prompt scan).
    # One server process: without Redis, events reach only the process that published them.
    second = tmp_path / "image2"
    digest2 = write_oci_image(second, [python_layer().blob])
    config["SECURITY_SCANNER_INDEXING_INTERVAL"] = 3600
    with quaymaster_server(tmp_path / "registry", config=config, args=("--workers", "1")) as server:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as web:
            assert web.post("/api/v1/signin", json={"username": ADMIN, "password": PASSWORD}).status_code == 200
            time.sleep(6)  # past the worker's first (startup) pass, so the push's event must wake it
            skopeo.copy(f"oci:{second}:latest", f"docker://{server.host}/{ADMIN}/pyapp:slim",
                        dest_creds=f"{ADMIN}:{PASSWORD}")
            security = f"/api/v1/repository/{ADMIN}/pyapp/manifest/{digest2}/security?vulnerabilities=true"
            deadline = time.monotonic() + 30
            while (body := web.get(security).json())["status"] != "scanned":
                assert time.monotonic() < deadline, body
                time.sleep(0.3)
            names = {v["Name"] for f in body["data"]["Layer"]["Features"] for v in f["Vulnerabilities"]}
            assert names & {"PYSEC-2019-132", "CVE-2019-11236"}, names
        log = server.log_path.read_text()
        assert "securityworker: indexed " + digest2 in log
        # The first image keeps its status: same scanner state, so it is not sent again.
        assert "securityworker: indexed " + digest not in log


def test_registry_started_before_its_scanner_becomes_healthy_and_scans(tmp_path: Path, skopeo) -> None:
    """The seed guide's crash loop, done right: the registry comes up while the scanner is still
    down, says so on /health/endtoend (but stays in service on /health/instance), and once the
    scanner appears turns healthy and scans what was pushed meanwhile, without a restart."""
    port = free_port()
    scanner_url = f"http://127.0.0.1:{port}"
    config = {"FEATURE_SECURITY_SCANNER": True, "SECURITY_SCANNER_V4_ENDPOINT": scanner_url,
              "SECURITY_SCANNER_V4_PSK": PSK, "SECURITY_SCANNER_INDEXING_INTERVAL": 1}
    layout = tmp_path / "image"
    digest = write_oci_image(layout, [python_layer().blob])
    with quaymaster_server(tmp_path / "registry", config=config, args=("--workers", "1")) as server:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as web:
            down = web.get("/health/endtoend")
            assert down.status_code == 503
            assert down.json()["data"]["services"] == {"database": True, "storage": True,
                                                       "security_scanner": False}
            instance = web.get("/health/instance")
            assert instance.status_code == 200 and instance.json()["data"]["services"]["security_scanner"] is False

            server.create_user(ADMIN, PASSWORD, "admin@example.com")
            skopeo.copy(f"oci:{layout}:latest", f"docker://{server.host}/{ADMIN}/early:latest",
                        dest_creds=f"{ADMIN}:{PASSWORD}")
            assert web.post("/api/v1/signin", json={"username": ADMIN, "password": PASSWORD}).status_code == 200
            security = f"/api/v1/repository/{ADMIN}/early/manifest/{digest}/security?vulnerabilities=true"
            assert web.get(security).json()["status"] == "queued"

            with running_scanner(tmp_path / "scanner", port):
                deadline = time.monotonic() + 30
                while web.get("/health/endtoend").status_code != 200:
                    assert time.monotonic() < deadline, server.log_tail()
                    time.sleep(0.5)
                while (body := web.get(security).json())["status"] != "scanned":
                    assert time.monotonic() < deadline + 30, (body, server.log_tail())
                    time.sleep(0.5)
            names = {v["Name"] for f in body["data"]["Layer"]["Features"] for v in f["Vulnerabilities"]}
            assert names & {"PYSEC-2019-132", "CVE-2019-11236"}, names
