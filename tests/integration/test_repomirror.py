"""Repository mirroring end to end: Debian's docker-registry behind htpasswd as the source, a real
`quaymaster registry` as the destination, and `quaymaster repomirror` doing the syncs with skopeo.

The source holds v1.0, v1.1, v2.0, dev-x and a two-platform index `latest`. acme/mirror mirrors
`v1.*` and `latest` with the source's credentials; acme/armonly mirrors `latest` for arm64 only.
Then a tag disappears at the source (synced by the long-running worker, stopped with SIGTERM), the
password goes wrong, and an administrator tries to push into the mirror.
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from support.certs import TestCA
from support.clients import Skopeo
from support.images import MULTI_ARCH, ImageSpec, OciLayout, host_arch, sha256_digest, write_oci_layout
from support.proc import CommandError, run
from support.servers import (
    DockerRegistry,
    QuaymasterServer,
    docker_registry_config,
    docker_registry_server,
    free_port,
    quaymaster_server,
)

from ._registry_http import Account, v2_client

pytestmark = pytest.mark.integration

ADMIN = Account("admin", "admin-password")
UPSTREAM = Account("puller", "upstream-pass-7d1e")
SOURCE_TAGS = ("v1.0", "v1.1", "v2.0", "dev-x")
MIRROR_API = "/repository/acme/mirror/mirror"


@dataclass
class Setup:
    source: DockerRegistry
    tls_source: str  # host:port of a registry whose certificate only the extra CA vouches for
    server: QuaymasterServer
    api: httpx.Client
    skopeo: Skopeo
    layouts: dict[str, OciLayout]

    def src(self, tag: str) -> str:
        return f"docker://{self.source.host}/upstream/app:{tag}"

    def local(self, repo: str, tag: str) -> str:
        return f"docker://{self.server.host}/acme/{repo}:{tag}"

    def tags(self, repo: str) -> dict[str, str]:
        r = self.api.get(f"/repository/acme/{repo}/tag/", params={"onlyActiveTags": "true", "limit": 100})
        assert r.status_code == 200, r.text
        return {t["name"]: t["manifest_digest"] for t in r.json()["tags"]}

    def mirror(self) -> dict:
        r = self.api.get(MIRROR_API)
        assert r.status_code == 200, r.text
        return r.json()

    def once(self, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = run([self.server.binary, "repomirror", "--once", "--config-dir", str(self.server.config_dir)],
                     env=self.server.env, cwd=self.server.data_dir, timeout=180, check=False)
        if check:
            assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        return result


def _ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else {}


def _mirror_body(source: DockerRegistry, **overrides) -> dict:
    body = {"external_reference": f"{source.host}/upstream/app", "external_registry_username": UPSTREAM.name,
            "external_registry_password": UPSTREAM.password, "sync_interval": 86400,
            "sync_start_date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60)),
            "robot_username": "acme+mirror", "root_rule": {"rule_kind": "tag_glob_csv", "rule_value": ["v1.*", "latest"]},
            "external_registry_config": {"verify_tls": False}, "is_enabled": True}
    body.update(overrides)
    return body


@contextmanager
def tls_registry(directory: Path, ca: TestCA) -> Iterator[str]:
    """docker-registry over HTTPS with a certificate from a private CA; yields host:port."""
    from support.env import find_binary
    from support.servers import LOOPBACK, _stop_process

    binary = find_binary("docker-registry", ["/usr/bin/docker-registry"], hint="install 'docker-registry'")
    directory.mkdir(parents=True)
    issued = ca.issue(LOOPBACK)
    (directory / "cert.pem").write_bytes(issued.cert_pem)
    (directory / "key.pem").write_bytes(issued.key_pem)
    port = free_port()
    config = docker_registry_config(directory / "storage", port)
    config["http"]["tls"] = {"certificate": str(directory / "cert.pem"), "key": str(directory / "key.pem")}
    (directory / "config.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen([binary, "serve", str(directory / "config.yml")], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        trust = ssl.create_default_context(cadata=ca.cert_pem.decode())
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the TLS docker-registry exited"
            try:
                if httpx.get(f"https://{LOOPBACK}:{port}/v2/", verify=trust, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the TLS docker-registry did not answer"
                time.sleep(0.1)
        yield f"{LOOPBACK}:{port}"
    finally:
        _stop_process(process)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("repomirror")
    skopeo = Skopeo(base / "skopeo")
    ca = TestCA("Mirror source CA")
    with docker_registry_server(base / "source", users={UPSTREAM.name: UPSTREAM.password}) as source, \
            tls_registry(base / "tls-source", ca) as tls_source:
        layouts = {tag: write_oci_layout(base / f"layout-{tag}", ImageSpec(host_arch()), ref_name=tag,
                                         seed=f"mirror-{tag}") for tag in SOURCE_TAGS}
        layouts["latest"] = write_oci_layout(base / "layout-latest", MULTI_ARCH, ref_name="latest", seed="mirror-idx")
        for tag, layout in layouts.items():
            skopeo.copy(layout.ref, f"docker://{source.host}/upstream/app:{tag}", all=True, creds=UPSTREAM.creds)
        skopeo.copy(layouts["v2.0"].ref, f"docker://{tls_source}/up/secure:v2.0")
        config = {"FEATURE_USER_INITIALIZE": True, "FEATURE_REPO_MIRROR": True, "REPO_MIRROR_INTERVAL": 1}
        with quaymaster_server(base / "quaymaster", config=config, args=("--no-workers",)) as server:
            (server.config_dir / "extra_ca_certs").mkdir()
            (server.config_dir / "extra_ca_certs" / "mirror-source-ca.crt").write_bytes(ca.cert_pem)
            first = _ok(httpx.post(f"{server.url}/api/v1/user/initialize", trust_env=False, timeout=30, json={
                "username": ADMIN.name, "password": ADMIN.password, "email": "admin@example.com",
                "access_token": True}))
            with httpx.Client(base_url=f"{server.url}/api/v1", trust_env=False, timeout=30,
                              headers={"Authorization": f"Bearer {first['access_token']}"}) as api:
                _ok(api.post("/organization/", json={"name": "acme", "email": "acme@example.com"}), 201)
                _ok(api.put("/organization/acme/robots/mirror"), 201)
                for repo in ("mirror", "armonly", "secure"):
                    _ok(api.post("/repository", json={"namespace": "acme", "repository": repo,
                                                      "visibility": "private", "description": ""}), 201)
                    _ok(api.put(f"/repository/acme/{repo}/changestate", json={"state": "MIRROR"}))
                _ok(api.post(MIRROR_API, json=_mirror_body(source)), 201)
                _ok(api.post("/repository/acme/armonly/mirror", json=_mirror_body(
                    source, root_rule={"rule_kind": "tag_glob_csv", "rule_value": ["latest"]},
                    architecture_filter=["arm64"])), 201)
                _ok(api.post("/repository/acme/secure/mirror", json=_mirror_body(
                    source, external_reference=f"{tls_source}/up/secure", external_registry_username=None,
                    external_registry_password=None, external_registry_config={"verify_tls": True},
                    root_rule={"rule_kind": "tag_glob_csv", "rule_value": ["*"]})), 201)
                yield Setup(source, tls_source, server, api, skopeo, layouts)


def test_first_sync_copies_exactly_the_matching_tags(setup: Setup, tmp_path: Path) -> None:
    result = setup.once()
    lines = sorted(result.stdout.strip().splitlines())
    assert lines == ["acme/armonly: SUCCESS (1 tag(s) synced; 0 deleted)",
                     "acme/mirror: SUCCESS (3 tag(s) synced; 0 deleted)",
                     "acme/secure: SUCCESS (1 tag(s) synced; 0 deleted)"], result.stdout + result.stderr
    assert UPSTREAM.password not in result.stdout + result.stderr

    local = setup.tags("mirror")
    assert sorted(local) == ["latest", "v1.0", "v1.1"]
    for tag, digest in local.items():
        source_bytes = setup.skopeo.manifest_bytes(setup.src(tag), creds=UPSTREAM.creds)
        assert digest == sha256_digest(source_bytes) == setup.layouts[tag].top_digest
    # The index arrived whole: the same bytes, and every platform pulls.
    index = setup.skopeo.manifest_bytes(setup.local("mirror", "latest"), creds=ADMIN.creds)
    assert index == setup.skopeo.manifest_bytes(setup.src("latest"), creds=UPSTREAM.creds)
    out = tmp_path / "pulled"
    setup.skopeo.copy(setup.local("mirror", "latest"), f"oci:{out}:latest", all=True, creds=ADMIN.creds)
    pulled = json.loads((out / "index.json").read_text())["manifests"][0]["digest"]
    assert pulled == setup.layouts["latest"].index_digest
    for digest in setup.layouts["latest"].manifest_digests.values():
        assert (out / "blobs" / "sha256" / digest.split(":", 1)[1]).exists()
    setup.skopeo.copy(setup.local("mirror", "v1.0"), f"oci:{tmp_path / 'v1'}:v1.0", creds=ADMIN.creds)

    mirror = setup.mirror()
    assert mirror["sync_status"] == "SUCCESS" and mirror["sync_retries_remaining"] == 3
    logs = _ok(setup.api.get("/repository/acme/mirror/logs"))["logs"]
    kinds = [entry["kind"] for entry in logs]
    assert kinds.count("repo_mirror_sync_tag_success") == 3
    assert {"repo_mirror_sync_started", "repo_mirror_sync_success"} <= set(kinds)
    pushes = [e for e in logs if e["kind"] == "push_repo"]
    assert pushes and all(e["performer"]["name"] == "acme+mirror" for e in pushes)
    assert UPSTREAM.password not in json.dumps(logs)


def test_a_tls_source_is_trusted_through_extra_ca_certs(setup: Setup) -> None:
    # Verified against the CA in the config dir's extra_ca_certs/, which nothing else trusts.
    with pytest.raises(CommandError, match="(?i)certificate"):
        setup.skopeo.run("list-tags", "--tls-verify=true", f"docker://{setup.tls_source}/up/secure")
    assert setup.tags("secure") == {"v2.0": setup.layouts["v2.0"].top_digest}


def test_architecture_filter_keeps_only_the_wanted_platforms(setup: Setup) -> None:
    local = setup.tags("armonly")
    assert sorted(local) == ["latest"]
    index = json.loads(setup.skopeo.manifest_bytes(setup.local("armonly", "latest"), creds=ADMIN.creds))
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["arm64"]
    assert index["manifests"][0]["digest"] == setup.layouts["latest"].manifest_digests["linux/arm64"]
    assert local["latest"] != setup.layouts["latest"].index_digest  # a filtered index is a new document
    arm = setup.skopeo.inspect(f"docker://{setup.server.host}/acme/armonly@{index['manifests'][0]['digest']}",
                               config=True, creds=ADMIN.creds)
    assert arm["architecture"] == "arm64"


def test_a_tag_removed_at_the_source_goes_away_here(setup: Setup) -> None:
    setup.skopeo.delete(setup.src("v1.1"), creds=UPSTREAM.creds)
    _ok(setup.api.post(MIRROR_API + "/sync-now"), 204)
    # The long-running worker (REPO_MIRROR_INTERVAL is 1 s here) picks it up, then stops on SIGTERM.
    log_path = setup.server.data_dir / "repomirror.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen([setup.server.binary, "repomirror", "--config-dir", str(setup.server.config_dir)],
                                  env=setup.server.env, cwd=setup.server.data_dir, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while setup.mirror()["sync_status"] != "SUCCESS" or "v1.1" in setup.tags("mirror"):
            assert worker.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.3)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, log_path.read_text()
    assert sorted(setup.tags("mirror")) == ["latest", "v1.0"]
    text = log_path.read_text()
    assert "repomirror worker: stopped" in text and UPSTREAM.password not in text
    deleted = [e for e in _ok(setup.api.get("/repository/acme/mirror/logs"))["logs"] if e["kind"] == "delete_tag"]
    assert deleted and deleted[0]["metadata"]["tag"] == "v1.1"


def test_a_wrong_password_fails_and_uses_up_a_retry(setup: Setup) -> None:
    _ok(setup.api.put(MIRROR_API, json={"external_registry_password": "wrong-pass-1234"}), 201)
    _ok(setup.api.post(MIRROR_API + "/sync-now"), 204)
    result = setup.once(check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("acme/mirror: FAIL"), result.stdout
    assert "wrong-pass-1234" not in result.stdout + result.stderr
    mirror = setup.mirror()
    assert (mirror["sync_status"], mirror["sync_retries_remaining"]) == ("FAIL", 2)
    failed = [e for e in _ok(setup.api.get("/repository/acme/mirror/logs"))["logs"]
              if e["kind"] == "repo_mirror_sync_failed"]
    assert failed and "wrong-pass-1234" not in json.dumps(failed)
    assert sorted(setup.tags("mirror")) == ["latest", "v1.0"]  # a failed listing deletes nothing


def test_nobody_but_the_mirror_robot_may_push(setup: Setup) -> None:
    with pytest.raises(CommandError) as refused:
        setup.skopeo.copy(setup.layouts["dev-x"].ref, setup.local("mirror", "sneaky"), creds=ADMIN.creds)
    message = refused.value.stderr.replace('\\"', '"')
    assert "denied" in message.lower() and "only the mirror robot may write" in message
    assert "sneaky" not in setup.tags("mirror")
    with v2_client(setup.server.url, setup.server.host, ADMIN, "acme/mirror") as v2:
        response = v2.post("/v2/acme/mirror/blobs/uploads/")
    assert response.status_code == 403 and response.json()["errors"][0]["code"] == "DENIED"

