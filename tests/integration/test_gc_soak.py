"""Garbage collection under traffic, on PostgreSQL and two replicated S3 locations.

For a bounded time several clients push (sharing layers between their images), retag, delete and
pull while the registry's garbage collector runs with a zero time-machine window. Afterwards every
live tag pulls completely with correct digests, a final collection leaves no unreferenced blob,
and `quaymaster fsck` finds storage and database in agreement.
"""

import asyncio
import hashlib
import json
import os
import random
import re
import subprocess
import time

import httpx
import pytest

from support.s3server import shared_s3_server
from support.servers import quaymaster_server

DURATION_S = 20
CLIENTS = 3
CLAIM_S = 6  # upload claims and temp tags: short, so the final collection can take everything
PASSWORD = "soak-password-123"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Client:
    """One registry user's traffic: its own tags, so the expected final state is known exactly."""

    def __init__(self, http: httpx.AsyncClient, service: str, index: int):
        self.http = http
        self.service = service
        self.index = index
        self.repo = f"soaker/r{index % 2}"
        self.tags = [f"c{index}-t{k}" for k in range(3)]
        self.base_layer = os.urandom(64 * 1024)  # shared by every image this client pushes
        self.expected: dict[str, str | None] = {}
        self.pushed: dict[str, bytes] = {}  # tag -> manifest bytes of its last push
        self.retries = 0
        self.operations = 0
        self._headers: dict[str, str] = {}

    async def auth(self) -> None:
        r = await self.http.get("/v2/auth", params={"service": self.service,
                                                     "scope": f"repository:{self.repo}:pull,push"},
                                auth=("soaker", PASSWORD))
        assert r.status_code == 200, r.text
        self._headers = {"Authorization": f"Bearer {r.json()['token']}"}

    async def _blob(self, data: bytes) -> str | None:
        """Upload unless the registry already has it for this repository (as podman does)."""
        digest = _digest(data)
        if (await self.http.head(f"/v2/{self.repo}/blobs/{digest}", headers=self._headers)).status_code == 200:
            return digest
        r = await self.http.post(f"/v2/{self.repo}/blobs/uploads/", headers=self._headers)
        assert r.status_code == 202, r.text
        r = await self.http.put(r.headers["Location"], params={"digest": digest}, content=data,
                                headers=self._headers)
        if r.status_code == 503:
            return None  # lost a race with the collector: retry the push
        assert r.status_code == 201, r.text
        return digest

    async def push(self, tag: str, manifest: bytes | None = None) -> None:
        for _ in range(6):
            raw = manifest or await self._new_manifest()
            if raw is None:
                self.retries += 1
                continue
            r = await self.http.put(f"/v2/{self.repo}/manifests/{tag}", content=raw,
                                    headers={**self._headers, "Content-Type": OCI_MANIFEST})
            if r.status_code == 201:
                self.expected[tag] = _digest(raw)
                self.pushed[tag] = raw
                await self.check_pull(tag)
                return
            assert r.status_code in (400, 404, 503), r.text
            assert r.json()["errors"][0]["code"] in ("MANIFEST_BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID"), r.text
            self.retries += 1
            manifest = None  # its blobs were collected meanwhile: build it again
        raise AssertionError(f"push of {self.repo}:{tag} kept losing races")

    async def _new_manifest(self) -> bytes | None:
        config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(6).hex()}).encode()
        top = os.urandom(random.choice((512, 4096, 300_000)))
        digests = [await self._blob(b) for b in (config, self.base_layer, top)]
        if None in digests:
            return None
        return json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digests[0],
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": len(b)}
                       for d, b in ((digests[1], self.base_layer), (digests[2], top))],
        }).encode()

    async def check_pull(self, tag: str) -> None:
        """Pull a tag completely and verify every digest."""
        r = await self.http.get(f"/v2/{self.repo}/manifests/{tag}",
                                headers={**self._headers, "Accept": OCI_MANIFEST})
        assert r.status_code == 200, f"{self.repo}:{tag}: {r.text}"
        assert _digest(r.content) == self.expected[tag]
        manifest = json.loads(r.content)
        for desc in [manifest["config"], *manifest["layers"]]:
            blob = await self.http.get(f"/v2/{self.repo}/blobs/{desc['digest']}", headers=self._headers)
            assert blob.status_code == 200, f"{desc['digest']} of {self.repo}:{tag}: {blob.status_code}"
            assert _digest(blob.content) == desc["digest"] and len(blob.content) == desc["size"]

    async def run(self, deadline: float) -> None:
        await self.auth()
        rng = random.Random(self.index)
        while time.monotonic() < deadline:
            tag = rng.choice(self.tags)
            roll = rng.random()
            if roll < 0.6 or not self.pushed:
                await self.push(tag)
            elif roll < 0.8 and self.expected.get(tag):
                r = await self.http.delete(f"/v2/{self.repo}/manifests/{tag}", headers=self._headers)
                assert r.status_code == 202, r.text
                self.expected[tag] = None
            else:  # retag: point this tag at the image another of our tags got
                source = rng.choice(list(self.pushed))
                await self.push(tag, self.pushed[source])
            self.operations += 1


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.postgres
async def test_gc_soak_on_postgres_and_two_replicated_s3_locations(tmp_path, postgres, request, skopeo):
    s3 = shared_s3_server(request)
    s3.client.create_bucket(Bucket="soak-west")
    dsn = postgres.create_database("soak")
    config = {
        "DB_URI": dsn,
        "DISTRIBUTED_STORAGE_CONFIG": {
            "east": ["S3Storage", s3.storage_params("/soak/east")],
            "west": ["S3Storage", s3.storage_params("/soak/west", s3_bucket="soak-west")],
        },
        "DISTRIBUTED_STORAGE_PREFERENCE": ["east", "west"],
        "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS": ["east", "west"],
        "FEATURE_STORAGE_REPLICATION": True,
        "DEFAULT_TAG_EXPIRATION": "0s",
        "TAG_EXPIRATION_OPTIONS": ["0s", "1d"],
        "PUSH_TEMP_TAG_EXPIRATION_SEC": CLAIM_S,
        "GARBAGE_COLLECTION_FREQUENCY": 0.5,
        "FEATURE_USER_CREATION": True,
    }
    with quaymaster_server(tmp_path / "registry", config=config) as server:
        server.create_user("soaker", PASSWORD, "soaker@example.com")
        async with httpx.AsyncClient(base_url=server.url, timeout=60, follow_redirects=True) as http:
            clients = [Client(http, server.host, i) for i in range(CLIENTS)]
            deadline = time.monotonic() + DURATION_S
            await asyncio.gather(*(c.run(deadline) for c in clients))
            during = (await http.get("/metrics")).text

            for client in clients:  # every live tag pulls completely; deleted ones are gone
                await client.auth()
                for tag, digest in client.expected.items():
                    if digest:
                        await client.check_pull(tag)
                    else:
                        r = await http.get(f"/v2/{client.repo}/manifests/{tag}", headers=client._headers)
                        assert r.status_code == 404

            await asyncio.sleep(CLAIM_S + 1)  # let the last upload claims and temp tags expire
            server.cli("gc")
            server.cli("gc")  # a second pass finds nothing left
            unreferenced = postgres.psql(
                "SELECT count(*) FROM blob b WHERE NOT EXISTS (SELECT 1 FROM manifestblob m WHERE m.blob_id = b.id)"
                " AND NOT EXISTS (SELECT 1 FROM uploadedblob u WHERE u.blob_id = b.id)", dbname="soak")
            assert unreferenced.split()[0] == "0", unreferenced
            for client in clients:
                for tag, digest in client.expected.items():
                    if digest:
                        await client.check_pull(tag)
            # A real client follows the 302 to the object store's presigned URL and checks digests.
            repo, tag = next((c.repo, t) for c in clients for t, d in c.expected.items() if d)
            skopeo.copy(f"docker://{server.host}/{repo}:{tag}", f"dir:{tmp_path / 'pulled'}",
                        creds=f"soaker:{PASSWORD}")
            assert (tmp_path / "pulled" / "manifest.json").exists()

            copies = server.cli("worker", "replication", "--once")  # what the worker has not reached yet
            single = postgres.psql(
                "SELECT count(*) FROM blob b WHERE (SELECT count(*) FROM blobplacement p WHERE p.blob_id = b.id) < 2",
                dbname="soak")
            assert single.split()[0] == "0", f"blobs in one location only: {single} ({copies})"
            fsck = subprocess.run([server.binary, "fsck", "--config-dir", str(server.config_dir)],
                                  capture_output=True, text=True, env=server.env, cwd=server.data_dir, timeout=300)
            assert fsck.returncode == 0, fsck.stdout + fsck.stderr

    operations = sum(c.operations for c in clients)
    assert operations >= 10, f"only {operations} operations in {DURATION_S}s"
    assert _metric(during, "quaymaster_gc_blobs_reclaimed_total") > 0, "the collector reclaimed nothing during traffic"
    reclaimed = {k: _metric(during, f"quaymaster_gc_{k}_reclaimed_total") for k in ("tags", "manifests", "blobs")}
    print(f"soak: {operations} operations, {sum(c.retries for c in clients)} retried races, reclaimed {reclaimed}")
