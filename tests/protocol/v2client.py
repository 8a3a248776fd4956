"""A small hand-driven /v2 client for protocol tests: every request and status is explicit."""

import hashlib
import json
import os

import httpx

from quaymaster.oci import mediatypes as mt

HOST = "registry.test"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class V2Client:
    def __init__(self, http: httpx.AsyncClient):
        self.http = http

    async def token(self, scope: str | None, user: str | None = "alice", password: str | None = None) -> str:
        params = {"service": HOST}
        if scope:
            params["scope"] = scope
        auth = (user, password or f"{user}-password") if user else None
        r = await self.http.get("/v2/auth", params=params, auth=auth)
        assert r.status_code == 200, r.text
        return r.json()["token"]

    async def auth(self, repo: str, actions: str = "pull,push", user: str | None = "alice") -> dict:
        return {"Authorization": f"Bearer {await self.token(f'repository:{repo}:{actions}', user)}"}

    async def upload(self, repo: str, data: bytes, headers: dict) -> str:
        """Monolithic POST ?digest= upload; returns the digest."""
        digest = digest_of(data)
        r = await self.http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data,
                                 headers=headers)
        assert r.status_code == 201, r.text
        return digest

    async def push_image(self, repo: str, tag: str | None, headers: dict, *, layers: int = 1,
                         media_type: str = mt.OCI_MANIFEST, extra: dict | None = None) -> tuple[str, bytes]:
        """Upload a config and random layers, then PUT a manifest; returns (digest, bytes)."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
        config_type = mt.OCI_CONFIG if media_type == mt.OCI_MANIFEST else mt.DOCKER_CONFIG
        layer_type = mt.OCI_LAYER_GZIP if media_type == mt.OCI_MANIFEST else mt.DOCKER_LAYER
        descs = []
        for _ in range(layers):
            blob = os.urandom(1024)
            descs.append({"mediaType": layer_type, "digest": await self.upload(repo, blob, headers),
                          "size": len(blob)})
        body = {
            "schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": await self.upload(repo, config, headers),
                       "size": len(config)},
            "layers": descs, **(extra or {}),
        }
        raw = json.dumps(body).encode()
        digest = digest_of(raw)
        r = await self.http.put(f"/v2/{repo}/manifests/{tag or digest}", content=raw,
                                headers={**headers, "Content-Type": media_type})
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == digest
        return digest, raw


def error_code(response: httpx.Response) -> str:
    return response.json()["errors"][0]["code"]
