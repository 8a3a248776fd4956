"""The securityworker on SQLite and PostgreSQL: which manifests it picks, what it sends (layer URLs
our own /v2 serves with the token it mints), retries, and cleanup after garbage collection."""

import hashlib
import json
from datetime import timedelta

import httpx
import pytest
from api.repohelpers import push, push_index
from protocol.v2client import V2Client
from sqlalchemy import func, select, update

from quaymaster.accounts.models import User
from quaymaster.content import gc
from quaymaster.content.models import Manifest, Tag, UploadedBlob
from quaymaster.db.base import now_ms, utcnow
from quaymaster.secscan import service
from quaymaster.secscan.models import IndexStatus, ManifestSecurityStatus, SecscanIndexDeletion
from quaymaster.secscan.worker import SigningKey, index_pass


async def statuses(ctx) -> dict[str, ManifestSecurityStatus]:
    async with ctx.db.read() as session:
        rows = (await session.execute(select(Manifest.digest, ManifestSecurityStatus).join(
            ManifestSecurityStatus, ManifestSecurityStatus.manifest_id == Manifest.id))).all()
    return {digest: row for digest, row in rows}


def tune(ctx, **values) -> None:
    ctx.settings = ctx.settings.model_copy(update=values)


async def test_new_pushes_are_indexed_newest_first_with_layers_the_registry_serves(ctx, http, scanner):
    older = await push(http, "alice/app", "v1", layers=2)
    newer = await push(http, "alice/app", "v2")
    async with scanner.client() as client:
        first = await index_pass(ctx, client, SigningKey(), limit=1)
        assert first.indexed == 1 and scanner.indexed[0]["hash"] == newer
        second = await index_pass(ctx, client, limit=5)
        assert second.indexed == 1 and scanner.indexed[1]["hash"] == older
        assert (await index_pass(ctx, client)).handled == 0  # nothing left
    found = await statuses(ctx)
    assert {d: (s.index_status, s.indexer_hash) for d, s in found.items()} == {
        older: (IndexStatus.COMPLETED, "state-1"), newer: (IndexStatus.COMPLETED, "state-1")}

    # Each layer is our own blob URL with a pull token for that repository, as Quay sends it.
    body = scanner.indexed[1]
    assert len(body["layers"]) == 2
    for layer in body["layers"]:
        assert layer["uri"] == f"http://registry.test/v2/alice/app/blobs/{layer['hash']}"
        assert layer["headers"]["Accept"] == ["application/gzip"]
        headers = {name: values[0] for name, values in layer["headers"].items()}
        fetched = await http.get(layer["uri"].removeprefix("http://registry.test"), headers=headers)
        assert fetched.status_code == 200, fetched.text
        assert "sha256:" + hashlib.sha256(fetched.content).hexdigest() == layer["hash"]
        # The token is good for pulling this repository and nothing more.
        assert (await http.get("/v2/bob/other/blobs/" + layer["hash"], headers=headers)).status_code in (401, 403, 404)


async def test_lists_artifacts_and_large_layers_are_not_sent(ctx, http, scanner):
    child = await push(http, "alice/app", None)
    index = await push_index(http, "alice/app", "multi", [child])
    async with scanner.client() as client:
        tune(ctx, SECURITY_SCANNER_V4_INDEX_MAX_LAYER_SIZE="100")  # our test layers are 512 bytes
        report = await index_pass(ctx, client)
    assert (report.unsupported, report.too_large, report.indexed) == (1, 1, 0)
    assert scanner.indexed == []
    found = await statuses(ctx)
    assert found[index].index_status == IndexStatus.MANIFEST_UNSUPPORTED
    assert found[child].index_status == IndexStatus.MANIFEST_LAYER_TOO_LARGE


async def test_failures_are_retried_after_the_threshold_until_exhausted(ctx, http, scanner):
    digest = await push(http, "alice/app", "v1")
    scanner.fail_index[digest] = httpx.Response(500, json={"code": "internal-error", "message": "layer fetch"})
    async with scanner.client() as client:
        assert (await index_pass(ctx, client)).failed == 1
        row = (await statuses(ctx))[digest]
        assert row.index_status == IndexStatus.FAILED and row.error_json["reason"] == "server_error"
        assert (await index_pass(ctx, client)).handled == 0  # not before the threshold (a day)
        tune(ctx, SECURITY_SCANNER_V4_REINDEX_THRESHOLD=0, SECURITY_SCANNER_MAX_SCAN_RETRIES=3)
        assert (await index_pass(ctx, client)).failed == 1
        assert (await index_pass(ctx, client)).exhausted == 1  # the third failure
        assert (await statuses(ctx))[digest].index_status == IndexStatus.SCAN_RETRIES_EXHAUSTED
        assert (await index_pass(ctx, client)).handled == 0
        assert len(scanner.indexed) == 3
        # A new scanner state (new scanners or versions) earns fresh tries; this one works.
        scanner.state = "state-2"
        del scanner.fail_index[digest]
        assert (await index_pass(ctx, client)).indexed == 1
    row = (await statuses(ctx))[digest]
    assert (row.index_status, row.indexer_hash, row.error_json) == (IndexStatus.COMPLETED, "state-2", None)


