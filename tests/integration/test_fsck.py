"""`quaymaster fsck` on a registry that really received a push: the embedded default (SQLite,
local storage) and, for the listing of orphans, S3 on Swift.

The push and the pulls go through the registry app in-process; fsck runs as the command does.
Storage and database are then damaged behind the registry's back, as disks and operators do.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner
from protocol.v2client import V2Client
from support.s3server import S3Server, shared_s3_server

from quaymaster.accounts import service as accounts
from quaymaster.app import bind_context, create_app, start_context
from quaymaster.cli.main import main
from quaymaster.content import fsck as checker
from quaymaster.content.models import Blob, BlobPlacement
from quaymaster.oci import mediatypes as mt
from quaymaster.settings import load_settings

HOST = "registry.test"  # the service V2Client asks tokens for
REPO = "alice/app"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Registry:
    config_dir: Path
    storage: Path | None  # the local location's root
    manifest: str  # digest of the pushed manifest, tagged `latest`
    blobs: list[str]  # config and layers

    @property
    def db_path(self) -> str:
        return str(self.config_dir.parent / "quaymaster.db")

    def blob_path(self, digest: str) -> Path:
        return self.storage / "sha256" / digest[7:9] / digest[7:]


def fsck(registry: Registry, *args: str):
    result = CliRunner().invoke(main, ["fsck", "--config-dir", str(registry.config_dir), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def write_config(config_dir: Path, **overrides) -> None:
    """The embedded default, as `quaymaster registry` writes it on first run, plus overrides."""
    load_settings(config_dir, create=True)
    path = config_dir / "config.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(SERVER_HOSTNAME=HOST, **overrides)
    path.write_text(yaml.safe_dump(data))


async def _with_app(config_dir: Path, work):
    settings = load_settings(config_dir)
    app = create_app(settings)
    ctx = await start_context(settings)
    bind_context(app, ctx)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{HOST}") as http:
            return await work(ctx, V2Client(http))
    finally:
        await ctx.audit.flush()
        await ctx.db.dispose()


def push_image(config_dir: Path) -> tuple[str, list[str]]:
    async def work(ctx, client):
        async with ctx.db.write() as session:
            await accounts.create_user(session, "alice", "alice@example.com", "alice-password")
        headers = await client.auth(REPO)
        digest, raw = await client.push_image(REPO, "latest", headers, layers=2)
        body = json.loads(raw)
        return digest, [body["config"]["digest"], *(layer["digest"] for layer in body["layers"])]

    return asyncio.run(_with_app(config_dir, work))


def pull_image(config_dir: Path) -> None:
    """Pull `latest` and every blob it names, checking each against its digest."""

    async def work(ctx, client):
        headers = await client.auth(REPO, "pull")
        r = await client.http.get(f"/v2/{REPO}/manifests/latest", headers={**headers, "Accept": mt.OCI_MANIFEST})
        assert r.status_code == 200, r.text
        body = r.json()
        for desc in (body["config"], *body["layers"]):
            r = await client.http.get(f"/v2/{REPO}/blobs/{desc['digest']}", headers=headers, follow_redirects=True)
            assert r.status_code == 200, r.text
            assert digest_of(r.content) == desc["digest"]

    asyncio.run(_with_app(config_dir, work))


def make_registry(tmp_path: Path, **config) -> Registry:
    config_dir = tmp_path / "data" / "config"
    write_config(config_dir, **config)
    manifest, blobs = push_image(config_dir)
    return Registry(config_dir, tmp_path / "data" / "storage", manifest, blobs)


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Registry:
    monkeypatch.setattr(accounts, "BCRYPT_ROUNDS", 4)
    return make_registry(tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_registry(request, tmp_path, monkeypatch) -> Registry:
    """The embedded default, and the same on PostgreSQL (whose collation orders the digests)."""
    monkeypatch.setattr(accounts, "BCRYPT_ROUNDS", 4)
    if request.param == "sqlite":
        return make_registry(tmp_path)
    postgres = request.getfixturevalue("postgres")
    return make_registry(tmp_path, DB_URI=postgres.create_database(f"fsck_{uuid.uuid4().hex[:12]}"))


def plant_orphan(registry: Registry, data: bytes) -> str:
    digest = digest_of(data)
    path = registry.blob_path(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def problem_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("  ")]


# --- local storage, SQLite ----------------------------------------------------------------------

def test_clean_then_a_deleted_blob_is_missing(registry):
    r = fsck(registry)
    assert r.exit_code == 0, r.output
    assert "location default (LocalStorage): 3 objects" in r.output
    assert "3 recorded in the database" in r.output
    assert r.output.strip().splitlines()[-1].startswith("fsck: clean")

    layer = registry.blobs[1]
    registry.blob_path(layer).unlink()
    r = fsck(registry)
    assert r.exit_code == 1, r.output
    [line] = problem_lines(r.output)
    assert "missing" in line and layer in line and "not in storage" in line
    assert "location default" in r.output
    r = fsck(registry, "--repair", "--min-age", "0")  # nothing repair may do about lost bytes
    assert r.exit_code == 1, r.output
    assert layer in r.output


def test_orphan_is_reported_kept_while_young_and_removed_by_repair(registry):
    orphan = plant_orphan(registry, os.urandom(2048))
    r = fsck(registry)
    assert r.exit_code == 1, r.output
    [line] = problem_lines(r.output)
    assert "orphan" in line and orphan in line and "2048 bytes" in line and "no blob row" in line
    assert "--repair removes old orphans" in r.output

    r = fsck(registry, "--repair")  # the default minimum age (1h) protects a push in flight
    assert r.exit_code == 1, r.output
    assert "kept: written" in r.output
    assert registry.blob_path(orphan).exists()

    r = fsck(registry, "--repair", "--min-age", "0s")
    assert r.exit_code == 0, r.output
    [line] = problem_lines(r.output)
    assert orphan in line and line.endswith("[fixed: removed]")
    assert "clean after repair (1 fixed)" in r.output
    assert not registry.blob_path(orphan).exists()
    assert all(registry.blob_path(d).exists() for d in registry.blobs)
    pull_image(registry.config_dir)
    assert fsck(registry).exit_code == 0


def test_corrupt_content_is_only_found_with_verify(registry):
    layer = registry.blobs[2]
    path = registry.blob_path(layer)
    path.write_bytes(os.urandom(path.stat().st_size))  # same size, other bytes
    r = fsck(registry)
    assert r.exit_code == 0, r.output
    assert "contents not verified (--verify)" in r.output

    r = fsck(registry, "--verify")
    assert r.exit_code == 1, r.output
    [line] = problem_lines(r.output)
    assert "checksum mismatch" in line and layer in line and "hashes to sha256:" in line
    assert "2 verified" in r.output

    r = fsck(registry, "--verify", "--repair", "--min-age", "0")
    assert r.exit_code == 1, r.output
    assert path.exists()  # recorded bytes are never deleted, even bad ones


def test_wrong_size_and_an_unrecorded_copy(registry):
    config, layer = registry.blobs[0], registry.blobs[1]
    with open(registry.blob_path(layer), "ab") as fh:
        fh.write(b"trailing junk")
    with sqlite3.connect(registry.db_path) as db:
        db.execute("DELETE FROM blobplacement WHERE blob_id = (SELECT id FROM blob WHERE digest = ?)", (config,))
    r = fsck(registry, "--verify")
    assert r.exit_code == 1, r.output
    lines = problem_lines(r.output)
    assert len(lines) == 2
    [size_line] = [line for line in lines if layer in line]
    assert "wrong size" in size_line and "holds 1037 bytes, the database records 1024 bytes" in size_line
    [copy_line] = [line for line in lines if config in line]
    assert "unrecorded copy" in copy_line and "content verified" in copy_line

    r = fsck(registry, "--repair")
    assert r.exit_code == 1, r.output  # the wrong size remains
    assert "[fixed: placement recorded]" in r.output
    with sqlite3.connect(registry.db_path) as db:
        assert db.execute("SELECT location FROM blobplacement JOIN blob ON blob.id = blob_id WHERE digest = ?",
                          (config,)).fetchall() == [("default",)]
    r = fsck(registry)
    assert [layer] == [d for d in registry.blobs if any(d in line for line in problem_lines(r.output))]


async def test_repair_never_deletes_an_orphan_a_push_recorded_meanwhile(any_registry):
    """The race the minimum age guards against, with no minimum age: the orphan's digest is
    pushed (and recorded) between the check and the repair."""
    data = os.urandom(4096)
    orphan = plant_orphan(any_registry, data)

    async def work(ctx, client):
        report = await checker.check(ctx, verify=False)
        assert [(p.kind, p.digest) for p in report.problems] == [(checker.Kind.ORPHAN, orphan)]
        headers = await client.auth(REPO)
        await client.upload(REPO, data, headers)  # the bytes are there already: only the row is new
        await checker.repair(ctx, report, min_age_s=0)
        [problem] = report.problems
        assert problem.fixed and "push recorded it" in problem.note
        assert (await checker.check(ctx, verify=True)).clean

    await _with_app(any_registry.config_dir, work)
    assert any_registry.blob_path(orphan).read_bytes() == data


@pytest.mark.parametrize("page, batch, shuffled", [(3, 2, False), (4, 3, True), (500, 1000, False)])
async def test_every_object_and_row_is_looked_at_across_pages(any_registry, monkeypatch, page, batch, shuffled):
    """Many blobs in every state, with pages and database batches much smaller than the data;
    a listing out of digest order (as a database collation may order them) changes nothing."""
    monkeypatch.setattr(checker, "PAGE", page)
    monkeypatch.setattr(checker, "DB_BATCH", batch)
    states = ["fine", "missing", "orphan", "unrecorded", "wrong-size"]

    async def work(ctx, client):
        store = ctx.storage.location("default")
        expected, placements, objects = set(), 3, 3  # the pushed image's blobs are fine
        async with ctx.db.write() as session:
            for i in range(40):
                data = os.urandom(100 + i)
                digest, state = digest_of(data), states[i % len(states)]
                if state != "missing":
                    await store.put(digest, data if state != "wrong-size" else data + b"!")
                    objects += 1
                if state != "orphan":
                    blob = Blob(digest=digest, size=len(data))
                    session.add(blob)
                    await session.flush()
                    if state != "unrecorded":
                        session.add(BlobPlacement(blob_id=blob.id, location="default"))
                        placements += 1
                if state != "fine":
                    expected.add((state, digest))
        if shuffled:
            listing = [b async for b in store.list_blobs()]
            random.Random(7).shuffle(listing)

            async def unordered():
                for blob in listing:
                    yield blob

            monkeypatch.setattr(store, "list_blobs", unordered)
        report = await checker.check(ctx, verify=True)
        assert {(p.kind.value, p.digest) for p in report.problems} == expected
        assert len(report.problems) == len(expected)
        summary = report.locations["default"]
        assert (summary.objects, summary.placements) == (objects, placements)
        assert summary.verified == objects - len([k for k, _ in expected if k in ("orphan", "wrong-size")])

    await _with_app(any_registry.config_dir, work)


def test_usage_and_config_errors_exit_2(registry, tmp_path):
    r = CliRunner().invoke(main, ["fsck", "--config-dir", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "not found" in r.output
    r = fsck(registry, "--min-age", "soon")
    assert r.exit_code == 2 and "not a duration" in r.output


# --- S3 (Swift) -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def s3(request) -> S3Server:
    return shared_s3_server(request)


def test_orphans_and_missing_blobs_on_s3(s3, tmp_path, monkeypatch):
    monkeypatch.setattr(accounts, "BCRYPT_ROUNDS", 4)
    prefix = f"fsck/{uuid.uuid4().hex}"
    config_dir = tmp_path / "data" / "config"
    write_config(config_dir, DISTRIBUTED_STORAGE_CONFIG={"default": ["S3Storage", s3.storage_params(f"/{prefix}")]})
    manifest, blobs = push_image(config_dir)
    registry = Registry(config_dir, None, manifest, blobs)
    r = fsck(registry, "--verify")
    assert r.exit_code == 0, r.output
    assert "location default (S3Storage): 3 objects" in r.output and "3 verified" in r.output

    orphan_data = os.urandom(3000)
    orphan = digest_of(orphan_data)
    s3.client.put_object(Bucket=s3.bucket, Key=f"{prefix}/sha256/{orphan[7:9]}/{orphan[7:]}", Body=orphan_data)
    s3.client.delete_object(Bucket=s3.bucket, Key=f"{prefix}/sha256/{blobs[1][7:9]}/{blobs[1][7:]}")
    r = fsck(registry)
    assert r.exit_code == 1, r.output
    lines = problem_lines(r.output)
    assert len(lines) == 2, r.output
    assert any("orphan" in line and orphan in line for line in lines)
    assert any("missing" in line and blobs[1] in line for line in lines)

    r = fsck(registry, "--repair", "--min-age", "0")
    assert r.exit_code == 1, r.output  # the missing layer cannot be repaired
    assert "[fixed: removed]" in r.output
    assert s3.keys(f"{prefix}/sha256/{orphan[7:9]}/") == []
