"""SIGKILL the server in the middle of a push and check nothing half-written is ever served.

Each crash is placed deterministically: the request body is a generator that stops after a known
number of bytes and waits, so the kill always lands while the server is still reading the body.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.clients import Skopeo
from support.images import OciLayout, read_oci_layout_manifests, sha256_digest, write_oci_layout
from support.servers import QuaymasterServer, quaymaster_server

from ._registry_http import (
    MANIFEST_ACCEPT,
    OCI_MANIFEST,
    Account,
    token_client,
    upload_blob,
    v2_client,
    verify_oci_blobs,
)

pytestmark = pytest.mark.integration

ADMIN = Account("quayadmin", "quayadmin-password")
MiB = 1024 * 1024
BIG_BLOB_SIZE = 300 * MiB
STALL_BLOB_AFTER = 64 * MiB  # bytes of the big blob the server holds when it is killed
STALL_MANIFEST_AFTER = 16


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[QuaymasterServer]:
    """One server per backend for the module, with local storage; the tests kill and restart it."""
    backend: str = request.param
    config: dict[str, str] = {}
    if backend == "postgres":
        postgres = request.getfixturevalue("postgres")
        config["DB_URI"] = postgres.create_database(f"crash_{secrets.token_hex(4)}")
    data_dir = tmp_path_factory.mktemp(f"quaymaster-crash-{backend}")
    with quaymaster_server(data_dir, config=config) as running:
        running.create_user(ADMIN.name, ADMIN.password, "quayadmin@example.com", superuser=True)
        yield running


class GatedBody:
    """An iterable request body that pauses after `stall_after` bytes until released.

    Once released it carries on, so the client finds the dead connection on its next write (ending
    early instead would only make the client's own HTTP library complain about the length)."""

    def __init__(self, chunks: Callable[[], Iterator[bytes]], stall_after: int) -> None:
        self._chunks = chunks
        self._stall_after = stall_after
        self.sent = 0
        self.stalled = threading.Event()
        self.release = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks():
            if self.sent >= self._stall_after and not self.release.is_set():
                self.stalled.set()
                self.release.wait(timeout=120)
            yield chunk
            self.sent += len(chunk)


class InFlight(threading.Thread):
    """Runs one request in the background and keeps its response or its exception."""

    def __init__(self, send: Callable[[], httpx.Response]) -> None:
        super().__init__(daemon=True)
        self._send = send
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.response = self._send()
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self.error = exc


@dataclass(frozen=True)
class BigBlob:
    """A 300 MiB blob streamed from one random MiB, so it costs no memory to send twice."""

    block: bytes
    size: int
    digest: str

    @classmethod
    def make(cls, size: int = BIG_BLOB_SIZE) -> BigBlob:
        block = os.urandom(MiB)
        hasher = hashlib.sha256()
        for _ in range(size // MiB):
            hasher.update(block)
        return cls(block=block, size=size, digest="sha256:" + hasher.hexdigest())

    def chunks(self) -> Iterator[bytes]:
        for _ in range(self.size // MiB):
            yield self.block


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _start_upload(client: httpx.Client, repository: str) -> tuple[str, str]:
    """POST a new upload; returns (Location, upload UUID)."""
    response = client.post(f"/v2/{repository}/blobs/uploads/")
    assert response.status_code == 202, response.text
    return response.headers["Location"], response.headers["Docker-Upload-UUID"]


def _kill_mid_request(
    server: QuaymasterServer,
    body: GatedBody,
    request: InFlight,
    ready: Callable[[], bool],
    what: str,
) -> None:
    """Start the request, wait until the server holds the stalled part, SIGKILL, restart."""
    request.start()
    _wait_for(lambda: body.stalled.is_set() and ready(), 60, what)
    time.sleep(0.2)  # let anything still in socket buffers land before the crash
    server.kill()
    assert server.process is not None and server.process.returncode == -signal.SIGKILL
    body.release.set()
    request.join(timeout=60)
    assert not request.is_alive(), "the client never noticed the server died"
    assert request.response is None, (
        f"the request completed before the kill: {request.response.status_code} "
        f"{request.response.text}"
    )
    assert isinstance(request.error, httpx.TransportError), repr(request.error)
    server.restart()


def _assert_tag_pulls(
    skopeo: Skopeo, server: QuaymasterServer, repository: str, layout: OciLayout, out: Path
) -> None:
    """`skopeo copy` tag v1 into an OCI layout; check every digest against what was pushed."""
    skopeo.copy(f"docker://{server.host}/{repository}:v1", f"oci:{out}:v1", creds=ADMIN.creds)
    (descriptor,) = read_oci_layout_manifests(out)
    assert descriptor["digest"] == layout.top_digest
    (image,) = layout.images.values()
    verify_oci_blobs(out, [image.manifest_digest, image.config_digest, *image.layer_digests])


def _blob_bytes(layout: OciLayout, digest: str) -> bytes:
    return (layout.path / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def _octets(size: int) -> dict[str, str]:
    return {"Content-Type": "application/octet-stream", "Content-Length": str(size)}


def test_sigkill_during_blob_upload(
    tmp_path: Path, skopeo: Skopeo, server: QuaymasterServer
) -> None:
    repository = "quayadmin/crash-blob"
    v1 = write_oci_layout(tmp_path / "v1", ref_name="v1")
    skopeo.copy(v1.ref, f"docker://{server.host}/{repository}:v1", creds=ADMIN.creds)
    blob = BigBlob.make()

    with v2_client(server.url, server.host, ADMIN, repository) as client:
        token = client.headers["Authorization"].removeprefix("Bearer ")
        location, upload_id = _start_upload(client, repository)
        partial_file = server.data_dir / "storage" / "uploads" / upload_id
        body = GatedBody(blob.chunks, STALL_BLOB_AFTER)
        patch = InFlight(lambda: client.patch(location, content=body, headers=_octets(blob.size)))
        _kill_mid_request(
            server,
            body,
            patch,
            ready=lambda: _file_size(partial_file) >= STALL_BLOB_AFTER - MiB,
            what="the server to write the first 64 MiB of the upload",
        )

    leftover = partial_file.read_bytes() if partial_file.exists() else b""
    assert len(leftover) < blob.size
    leftover_digest = sha256_digest(leftover)

    # The token from before the crash still works: the signing key is kept in the database.
    with token_client(server.url, token) as client:
        for digest in (blob.digest, leftover_digest):
            head = client.head(f"/v2/{repository}/blobs/{digest}")
            assert head.status_code == 404, (digest, head.status_code, head.headers)
            get = client.get(f"/v2/{repository}/blobs/{digest}")
            assert get.status_code == 404, (digest, get.status_code, get.text)
        assert client.get(f"/v2/{repository}/tags/list").json()["tags"] == ["v1"]
        # Nor can the leftover be mounted: the server starts a fresh upload instead.
        mount = client.post(
            f"/v2/{repository}/blobs/uploads/",
            params={"mount": leftover_digest, "from": repository},
        )
        assert mount.status_code == 202, (mount.status_code, mount.headers)
        assert client.delete(mount.headers["Location"]).status_code == 204

        # The interrupted PATCH never answered 202, so it must have left the upload untouched.
        status = client.get(location)
        assert status.status_code in (204, 404), (status.status_code, status.text)
        if status.status_code == 204:
            assert status.headers["Range"] == "0-0", status.headers
            # Completing the stale upload with the bytes that reached the disk must not work.
            finish = client.put(location, params={"digest": leftover_digest})
            assert finish.status_code != 201, finish.headers
            assert client.head(f"/v2/{repository}/blobs/{leftover_digest}").status_code == 404

        _assert_tag_pulls(skopeo, server, repository, v1, tmp_path / "v1-out")

        # A client retrying from scratch gets the whole blob in.
        location, _ = _start_upload(client, repository)
        patched = client.patch(location, content=blob.chunks(), headers=_octets(blob.size))
        assert patched.status_code == 202, patched.text
        assert patched.headers["Range"] == f"0-{blob.size - 1}"
        finish = client.put(patched.headers["Location"], params={"digest": blob.digest})
        assert finish.status_code == 201, finish.text
        assert finish.headers["Docker-Content-Digest"] == blob.digest

        head = client.head(f"/v2/{repository}/blobs/{blob.digest}")
        assert head.status_code == 200, head.headers
        assert int(head.headers["Content-Length"]) == blob.size
        assert head.headers["Docker-Content-Digest"] == blob.digest
        hasher = hashlib.sha256()
        size = 0
        with client.stream("GET", f"/v2/{repository}/blobs/{blob.digest}") as download:
            assert download.status_code == 200
            for chunk in download.iter_bytes(MiB):
                hasher.update(chunk)
                size += len(chunk)
        assert (size, "sha256:" + hasher.hexdigest()) == (blob.size, blob.digest)


def test_sigkill_during_manifest_put(
    tmp_path: Path, skopeo: Skopeo, server: QuaymasterServer
) -> None:
    repository = "quayadmin/crash-manifest"
    old = write_oci_layout(tmp_path / "old", ref_name="v1")
    new = write_oci_layout(tmp_path / "new", ref_name="v1")
    skopeo.copy(old.ref, f"docker://{server.host}/{repository}:v1", creds=ADMIN.creds)
    (new_image,) = new.images.values()
    old_manifest = _blob_bytes(old, old.top_digest)
    new_manifest = _blob_bytes(new, new.top_digest)

    with v2_client(server.url, server.host, ADMIN, repository) as client:
        for digest in (new_image.config_digest, *new_image.layer_digests):
            upload_blob(client, repository, _blob_bytes(new, digest), digest)
        halves = [new_manifest[:STALL_MANIFEST_AFTER], new_manifest[STALL_MANIFEST_AFTER:]]
        body = GatedBody(lambda: iter(halves), STALL_MANIFEST_AFTER)
        headers = {"Content-Type": OCI_MANIFEST, "Content-Length": str(len(new_manifest))}
        put = InFlight(
            lambda: client.put(f"/v2/{repository}/manifests/v1", content=body, headers=headers)
        )
        # Nothing on disk shows that the server has read the first bytes; give it a moment.
        started = time.monotonic()
        _kill_mid_request(
            server,
            body,
            put,
            ready=lambda: time.monotonic() - started > 0.5,
            what="the manifest PUT to start",
        )

    accept = {"Accept": MANIFEST_ACCEPT}
    with v2_client(server.url, server.host, ADMIN, repository) as client:
        served = client.get(f"/v2/{repository}/manifests/v1", headers=accept)
        assert served.status_code == 200, served.text
        assert served.headers["Docker-Content-Digest"] == old.top_digest
        assert served.content == old_manifest
        missing = client.get(f"/v2/{repository}/manifests/{new.top_digest}", headers=accept)
        assert missing.status_code == 404, (missing.status_code, missing.text)
        assert client.get(f"/v2/{repository}/tags/list").json()["tags"] == ["v1"]
        # The blobs committed before the crash survive it.
        for digest in (new_image.config_digest, *new_image.layer_digests):
            assert client.head(f"/v2/{repository}/blobs/{digest}").status_code == 200, digest

    _assert_tag_pulls(skopeo, server, repository, old, tmp_path / "old-out")

    skopeo.copy(new.ref, f"docker://{server.host}/{repository}:v1", creds=ADMIN.creds)

    ref = f"docker://{server.host}/{repository}:v1"
    assert skopeo.manifest_bytes(ref, creds=ADMIN.creds) == new_manifest
    _assert_tag_pulls(skopeo, server, repository, new, tmp_path / "new-out")
