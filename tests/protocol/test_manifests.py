"""Manifests of every supported type, indexes, artifacts, referrers, tags and deletes."""

import json
import os

import pytest

from quaymaster.oci import mediatypes as mt

from .v2client import digest_of, error_code

REPO = "alice/app"


@pytest.fixture
async def headers(client):
    return await client.auth(REPO)


@pytest.mark.parametrize("media_type", [mt.OCI_MANIFEST, mt.DOCKER_SCHEMA2_MANIFEST])
async def test_push_and_pull_by_tag_and_digest(client, headers, media_type):
    digest, raw = await client.push_image(REPO, "v1", headers, layers=2, media_type=media_type)
    for ref in ("v1", digest):
        r = await client.http.get(f"/v2/{REPO}/manifests/{ref}", headers={**headers, "Accept": media_type})
        assert r.status_code == 200 and r.content == raw
        assert r.headers["Content-Type"] == media_type
        assert r.headers["Docker-Content-Digest"] == digest
        r = await client.http.head(f"/v2/{REPO}/manifests/{ref}", headers=headers)
        assert r.status_code == 200 and r.content == b""
        assert r.headers["Content-Length"] == str(len(raw))


async def test_retag_moves_the_tag(client, headers):
    first, _ = await client.push_image(REPO, "latest", headers)
    second, _ = await client.push_image(REPO, "latest", headers)
    r = await client.http.get(f"/v2/{REPO}/manifests/latest", headers=headers)
    assert r.headers["Docker-Content-Digest"] == second
    # The old manifest is no longer tagged, so it is gone from the registry's view.
    r = await client.http.get(f"/v2/{REPO}/manifests/{first}", headers=headers)
    assert r.status_code == 404


async def _put(client, headers, ref, body, media_type=mt.OCI_MANIFEST):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.http.put(f"/v2/{REPO}/manifests/{ref}", content=raw,
                                 headers={**headers, "Content-Type": media_type})


async def test_manifest_error_paths(client, headers):
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    config_digest = await client.upload(REPO, config, headers)
    good = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": []}
    missing = {**good, "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": digest_of(b"nope"), "size": 4}]}
    r = await _put(client, headers, "t", missing)
    assert r.status_code == 400 and error_code(r) == "MANIFEST_BLOB_UNKNOWN"
    r = await _put(client, headers, "t", b"{not json")
    assert r.status_code == 400 and error_code(r) == "MANIFEST_INVALID"
    r = await _put(client, headers, "t", {"schemaVersion": 1, "name": REPO, "tag": "t", "fsLayers": []},
                   mt.DOCKER_SCHEMA1_SIGNED)
    assert r.status_code == 400 and error_code(r) == "MANIFEST_INVALID"
    assert "schema 1" in r.json()["errors"][0]["message"]
    r = await _put(client, headers, "t", {**good, "annotations": {"pad": "x" * 70_000}})
    assert r.status_code == 413 and error_code(r) == "SIZE_INVALID"
    r = await _put(client, headers, digest_of(b"other"), good)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    r = await _put(client, headers, "-bad-tag", good)
    assert r.status_code == 400 and error_code(r) == "TAG_INVALID"
    r = await _put(client, headers, "t", good, "text/plain")
    assert r.status_code == 400 and error_code(r) == "MANIFEST_INVALID"
    r = await _put(client, headers, "t", good)
    assert r.status_code == 201


async def test_unknown_manifest_and_repository(client, headers):
    await client.push_image(REPO, "v1", headers)
    r = await client.http.get(f"/v2/{REPO}/manifests/nope", headers=headers)
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    r = await client.http.get(f"/v2/{REPO}/manifests/{digest_of(b'x')}", headers=headers)
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    r = await client.http.get("/v2/alice/UPPER/manifests/v1", headers=headers)
    assert r.status_code == 400 and error_code(r) == "NAME_INVALID"
    r = await client.http.get("/v2/justone/manifests/v1", headers=headers)
    assert r.status_code == 400 and error_code(r) == "NAME_INVALID"


@pytest.mark.parametrize("index_type,child_type", [(mt.OCI_INDEX, mt.OCI_MANIFEST),
                                                   (mt.DOCKER_MANIFEST_LIST, mt.DOCKER_SCHEMA2_MANIFEST)])
