"""The services one scanner process runs for its mode, and their background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
from sqlalchemy import delete, select

from quaymaster.scanner.auth import INTRASERVICE_ISSUER, sign
from quaymaster.scanner.config import ScannerConfig
from quaymaster.scanner.db import Databases
from quaymaster.scanner.feeds.runner import run_updaters
from quaymaster.scanner.indexer.service import Indexer
from quaymaster.scanner.matcher.diff import diff_rows, rows_of
from quaymaster.scanner.matcher.service import Matcher, vulnerability_json
from quaymaster.scanner.models import enrichment, update_operation, vulnerability
from quaymaster.scanner.notifier.service import Notifier

log = logging.getLogger(__name__)


def _uo_json(row) -> dict:
    return {"ref": row.ref, "updater": row.updater, "fingerprint": row.fingerprint,
            "date": row.date.isoformat().replace("+00:00", "Z") if row.date.tzinfo else row.date.isoformat() + "Z",
            "kind": row.kind}


class Runtime:
    def __init__(self, config: ScannerConfig, mode: str = "combo"):
        self.config = config
        self.mode = mode
        self.dbs = Databases(config.indexer_url, config.matcher_url, config.notifier_url)
        self.indexer = Indexer(self.dbs.indexer, airgap=config.indexer_airgap)
        self.matcher = Matcher(self.dbs.matcher)
        self.notifier = Notifier(self.dbs.notifier, self.dbs.matcher, self.indexer, self.matcher,
                                 config.webhook, config.psk_key)
        self._tasks: list[asyncio.Task] = []
        self._updated = asyncio.Event()

    async def start(self) -> None:
        await self.dbs.create_schema()
        runs_matcher = self.mode in ("combo", "matcher")
        if runs_matcher and not self.config.updaters_configured:
            log.info("no updaters configured (updaters.sets is empty): vulnerability reports answer 202 "
                     "until `quaymaster scanner update` has loaded a feed")
        elif runs_matcher and self.config.matcher_disable_updaters:
            log.info("matcher.disable_updaters is set: feeds are loaded only by `quaymaster scanner update`")
        elif runs_matcher:
            self._tasks.append(asyncio.create_task(self._update_loop(), name="scanner-updaters"))
        if self.mode in ("combo", "notifier"):
            self._tasks.append(asyncio.create_task(self._notify_loop(), name="scanner-notifier"))
            if self.config.webhook:
                self._tasks.append(asyncio.create_task(self._deliver_loop(), name="scanner-delivery"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.indexer.close()
        await self.dbs.close()

    async def ready(self) -> bool:
        return await self.dbs.indexer.ping() and await self.dbs.matcher.ping()

    async def run_updates(self) -> list:
        results = await run_updaters(self.dbs.matcher, self.config.updater_sets, self.config.updater_config,
                                     retention=self.config.update_retention)
        if any(r.outcome == "new" for r in results):
            self._updated.set()
        return results

    async def _update_loop(self) -> None:
        while True:
            try:
                for result in await self.run_updates():
                    log.info("%s", result.describe())
            except Exception:
                log.exception("updater run failed")
            await asyncio.sleep(self.config.matcher_period or 3600)

    async def _notify_loop(self) -> None:
        while True:
            try:
                if await self.notifier.process() and self.config.webhook:
                    await self.notifier.deliver()
            except Exception:
                log.exception("notifier pass failed")
            self._updated.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._updated.wait(), self.config.notifier_poll_interval or 3600)

    async def _deliver_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.notifier_delivery_interval or 3600)
            try:
                await self.notifier.deliver()
            except Exception:
                log.exception("notifier delivery failed")

    async def index_report_for_matcher(self, digest: str) -> dict | None:
        """From the indexer's database, or over HTTP when matcher.indexer_addr names a remote indexer."""
        addr = self.config.matcher_indexer_addr
        if not addr or self.mode == "combo":
            return await self.indexer.get_report(digest)
        headers = {}
        if self.config.psk_key:
            headers["Authorization"] = "Bearer " + sign(self.config.psk_key, INTRASERVICE_ISSUER)
        async with httpx.AsyncClient(timeout=30.0) as client:
            resp = await client.get(f"{addr.rstrip('/')}/indexer/api/v1/index_report/{digest}", headers=headers)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.json()

    async def update_operations(self, kind: str | None, *, latest: bool) -> dict[str, list[dict]]:
        query = select(update_operation).order_by(update_operation.c.id.desc())
        if kind:
            query = query.where(update_operation.c.kind == kind)
        async with self.dbs.matcher.read() as conn:
            rows = (await conn.execute(query)).all()
        out: dict[str, list[dict]] = {}
        for row in rows:
            if latest and row.updater in out:
                continue
            out.setdefault(row.updater, []).append(_uo_json(row))
        return out

    async def delete_update_operation(self, ref: str) -> None:
        async with self.dbs.matcher.write() as conn:
            uo_id = (await conn.execute(select(update_operation.c.id).where(update_operation.c.ref == ref))).scalar()
            if uo_id is not None:
                await conn.execute(delete(vulnerability).where(vulnerability.c.uo_id == uo_id))
                await conn.execute(delete(enrichment).where(enrichment.c.uo_id == uo_id))
                await conn.execute(delete(update_operation).where(update_operation.c.id == uo_id))

    async def update_diff(self, prev: str | None, cur: str) -> dict | None:
        async with self.dbs.matcher.read() as conn:
            ids = dict((await conn.execute(select(update_operation.c.ref, update_operation.c.id).where(
                update_operation.c.ref.in_([r for r in (prev, cur) if r])))).all())
            if cur not in ids or (prev and prev not in ids):
                return None
            prev_rows = await rows_of(conn, ids[prev]) if prev else []
            added, removed = diff_rows(prev_rows, await rows_of(conn, ids[cur]))
        return {"prev": prev or "00000000-0000-0000-0000-000000000000", "cur": cur,
                "added": [vulnerability_json(r) for r in added], "removed": [vulnerability_json(r) for r in removed]}
