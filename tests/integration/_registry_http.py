"""Raw /v2 HTTP against a running Quaymaster, for what the CLIs hide (statuses, headers)."""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])


@dataclass(frozen=True)
class Account:
    """A registry user and the password the tests log in with."""

    name: str
    password: str

    @property
    def creds(self) -> str:
        """'user:password' as skopeo's and podman's --creds want it."""
        return f"{self.name}:{self.password}"


def token_response(
    base_url: str, service: str, scope: str | None, account: Account | None
) -> httpx.Response:
    """GET /v2/auth?service=..&scope=.. with Basic auth (or none for anonymous)."""
    params = {"service": service}
    if scope:
        params["scope"] = scope
    auth = (account.name, account.password) if account else None
    return httpx.get(f"{base_url}/v2/auth", params=params, auth=auth, trust_env=False, timeout=30)


def bearer_token(base_url: str, service: str, scope: str | None, account: Account | None) -> str:
    """A bearer token for scope; fails the test with the server's answer if none is issued."""
    response = token_response(base_url, service, scope, account)
    assert response.status_code == 200, f"no token: {response.status_code} {response.text}"
    return str(response.json()["token"])


def v2_client(
    base_url: str,
    service: str,
    account: Account,
    repository: str,
    *,
    actions: str = "pull,push",
    timeout: float = 120.0,
) -> httpx.Client:
    """An httpx client whose requests carry a token for `repository:<repository>:<actions>`."""
    token = bearer_token(base_url, service, f"repository:{repository}:{actions}", account)
    return token_client(base_url, token, timeout=timeout)


def token_client(base_url: str, token: str, *, timeout: float = 120.0) -> httpx.Client:
    """An httpx client that sends `Authorization: Bearer <token>` on every request."""
    return httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
        trust_env=False,
        timeout=timeout,
    )


def upload_blob(client: httpx.Client, repository: str, data: bytes, digest: str) -> None:
    """Monolithic upload (POST ?digest=) of one blob; asserts 201."""
    response = client.post(
        f"/v2/{repository}/blobs/uploads/",
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, f"upload failed: {response.status_code} {response.text}"
    assert response.headers["Docker-Content-Digest"] == digest


def sha256_file(path: Path) -> str:
    """'sha256:<hex>' of a file, read in chunks."""
    hasher = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def verify_oci_blobs(layout_dir: Path, digests: list[str]) -> None:
    """Every digest is present in an OCI layout's blob store and its bytes hash to its name."""
    for digest in digests:
        path = layout_dir / "blobs" / "sha256" / digest.split(":", 1)[1]
        assert path.is_file(), f"{digest} missing from {layout_dir}"
        assert sha256_file(path) == digest, f"{path} does not hash to its name"


def docker_archive_contents(path: Path) -> tuple[str, list[str], list[str]]:
    """(config digest, layer tar digests, RepoTags) of a docker-archive tarball."""
    with tarfile.open(path) as tar:
        manifest = json.loads(_member_bytes(tar, "manifest.json"))
        (entry,) = manifest
        config = "sha256:" + hashlib.sha256(_member_bytes(tar, entry["Config"])).hexdigest()
        layers = [
            "sha256:" + hashlib.sha256(_member_bytes(tar, name)).hexdigest()
            for name in entry["Layers"]
        ]
    return config, layers, list(entry.get("RepoTags") or [])


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    """The content of one regular file in a tar."""
    member = tar.extractfile(name)
    assert member is not None, f"{name} is not a regular file in the archive"
    return member.read()
