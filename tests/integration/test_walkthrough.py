"""The new-user walk-through against a real `quaymaster registry` process, on SQLite and PostgreSQL.

Everything goes through podman and skopeo exactly as a user would type it; raw HTTP is used only
to look at what the CLIs hide (the catalog) or to work around a known server bug.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.clients import Podman, Skopeo
from support.images import (
    MULTI_ARCH,
    OCI_INDEX,
    ImageSpec,
    host_arch,
    read_oci_layout_manifests,
    rootfs_tarball,
    sha256_digest,
    write_docker_archive,
    write_oci_layout,
)
from support.proc import CommandError
from support.servers import QuaymasterServer, quaymaster_server

from ._registry_http import (
    Account,
    bearer_token,
    docker_archive_contents,
    sha256_file,
    v2_client,
    verify_oci_blobs,
)

pytestmark = pytest.mark.integration

ADMIN = Account("quayadmin", "quayadmin-password")
OTHER = Account("alice", "alice-password")


@dataclass(frozen=True)
class Registry:
    """One running Quaymaster with two users, shared by every test of this module per backend."""

    server: QuaymasterServer
    backend: str

    @property
    def host(self) -> str:
        """host:port, as typed in image references."""
        return self.server.host

    def ref(self, path: str) -> str:
        """docker:// reference for host/path."""
        return f"docker://{self.host}/{path}"


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """A fresh server per backend: SQLite by default, or a new database on the session cluster."""
    backend: str = request.param
    config: dict[str, str] = {}
    if backend == "postgres":
        postgres = request.getfixturevalue("postgres")
        config["DB_URI"] = postgres.create_database(f"walkthrough_{secrets.token_hex(4)}")
    data_dir = tmp_path_factory.mktemp(f"quaymaster-{backend}")
    with quaymaster_server(data_dir, config=config) as server:
        # Two CLI processes at once: each spends most of its time importing, not writing.
        with ThreadPoolExecutor(max_workers=2) as pool:
            created = [
                pool.submit(server.create_user, ADMIN.name, ADMIN.password, "qa@example.com", True),
                pool.submit(server.create_user, OTHER.name, OTHER.password, "alice@example.com"),
            ]
            for future in created:
                future.result()
        yield Registry(server=server, backend=backend)


