"""Prove the support helpers against Debian's reference registry before trusting them on ours."""

from __future__ import annotations

import json
from pathlib import Path

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
from support.servers import DockerRegistry, docker_registry_server

pytestmark = pytest.mark.integration


def test_skopeo_copies_single_arch_oci_layout(
    tmp_path: Path, skopeo: Skopeo, docker_registry: DockerRegistry
) -> None:
    layout = write_oci_layout(tmp_path / "single", ImageSpec(host_arch(), layers=2), ref_name="v1")
    dest = f"docker://{docker_registry.host}/support/single:v1"

    skopeo.copy(layout.ref, dest)

    served = skopeo.manifest_bytes(dest)
    assert sha256_digest(served) == layout.top_digest
    manifest = json.loads(served)
    assert [layer["digest"] for layer in manifest["layers"]] == layout.layer_digests
    assert skopeo.list_tags(f"docker://{docker_registry.host}/support/single") == ["v1"]
    config = skopeo.inspect(dest, config=True)
    assert config["rootfs"]["diff_ids"] == list(layout.images[f"linux/{host_arch()}"].diff_ids)

    skopeo.delete(dest)
    assert skopeo.list_tags(f"docker://{docker_registry.host}/support/single") == []


def test_skopeo_copies_multi_arch_index_and_selects_arm64(
    tmp_path: Path, skopeo: Skopeo, docker_registry: DockerRegistry
) -> None:
    layout = write_oci_layout(tmp_path / "multi", MULTI_ARCH, ref_name="multi")
    dest = f"docker://{docker_registry.host}/support/multi:latest"

    skopeo.copy(layout.ref, dest, all=True)

    index_bytes = skopeo.manifest_bytes(dest)
    assert sha256_digest(index_bytes) == layout.index_digest
    index = json.loads(index_bytes)
    assert index["mediaType"] == OCI_INDEX
    assert {m["digest"] for m in index["manifests"]} == set(layout.manifest_digests.values())

    out = tmp_path / "arm64-out"
    skopeo.copy(dest, f"oci:{out}:arm", override_arch="arm64")

    (copied,) = read_oci_layout_manifests(out)
    assert copied["digest"] == layout.manifest_digests["linux/arm64"]
    assert copied["annotations"]["org.opencontainers.image.ref.name"] == "arm"


def test_skopeo_copies_docker_archive(
    tmp_path: Path, skopeo: Skopeo, docker_registry: DockerRegistry
) -> None:
    archive = write_docker_archive(tmp_path / "image.tar", "support/archive:v1", layers=2)
    dest = f"docker://{docker_registry.host}/support/archive:v1"

    skopeo.copy(archive.ref, dest)

    manifest = skopeo.inspect(dest, raw=True)
    assert manifest["config"]["digest"] == archive.config_digest
    assert skopeo.inspect(dest, config=True)["rootfs"]["diff_ids"] == list(archive.diff_ids)


def test_podman_import_tag_push_rmi_pull(
    tmp_path: Path, podman: Podman, docker_registry: DockerRegistry
) -> None:
    assert podman.images() == [], "podman storage must be private to each test"
    tarball = rootfs_tarball(tmp_path / "rootfs.tar")
    local = "localhost/support/imported:latest"
    remote = f"{docker_registry.host}/support/imported:v1"

    image_id = podman.import_(tarball.path, local)
    podman.tag(local, remote)
    podman.push(remote)
    podman.rmi(local, remote)
    assert not podman.image_exists(remote)

    pulled_id = podman.pull(remote)

    assert pulled_id == image_id
    assert podman.image_exists(remote)
    assert podman.inspect(remote)["Id"] == image_id


def test_podman_load_docker_archive(
    tmp_path: Path, podman: Podman, skopeo: Skopeo, docker_registry: DockerRegistry
) -> None:
    assert podman.images() == [], "podman storage must be private to each test"
    remote = f"{docker_registry.host}/support/loaded:v1"
    archive = write_docker_archive(tmp_path / "load.tar", remote)

    names = podman.load(archive.path)

    assert remote in names
    assert podman.inspect(remote)["Id"] == archive.image_id
    podman.push(remote)
    assert (
        skopeo.inspect(f"docker://{remote}", raw=True)["config"]["digest"] == archive.config_digest
    )


def test_podman_pull_selects_architecture_from_index(
    tmp_path: Path, podman: Podman, skopeo: Skopeo, docker_registry: DockerRegistry
) -> None:
    layout = write_oci_layout(tmp_path / "multi", MULTI_ARCH)
    remote = f"{docker_registry.host}/support/pick:latest"
    skopeo.copy(layout.ref, f"docker://{remote}", all=True)

    image_id = podman.pull(remote, arch="arm64")

    assert f"sha256:{image_id}" == layout.images["linux/arm64"].config_digest
    assert podman.inspect(remote)["Architecture"] == "arm64"


def test_clients_log_in_to_an_authenticating_registry(
    tmp_path: Path, podman: Podman, skopeo: Skopeo
) -> None:
    with docker_registry_server(tmp_path / "auth-registry", users={"alice": "pw1"}) as registry:
        repo = f"{registry.host}/alice/secure"
        with pytest.raises(CommandError, match="unauthorized"):
            skopeo.list_tags(f"docker://{repo}")

        podman.login(registry.host, "alice", "pw1")
        podman.import_(rootfs_tarball(tmp_path / "rootfs.tar").path, f"{repo}:v1")
        podman.push(f"{repo}:v1")
        podman.logout(registry.host)
        with pytest.raises(CommandError, match="unauthorized"):
            podman.push(f"{repo}:v1")

        skopeo.login(registry.host, "alice", "pw1")
        assert skopeo.list_tags(f"docker://{repo}") == ["v1"]
        layout = write_oci_layout(tmp_path / "single")
        skopeo.copy(layout.ref, f"docker://{repo}:v2", creds="alice:pw1")
        assert sorted(skopeo.list_tags(f"docker://{repo}")) == ["v1", "v2"]
