"""The indexer: check, fetch, scan, coalesce, store. The only writer of the indexer tables."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import delete, insert, select

from quaymaster.oci.digest import is_digest
from quaymaster.scanner.db import ScannerDB
from quaymaster.scanner.indexer.coalesce import coalesce
from quaymaster.scanner.indexer.detectors import SCANNERS
from quaymaster.scanner.indexer.fetch import check_destination, fetch_layer, private_workdir
from quaymaster.scanner.indexer.layer import LayerError, scan_layer_file
from quaymaster.scanner.metrics import INDEX_REPORTS, LAYERS_SCANNED
from quaymaster.scanner.models import index_report, layer_result, manifest_package

log = logging.getLogger(__name__)
FETCH_CONCURRENCY = 4


def _first_layer_error(group: BaseExceptionGroup) -> BaseException:
    """The LayerError to report from a failed TaskGroup, or the group itself if it holds other errors."""
    match, rest = group.split(LayerError)
    if match is None or rest is not None:
        return group
    while isinstance(match, BaseExceptionGroup):
        match = match.exceptions[0]
    return match


class BadManifest(ValueError):
    """The request body is not a manifest we can index (400)."""


def compute_index_state() -> str:
    """Changes only when the scanner set or a scanner version changes (Quay re-indexes then)."""
    h = hashlib.md5(b"quaymaster indexer 1\n", usedforsecurity=False)
    for name in sorted(SCANNERS):
        version, kind = SCANNERS[name]
        h.update(f"{name}{version}{kind}\n".encode())
    return h.hexdigest()


def validate_manifest(body: object) -> dict:
    if not isinstance(body, dict):
        raise BadManifest("manifest must be a JSON object")
    digest = body.get("hash")
    if not isinstance(digest, str) or not is_digest(digest):
        raise BadManifest("manifest hash missing or not a digest")
    layers = body.get("layers")
    if not isinstance(layers, list) or not layers:
        raise BadManifest("bogus manifest: no layers")
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("hash"), str) or not is_digest(layer["hash"]):
            raise BadManifest(f"layers[{i}]: hash missing or not a digest")
        if not isinstance(layer.get("uri"), str) or not layer["uri"]:
            raise BadManifest(f"layers[{i}]: uri missing")
        headers = layer.get("headers") or {}
        if not isinstance(headers, dict):
            raise BadManifest(f"layers[{i}]: headers must be an object of string lists")
    return body


def error_report(manifest_hash: str, message: str) -> dict:
    return {"manifest_hash": manifest_hash, "state": "IndexError", "packages": {}, "distributions": {},
            "repository": {}, "environments": {}, "success": False, "err": message}


def _package_names(report: dict) -> set[str]:
    names = set()
    for pkg in report.get("packages", {}).values():
        names.add(pkg["name"])
        if pkg.get("source", {}).get("name"):
            names.add(pkg["source"]["name"])
    return names


class Indexer:
    def __init__(self, db: ScannerDB, *, airgap: bool = False, client: httpx.AsyncClient | None = None):
        self.db = db
        self.airgap = airgap
        self.state = compute_index_state()
        self._client = client
        self._own_client = client is None
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # lock, waiters
        self._scan_slots = asyncio.Semaphore(2)

    async def close(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=True, timeout=httpx.Timeout(60.0, connect=15.0), trust_env=False,
                event_hooks={"request": [self._check_request]})
        return self._client

    async def _check_request(self, request: httpx.Request) -> None:
        """Every request, redirects included, must stay on http(s) and, with airgap, off the internet."""
        await check_destination(str(request.url), airgap=self.airgap)

    async def get_report(self, manifest_hash: str) -> dict | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(index_report.c.body).where(
                index_report.c.manifest_hash == manifest_hash))).first()
        return row.body if row else None

    async def index(self, manifest: dict) -> dict:
        """Index a validated manifest, or return the stored report if the current scanners made it."""
        digest = manifest["hash"]
        lock, users = self._locks.get(digest, (asyncio.Lock(), 0))
        self._locks[digest] = (lock, users + 1)
        try:
            async with lock:
                return await self._index_locked(manifest)
        finally:
            lock, users = self._locks[digest]
            if users <= 1:
                del self._locks[digest]
            else:
                self._locks[digest] = (lock, users - 1)

    async def _index_locked(self, manifest: dict) -> dict:
        digest = manifest["hash"]
        async with self.db.read() as conn:
            row = (await conn.execute(select(index_report.c.body, index_report.c.indexer_state).where(
                index_report.c.manifest_hash == digest))).first()
        if row and row.indexer_state == self.state and row.body.get("state") == "IndexFinished":
            return row.body
        try:
            report = await self._index(manifest)
        except LayerError as err:
            log.warning("index %s failed: %s", digest, err)
            report = error_report(digest, str(err))
        await self._store(digest, report)
        INDEX_REPORTS.labels(state=report["state"]).inc()
        return report

    async def _index(self, manifest: dict) -> dict:
        layers = manifest["layers"]
        hashes = [layer["hash"] for layer in layers]
        async with self.db.read() as conn:
            rows = (await conn.execute(select(layer_result.c.layer_hash, layer_result.c.body).where(
                layer_result.c.layer_hash.in_(set(hashes)), layer_result.c.indexer_state == self.state))).all()
        results: dict[str, dict] = {r.layer_hash: r.body for r in rows}
        missing = {layer["hash"]: layer for layer in layers if layer["hash"] not in results}
        if missing:
            workdir = private_workdir()
            try:
                fetch_slots = asyncio.Semaphore(FETCH_CONCURRENCY)

                async def one(layer: dict) -> tuple[str, dict]:
                    async with fetch_slots:
                        path = await fetch_layer(self.client, layer, workdir, airgap=self.airgap)
                    try:
                        async with self._scan_slots:
                            return layer["hash"], await asyncio.to_thread(scan_layer_file, path)
                    finally:
                        Path(path).unlink(missing_ok=True)

                try:
                    # A TaskGroup cancels the other fetches as soon as one layer fails.
                    async with asyncio.TaskGroup() as group:
                        tasks = [group.create_task(one(layer)) for layer in missing.values()]
                except BaseExceptionGroup as failed:
                    raise _first_layer_error(failed) from None
                done = [task.result() for task in tasks]
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            async with self.db.write() as conn:
                for layer_hash, body in done:
                    await conn.execute(delete(layer_result).where(
                        layer_result.c.layer_hash == layer_hash, layer_result.c.indexer_state == self.state))
                    await conn.execute(insert(layer_result).values(
                        layer_hash=layer_hash, indexer_state=self.state, body=body))
                    results[layer_hash] = body
            LAYERS_SCANNED.inc(len(done))
        return coalesce(manifest["hash"], hashes, [results[h] for h in hashes])

    async def _store(self, digest: str, report: dict) -> None:
        now = datetime.now(UTC)
        async with self.db.write() as conn:
            await conn.execute(delete(index_report).where(index_report.c.manifest_hash == digest))
            await conn.execute(insert(index_report).values(
                manifest_hash=digest, state=report["state"], indexer_state=self.state, body=report, updated_at=now))
            names = _package_names(report)
            if names:
                await conn.execute(insert(manifest_package), [
                    {"manifest_hash": digest, "package_name": n} for n in sorted(names)])

    async def delete(self, digests: list[str]) -> list[str]:
        """Delete reports; returns the digests that existed."""
        async with self.db.write() as conn:
            found = [r.manifest_hash for r in (await conn.execute(select(index_report.c.manifest_hash).where(
                index_report.c.manifest_hash.in_(digests)))).all()]
            if found:
                await conn.execute(delete(manifest_package).where(manifest_package.c.manifest_hash.in_(found)))
                await conn.execute(delete(index_report).where(index_report.c.manifest_hash.in_(found)))
        return found

    async def manifests_with_packages(self, names: set[str]) -> list[dict]:
        """Finished index reports holding any of these package names (the notifier's lookup)."""
        if not names:
            return []
        async with self.db.read() as conn:
            digests = sorted({r.manifest_hash for r in (await conn.execute(select(manifest_package.c.manifest_hash).where(
                manifest_package.c.package_name.in_(sorted(names))))).all()})
            if not digests:
                return []
            rows = (await conn.execute(select(index_report.c.body).where(
                index_report.c.manifest_hash.in_(digests), index_report.c.state == "IndexFinished"))).all()
        return [r.body for r in rows]
