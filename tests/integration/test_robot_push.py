"""Robot accounts and app tokens against a real `quaymaster registry`, driven by podman and skopeo.

Everything is set up the way an administrator would: the first user and an OAuth token from
POST /api/v1/user/initialize, then an organization, a robot, repositories and the robot's
permissions through /api/v1. The robot then logs in with `podman login -u acme+bot` and gets
exactly what it was granted. SQLite only: the API paths are covered on both databases in
tests/api; this checks the clients.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support.clients import Podman, Skopeo
from support.images import rootfs_tarball, sha256_digest, write_oci_layout
from support.proc import CommandError
from support.servers import QuaymasterServer, quaymaster_server

from ._registry_http import Account

pytestmark = pytest.mark.integration

ADMIN = Account("admin", "admin-password")
ROBOT = "acme+bot"


@dataclass(frozen=True)
class Setup:
    """The running registry, an API client holding the admin's token, and the robot's token."""

    server: QuaymasterServer
    api: httpx.Client
    robot_token: str

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def robot(self) -> Account:
        return Account(ROBOT, self.robot_token)


def _ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else {}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data_dir = tmp_path_factory.mktemp("quaymaster-robots")
    with quaymaster_server(data_dir, config={"FEATURE_USER_INITIALIZE": True}) as server:
        first = _ok(httpx.post(f"{server.url}/api/v1/user/initialize", trust_env=False, timeout=30, json={
            "username": ADMIN.name, "password": ADMIN.password, "email": "admin@example.com", "access_token": True}))
        with httpx.Client(base_url=f"{server.url}/api/v1", trust_env=False, timeout=30,
                          headers={"Authorization": f"Bearer {first['access_token']}"}) as api:
            _ok(api.post("/organization/", json={"name": "acme", "email": "acme@example.com"}), 201)
            robot = _ok(api.put("/organization/acme/robots/bot", json={"description": "pushes app"}), 201)
            for repo in ("app", "readonly", "secret"):
                _ok(api.post("/repository", json={"namespace": "acme", "repository": repo,
                                                  "visibility": "private", "description": ""}), 201)
            _ok(api.put(f"/repository/acme/app/permissions/user/{ROBOT}", json={"role": "write"}))
            _ok(api.put(f"/repository/acme/readonly/permissions/user/{ROBOT}", json={"role": "read"}))
            yield Setup(server=server, api=api, robot_token=robot["token"])


@pytest.fixture(scope="module")
def seeded(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """An image in the two repositories the robot may not push to, put there by the admin."""
    skopeo = Skopeo(tmp_path_factory.mktemp("seed-skopeo"))
    layout = write_oci_layout(tmp_path_factory.mktemp("seed") / "layout", seed="robot-push")
    for repo in ("readonly", "secret"):
        skopeo.copy(layout.ref, f"docker://{setup.host}/acme/{repo}:v1", creds=ADMIN.creds)
    return setup


def test_robot_pushes_and_pulls_exactly_what_it_was_granted(
    tmp_path: Path, podman: Podman, seeded: Setup
) -> None:
    host = seeded.host
    perms = _ok(seeded.api.get("/organization/acme/robots/bot/permissions"))["permissions"]
    assert sorted((p["repository"]["name"], p["role"]) for p in perms) == [("app", "write"), ("readonly", "read")]

    assert "Login Succeeded" in podman.login(host, ROBOT, seeded.robot_token)
    local = "localhost/robot/app:latest"
    image_id = podman.import_(rootfs_tarball(tmp_path / "rootfs.tar").path, local)

    remote = f"{host}/acme/app:v1"
    podman.tag(local, remote)
    podman.push(remote)
    podman.rmi(local, remote)
    assert podman.pull(remote) == image_id

    # Read only: pulls work, pushes are refused.
    podman.pull(f"{host}/acme/readonly:v1")
    podman.tag(image_id, f"{host}/acme/readonly:v2")
    with pytest.raises(CommandError, match="(?i)unauthorized"):
        podman.push(f"{host}/acme/readonly:v2")
    # No permission at all: nothing to pull, and no pushing either.
    with pytest.raises(CommandError, match="(?i)unauthorized"):
        podman.pull(f"{host}/acme/secret:v1")
    podman.tag(image_id, f"{host}/acme/secret:v2")
    with pytest.raises(CommandError, match="(?i)unauthorized"):
        podman.push(f"{host}/acme/secret:v2")

    tags = _ok(seeded.api.get("/repository/acme/readonly/tag/"))["tags"]
    assert sorted(t["name"] for t in tags) == ["v1"]


def test_regenerated_robot_token_replaces_the_old_one(tmp_path: Path, podman: Podman, seeded: Setup) -> None:
    _ok(seeded.api.put("/organization/acme/robots/rotating"), 201)
    old = _ok(seeded.api.get("/organization/acme/robots/rotating"))["token"]
    new = _ok(seeded.api.post("/organization/acme/robots/rotating/regenerate"))["token"]
    with pytest.raises(CommandError, match="invalid username/password"):
        podman.login(seeded.host, "acme+rotating", old)
    assert "Login Succeeded" in podman.login(seeded.host, "acme+rotating", new)
    assert (seeded.api.delete("/organization/acme/robots/rotating")).status_code == 204
    with pytest.raises(CommandError, match="invalid username/password"):
        podman.login(seeded.host, "acme+rotating", new)


def test_app_specific_token_logs_in_skopeo(tmp_path: Path, skopeo: Skopeo, seeded: Setup) -> None:
    token = _ok(seeded.api.post("/user/apptoken", json={"title": "skopeo"}))["token"]["token_code"]
    assert "Login Succeeded" in skopeo.login(seeded.host, "$app", token)

    layout = write_oci_layout(tmp_path / "layout", seed="app-token")
    dest = f"docker://{seeded.host}/admin/via-app-token:v1"
    skopeo.copy(layout.ref, dest)
    assert sha256_digest(skopeo.manifest_bytes(dest)) == layout.top_digest
    # The same token reads the organization's repositories the admin owns.
    out = tmp_path / "out"
    skopeo.copy(f"docker://{seeded.host}/acme/secret:v1", f"oci:{out}:v1")
    assert (out / "index.json").exists()