def _blob_bytes(layout_dir: Path, digest: str) -> bytes:
    """The exact bytes of a blob in an OCI layout written by the image builders."""
    return (layout_dir / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def test_server_runs_on_the_requested_database(registry: Registry) -> None:
    impl = {"sqlite": "SQLiteImpl", "postgres": "PostgresqlImpl"}[registry.backend]
    assert f"Context impl {impl}" in registry.server.log_path.read_text()


def test_podman_login_import_push_rmi_pull_logout(
    tmp_path: Path, podman: Podman, registry: Registry
) -> None:
    remote = f"{registry.host}/quayadmin/busybox:test"
    local = "localhost/walkthrough/busybox:latest"

    assert "Login Succeeded" in podman.login(registry.host, ADMIN.name, ADMIN.password)
    assert registry.host in json.loads(podman.authfile.read_text())["auths"]

    image_id = podman.import_(rootfs_tarball(tmp_path / "rootfs.tar").path, local)
    podman.tag(local, remote)
    podman.push(remote)
    podman.rmi(local, remote)
    assert not podman.image_exists(remote)
    assert not podman.image_exists(image_id)

    pulled_id = podman.pull(remote)

    assert pulled_id == image_id
    assert podman.inspect(remote)["Id"] == image_id

    podman.logout(registry.host)
    assert registry.host not in json.loads(podman.authfile.read_text())["auths"]
    podman.rmi(remote)
    with pytest.raises(CommandError, match="unauthorized"):
        podman.pull(remote)  # the repository is private and we are logged out


def test_skopeo_docker_archive_in_and_out(
    tmp_path: Path, skopeo: Skopeo, registry: Registry
) -> None:
    archive = write_docker_archive(
        tmp_path / "in.tar", f"{registry.host}/quayadmin/archive:v1", layers=2
    )
    dest = registry.ref("quayadmin/archive:v1")

    skopeo.copy(archive.ref, dest, creds=ADMIN.creds)

    manifest = json.loads(skopeo.manifest_bytes(dest, creds=ADMIN.creds))
    assert manifest["config"]["digest"] == archive.config_digest
    assert len(manifest["layers"]) == 2
    config = skopeo.inspect(dest, config=True, creds=ADMIN.creds)
    assert config["rootfs"]["diff_ids"] == list(archive.diff_ids)

    out = tmp_path / "out.tar"
    skopeo.copy(dest, f"docker-archive:{out}:quayadmin/archive:v1", creds=ADMIN.creds)

    config_digest, layer_digests, _ = docker_archive_contents(out)
    assert config_digest == archive.config_digest
    assert layer_digests == list(archive.diff_ids)


def test_skopeo_oci_layout_in_and_out(tmp_path: Path, skopeo: Skopeo, registry: Registry) -> None:
    layout = write_oci_layout(tmp_path / "in", ImageSpec(host_arch(), layers=2), ref_name="v1")
    (image,) = layout.images.values()
    dest = registry.ref("quayadmin/oci:v1")

    skopeo.copy(layout.ref, dest, creds=ADMIN.creds)

    served = skopeo.manifest_bytes(dest, creds=ADMIN.creds)
    assert sha256_digest(served) == layout.top_digest
    assert [layer["digest"] for layer in json.loads(served)["layers"]] == layout.layer_digests
    assert skopeo.list_tags(registry.ref("quayadmin/oci"), creds=ADMIN.creds) == ["v1"]

    out = tmp_path / "out"
    skopeo.copy(dest, f"oci:{out}:v1", creds=ADMIN.creds)

    (descriptor,) = read_oci_layout_manifests(out)
    assert descriptor["digest"] == layout.top_digest
    verify_oci_blobs(out, [layout.top_digest, image.config_digest, *image.layer_digests])


def test_skopeo_dir_in_and_out(tmp_path: Path, skopeo: Skopeo, registry: Registry) -> None:
    layout = write_oci_layout(tmp_path / "oci", ImageSpec(host_arch(), layers=2), ref_name="v1")
    (image,) = layout.images.values()
    source = tmp_path / "dir-in"
    skopeo.copy(layout.ref, f"dir:{source}")
    assert sha256_file(source / "manifest.json") == layout.top_digest
    dest = registry.ref("quayadmin/dir:v1")

    skopeo.copy(f"dir:{source}", dest, creds=ADMIN.creds)

    assert sha256_digest(skopeo.manifest_bytes(dest, creds=ADMIN.creds)) == layout.top_digest

    out = tmp_path / "dir-out"
    skopeo.copy(dest, f"dir:{out}", creds=ADMIN.creds)

    assert (out / "manifest.json").read_bytes() == (source / "manifest.json").read_bytes()
    for digest in (image.config_digest, *image.layer_digests):
        assert sha256_file(out / digest.split(":", 1)[1]) == digest


def test_multi_arch_index_round_trip(
    tmp_path: Path, skopeo: Skopeo, podman: Podman, registry: Registry
) -> None:
    layout = write_oci_layout(tmp_path / "multi", MULTI_ARCH, ref_name="1")
    assert layout.index_digest is not None
    index_bytes = _blob_bytes(layout.path, layout.index_digest)
    dest = registry.ref("quayadmin/multi:1")

    skopeo.copy(layout.ref, dest, all=True, creds=ADMIN.creds)

    served = skopeo.manifest_bytes(dest, creds=ADMIN.creds)
    assert served == index_bytes
    assert json.loads(served)["mediaType"] == OCI_INDEX
    for arch in ("arm64", "amd64"):
        expected = layout.images[f"linux/{arch}"]
        out = tmp_path / f"out-{arch}"
        skopeo.copy(dest, f"oci:{out}:{arch}", override_arch=arch, creds=ADMIN.creds)
        (descriptor,) = read_oci_layout_manifests(out)
        assert descriptor["digest"] == expected.manifest_digest, arch
        verify_oci_blobs(
            out, [expected.manifest_digest, expected.config_digest, *expected.layer_digests]
        )
        by_digest = registry.ref(f"quayadmin/multi@{expected.manifest_digest}")
        served_platform = skopeo.manifest_bytes(by_digest, creds=ADMIN.creds)
        assert served_platform == _blob_bytes(layout.path, expected.manifest_digest)

    remote = f"{registry.host}/quayadmin/multi:1"
    image_id = podman.pull(remote, arch="arm64", creds=ADMIN.creds)

    assert f"sha256:{image_id}" == layout.images["linux/arm64"].config_digest
    assert podman.inspect(remote)["Architecture"] == "arm64"


def test_private_repository_is_closed_to_other_users_and_anonymous(
    tmp_path: Path, skopeo: Skopeo, registry: Registry
) -> None:
    layout = write_oci_layout(tmp_path / "secret", ref_name="v1")
    private = registry.ref("quayadmin/secret:v1")
    skopeo.copy(layout.ref, private, creds=ADMIN.creds)
    # alice's credentials are good: she can push to her own namespace.
    skopeo.copy(layout.ref, registry.ref("alice/own:v1"), creds=OTHER.creds)

    # alice can neither pull quayadmin's private image nor push into quayadmin's namespace.
    with pytest.raises(CommandError, match="unauthorized"):
        skopeo.copy(private, f"oci:{tmp_path / 'stolen'}:v1", creds=OTHER.creds)
    with pytest.raises(CommandError, match="unauthorized"):
        skopeo.copy(layout.ref, registry.ref("quayadmin/secret:v2"), creds=OTHER.creds)
    with pytest.raises(CommandError, match="unauthorized"):
        skopeo.copy(layout.ref, registry.ref("quayadmin/planted:v1"), creds=OTHER.creds)
    # Nor can anyone without credentials.
    with pytest.raises(CommandError, match="unauthorized"):
        skopeo.copy(private, f"oci:{tmp_path / 'anonymous'}:v1")

    # Nothing alice tried left a trace in quayadmin's namespace.
    assert skopeo.list_tags(registry.ref("quayadmin/secret"), creds=ADMIN.creds) == ["v1"]
    token = bearer_token(registry.server.url, registry.host, "registry:catalog:*", ADMIN)
    catalog = httpx.get(
        f"{registry.server.url}/v2/_catalog",
        headers={"Authorization": f"Bearer {token}"},
        trust_env=False,
    )
    assert catalog.status_code == 200, catalog.text
    repositories = catalog.json()["repositories"]
    assert "quayadmin/secret" in repositories
    assert "quayadmin/planted" not in repositories
    assert "alice/own" not in repositories


@pytest.mark.parametrize("tool", ["podman", "skopeo"])
def test_wrong_password_login_fails_clearly(
    tool: str, skopeo: Skopeo, podman: Podman, registry: Registry
) -> None:
    client = podman if tool == "podman" else skopeo

    with pytest.raises(CommandError) as failure:
        client.login(registry.host, ADMIN.name, "not-the-password")

    message = failure.value.stderr.replace('\\"', '"')  # skopeo logs through logrus, quoting
    assert f'logging into "{registry.host}"' in message
    assert "invalid username/password" in message
    assert json.loads(client.authfile.read_text())["auths"] == {}


def _push_two_tags(
    tmp_path: Path, skopeo: Skopeo, registry: Registry, repo: str
) -> tuple[str, str]:
    """quayadmin/<repo>:keep and :gone pointing at two different images; returns their digests."""
    keep = write_oci_layout(tmp_path / "keep", ref_name="keep")
    gone = write_oci_layout(tmp_path / "gone", ref_name="gone")
    skopeo.copy(keep.ref, registry.ref(f"quayadmin/{repo}:keep"), creds=ADMIN.creds)
    skopeo.copy(gone.ref, registry.ref(f"quayadmin/{repo}:gone"), creds=ADMIN.creds)
    assert sorted(skopeo.list_tags(registry.ref(f"quayadmin/{repo}"), creds=ADMIN.creds)) == [
        "gone",
        "keep",
    ]
    return keep.top_digest, gone.top_digest


def _assert_only_keep_left(skopeo: Skopeo, registry: Registry, repo: str, keep_digest: str) -> None:
    assert skopeo.list_tags(registry.ref(f"quayadmin/{repo}"), creds=ADMIN.creds) == ["keep"]
    # Quay answers TAG_EXPIRED (404) for a deleted tag, which stays in the time machine;
    # skopeo prints that as "unknown: tag 'gone' has expired". MANIFEST_UNKNOWN is fine too.
    with pytest.raises(CommandError, match="manifest unknown|has expired"):
        skopeo.inspect(registry.ref(f"quayadmin/{repo}:gone"), raw=True, creds=ADMIN.creds)
    keep_bytes = skopeo.manifest_bytes(registry.ref(f"quayadmin/{repo}:keep"), creds=ADMIN.creds)
    assert sha256_digest(keep_bytes) == keep_digest


def test_skopeo_delete_removes_the_tag(tmp_path: Path, skopeo: Skopeo, registry: Registry) -> None:
    keep_digest, _ = _push_two_tags(tmp_path, skopeo, registry, "deleteme")

    skopeo.delete(registry.ref("quayadmin/deleteme:gone"), creds=ADMIN.creds)

    _assert_only_keep_left(skopeo, registry, "deleteme", keep_digest)


def test_delete_tag_over_http_then_list_tags(
    tmp_path: Path, skopeo: Skopeo, registry: Registry
) -> None:
    """The same flow with a raw DELETE by tag (a Quay extension) under a pull,push token."""
    keep_digest, _ = _push_two_tags(tmp_path, skopeo, registry, "deletehttp")

    with v2_client(registry.server.url, registry.host, ADMIN, "quayadmin/deletehttp") as client:
        response = client.delete("/v2/quayadmin/deletehttp/manifests/gone")
        assert response.status_code == 202, response.text
        again = client.delete("/v2/quayadmin/deletehttp/manifests/gone")
        assert again.status_code == 404, again.text

    _assert_only_keep_left(skopeo, registry, "deletehttp", keep_digest)
