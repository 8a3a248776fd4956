"""A real `quaymaster registry` with AUTHENTICATION_TYPE: LDAP against a real slapd, driven by podman.

alice exists only in the directory: `podman login` with her LDAP password makes her account, and
she pushes to and pulls from her own namespace. SQLite, the server's default workers (so sign-ins
land on different processes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support.clients import Podman
from support.images import rootfs_tarball
from support.proc import CommandError
from support.servers import QuaymasterServer, quaymaster_server
from support.slapd import ADMINS_GROUP, SlapdServer, slapd_server

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Setup:
    server: QuaymasterServer
    directory: SlapdServer


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with slapd_server() as directory:
        config = {"AUTHENTICATION_TYPE": "LDAP",
                  **directory.quay_config(LDAP_SUPERUSER_FILTER=f"(memberOf={ADMINS_GROUP})")}
        with quaymaster_server(tmp_path_factory.mktemp("quaymaster-ldap"), config=config) as server:
            yield Setup(server, directory)


def test_podman_login_push_and_pull_with_ldap_credentials(tmp_path: Path, podman: Podman, setup: Setup) -> None:
    host = setup.server.host
    with pytest.raises(CommandError, match="(?i)invalid username/password|unauthorized"):
        podman.login(host, "alice", "not-alices-password")
    assert "Login Succeeded" in podman.login(host, "alice", setup.directory.users["alice"])

    local = "localhost/ldap/app:latest"
    image_id = podman.import_(rootfs_tarball(tmp_path / "rootfs.tar").path, local)
    remote = f"{host}/alice/app:v1"
    podman.tag(local, remote)
    podman.push(remote)
    podman.rmi(local, remote)
    assert podman.pull(remote) == image_id

    # The account the login made: alice's email from the directory, and a private repository.
    with httpx.Client(base_url=f"{setup.server.url}/api/v1", trust_env=False, timeout=30) as api:
        r = api.post("/signin", json={"username": "alice", "password": setup.directory.users["alice"]})
        assert r.status_code == 200, r.text
        me = api.get("/user/").json()
        assert (me["username"], me["email"], me["super_user"]) == ("alice", "alice@example.org", False)
        repo = api.get("/repository/alice/app")
        assert repo.status_code == 200, repo.text
        assert repo.json()["is_public"] is False


def test_directory_superuser_over_a_real_server(setup: Setup) -> None:
    with httpx.Client(base_url=f"{setup.server.url}/api/v1", trust_env=False, timeout=30) as api:
        r = api.post("/signin", json={"username": "carol", "password": setup.directory.users["carol"]})
        assert r.status_code == 200, r.text
        assert api.get("/user/").json()["super_user"] is True
        assert api.get("/superuser/users/").status_code == 200