async def test_multi_arch_index(client, headers, index_type, child_type):
    index = {"schemaVersion": 2, "mediaType": index_type, "manifests": []}
    missing = {**index, "manifests": [{"mediaType": child_type, "digest": digest_of(b"absent"), "size": 10,
                                       "platform": {"architecture": "arm64", "os": "linux"}}]}
    r = await _put(client, headers, "multi", missing, index_type)
    assert r.status_code == 400 and error_code(r) == "MANIFEST_BLOB_UNKNOWN"
    for arch in ("amd64", "arm64"):
        digest, raw = await client.push_image(REPO, None, headers, media_type=child_type)
        index["manifests"].append({"mediaType": child_type, "digest": digest, "size": len(raw),
                                   "platform": {"architecture": arch, "os": "linux"}})
    r = await _put(client, headers, "multi", index, index_type)
    assert r.status_code == 201
    r = await client.http.get(f"/v2/{REPO}/manifests/multi", headers=headers)
    assert r.headers["Content-Type"] == index_type
    for child in index["manifests"]:
        r = await client.http.get(f"/v2/{REPO}/manifests/{child['digest']}", headers=headers)
        assert r.status_code == 200


async def test_artifact_with_subject_and_referrers(client, headers):
    subject, raw = await client.push_image(REPO, "v1", headers)
    empty = b"{}"
    empty_digest = await client.upload(REPO, empty, headers)
    blob = os.urandom(200)
    blob_digest = await client.upload(REPO, blob, headers)

    async def push_artifact(artifact_type):
        body = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": artifact_type,
                "config": {"mediaType": mt.OCI_EMPTY, "digest": empty_digest, "size": 2},
                "layers": [{"mediaType": "application/octet-stream", "digest": blob_digest, "size": len(blob)}],
                "subject": {"mediaType": mt.OCI_MANIFEST, "digest": subject, "size": len(raw)},
                "annotations": {"org.example.kind": artifact_type}}
        data = json.dumps(body).encode()
        r = await _put(client, headers, digest_of(data), data)
        assert r.status_code == 201
        assert r.headers["OCI-Subject"] == subject
        return digest_of(data), len(data)

    sbom = await push_artifact("application/vnd.example.sbom")
    sig = await push_artifact("application/vnd.example.signature")
    r = await client.http.get(f"/v2/{REPO}/referrers/{subject}", headers=headers)
    assert r.status_code == 200 and r.headers["Content-Type"] == mt.OCI_INDEX
    index = r.json()
    assert index["mediaType"] == mt.OCI_INDEX and index["schemaVersion"] == 2
    found = {(m["digest"], m["size"], m["artifactType"]) for m in index["manifests"]}
    assert found == {(sbom[0], sbom[1], "application/vnd.example.sbom"),
                     (sig[0], sig[1], "application/vnd.example.signature")}
    assert index["manifests"][0]["annotations"]["org.example.kind"]
    r = await client.http.get(f"/v2/{REPO}/referrers/{subject}", params={"artifactType": "application/vnd.example.sbom"},
                              headers=headers)
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in r.json()["manifests"]] == [sbom[0]]
    # Referrers of an unknown subject: an empty index, not an error.
    r = await client.http.get(f"/v2/{REPO}/referrers/{digest_of(b'none')}", headers=headers)
    assert r.status_code == 200 and r.json()["manifests"] == []
    r = await client.http.get(f"/v2/{REPO}/referrers/sha256:bad", headers=headers)
    assert r.status_code == 400


async def test_artifact_with_custom_config_type(client, headers):
    config = b'{"chart": "demo"}'
    config_digest = await client.upload(REPO, config, headers)
    body = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": config_digest,
                       "size": len(config)}, "layers": []}
    r = await _put(client, headers, "chart", body)
    assert r.status_code == 201


async def test_delete_tag_and_manifest(client, headers, ctx):
    digest, _ = await client.push_image(REPO, "v1", headers)
    await client.push_image(REPO, "v2", headers)
    r = await client.http.delete(f"/v2/{REPO}/manifests/v1", headers=headers)
    assert r.status_code == 202
    r = await client.http.get(f"/v2/{REPO}/manifests/v1", headers=headers)
    assert r.status_code == 404 and error_code(r) == "TAG_EXPIRED"
    r = await client.http.delete(f"/v2/{REPO}/manifests/v1", headers=headers)
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    # Delete by digest ends every tag on it.
    d3, _ = await client.push_image(REPO, "a", headers)
    await _put(client, headers, "b", (await client.http.get(f"/v2/{REPO}/manifests/a", headers=headers)).content)
    r = await client.http.delete(f"/v2/{REPO}/manifests/{d3}", headers=headers)
    assert r.status_code == 202
    for ref in ("a", "b", d3):
        r = await client.http.get(f"/v2/{REPO}/manifests/{ref}", headers=headers)
        assert r.status_code == 404
    r = await client.http.delete(f"/v2/{REPO}/manifests/{d3}", headers=headers)
    assert r.status_code == 404
    # History is kept: the deleted rows are still there for the time machine.
    from sqlalchemy import func, select

    from quaymaster.content.models import Tag

    async with ctx.db.read() as session:
        history = await session.scalar(select(func.count()).select_from(Tag).where(Tag.name == "v1"))
    assert history == 1