async def test_bad_answers_fail_the_manifest_not_the_worker(ctx, http, scanner):
    bad_json = await push(http, "alice/app", "v1")
    index_error = await push(http, "alice/app", "v2")
    scanner.fail_index[bad_json] = httpx.Response(201, content=b"{not json", headers={"ETag": '"state-1"'})
    scanner.fail_index[index_error] = httpx.Response(201, headers={"ETag": '"state-1"'}, json={
        "manifest_hash": index_error, "state": "IndexError", "packages": {}, "distributions": {},
        "environments": {}, "success": False, "err": "fetching layer: 401 Unauthorized"})
    async with scanner.client() as client:
        report = await index_pass(ctx, client)
    assert report.failed == 2
    found = await statuses(ctx)
    assert found[bad_json].error_json["reason"] == "api_failure"
    assert found[index_error].error_json == {"reason": "index_error", "message": "fetching layer: 401 Unauthorized"}


async def test_a_scanner_that_is_down_skips_the_pass(ctx, http, scanner):
    await push(http, "alice/app", "v1")
    scanner.state_answer = httpx.Response(503)
    async with scanner.client() as client:
        report = await index_pass(ctx, client)
    assert report.skipped and report.handled == 0 and await statuses(ctx) == {}


async def test_a_changed_scanner_state_reindexes_after_the_threshold(ctx, http, scanner):
    digest = await push(http, "alice/app", "v1")
    async with scanner.client() as client:
        await index_pass(ctx, client)
        scanner.state = "state-2"
        assert (await index_pass(ctx, client)).handled == 0  # indexed less than a day ago
        async with ctx.db.write() as session:
            await session.execute(update(ManifestSecurityStatus).values(last_indexed=utcnow() - timedelta(days=2)))
        assert (await index_pass(ctx, client)).indexed == 1
    assert (await statuses(ctx))[digest].indexer_hash == "state-2"


async def _collect(ctx, http, repo: str, tag: str) -> None:
    """Delete a tag and let garbage collection take its manifest at once."""
    async with ctx.db.write() as session:
        await session.execute(update(User).values(removed_tag_expiration_s=0))
    headers = await V2Client(http).auth(repo)
    assert (await http.delete(f"/v2/{repo}/manifests/{tag}", headers=headers)).status_code == 202
    async with ctx.db.write() as session:
        await session.execute(update(UploadedBlob).values(expires_at=utcnow() - timedelta(seconds=1)))
        await session.execute(update(Tag).where(Tag.hidden.is_(True), Tag.lifetime_end_ms.is_not(None))
                              .values(lifetime_end_ms=now_ms() - 1))
    report = await gc.collect_garbage(ctx, full=True)
    assert report.manifests >= 1 and report.failed == 0


async def test_garbage_collection_drops_statuses_and_the_scanner_forgets(ctx, http, scanner):
    gone = await push(http, "alice/app", "v1")
    kept = await push(http, "alice/app", "v2")
    async with scanner.client() as client:
        await index_pass(ctx, client)
        await _collect(ctx, http, "alice/app", "v1")
        assert set(await statuses(ctx)) == {kept}
        async with ctx.db.read() as session:
            assert (await session.scalars(select(SecscanIndexDeletion.digest))).all() == [gone]
        report = await index_pass(ctx, client)
    assert report.forgotten == 1 and scanner.deleted == [gone]
    async with ctx.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(SecscanIndexDeletion)) == 0


async def test_cleanup_keeps_digests_another_repository_holds_or_when_turned_off(ctx, http, scanner):
    async with scanner.client() as client:
        shared = await push(http, "alice/app", "v1")
        await index_pass(ctx, client)
        # The same manifest bytes in a second repository: one digest, two manifest rows.
        v2 = V2Client(http)
        src = await v2.auth("alice/app", "pull")
        dst = await v2.auth("alice/copy")
        raw = (await http.get(f"/v2/alice/app/manifests/{shared}", headers=src)).content
        for desc in [json.loads(raw)["config"], *json.loads(raw)["layers"]]:
            blob = (await http.get(f"/v2/alice/app/blobs/{desc['digest']}", headers=src)).content
            await v2.upload("alice/copy", blob, dst)
        r = await http.put("/v2/alice/copy/manifests/v1", content=raw,
                           headers={**dst, "Content-Type": json.loads(raw)["mediaType"]})
        assert r.status_code == 201, r.text
        await _collect(ctx, http, "alice/app", "v1")
        await index_pass(ctx, client)
        assert scanner.deleted == []  # alice/copy still holds it
        tune(ctx, SECURITY_SCANNER_V4_MANIFEST_CLEANUP=False)
        await _collect(ctx, http, "alice/copy", "v1")
        await index_pass(ctx, client)
    assert scanner.deleted == []
    async with ctx.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(SecscanIndexDeletion)) == 0


@pytest.mark.parametrize("status", list(IndexStatus))
async def test_api_status_words(status):
    assert service.API_STATUS[status] in ("scanned", "queued", "failed", "unsupported", "manifest_layer_too_large")
