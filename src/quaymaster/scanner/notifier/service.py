"""Create notification sets after new update operations and deliver them by webhook."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import httpx
from sqlalchemy import insert, select, update

from quaymaster.scanner.auth import NOTIFIER_ISSUER, sign
from quaymaster.scanner.config import WebhookConfig
from quaymaster.scanner.db import ScannerDB
from quaymaster.scanner.feeds.severity import RANK
from quaymaster.scanner.indexer.service import Indexer
from quaymaster.scanner.matcher.diff import diff_rows, rows_of
from quaymaster.scanner.matcher.service import Matcher, vulnerability_json
from quaymaster.scanner.metrics import WEBHOOKS
from quaymaster.scanner.models import notification, notification_set, notifier_seen, update_operation

log = logging.getLogger(__name__)


def summary(vuln) -> dict:
    """VulnSummary: `severity` is the normalized word (Clair), `normalized_severity` the same (Quay reads it)."""
    full = vulnerability_json(vuln)
    return {
        "name": full["name"], "description": full["description"], "package": full["package"],
        "distribution": full["distribution"], "repo": full["repository"],
        "severity": full["normalized_severity"], "normalized_severity": full["normalized_severity"],
        "fixed_in_version": full["fixed_in_version"], "links": full["links"],
    }


class Notifier:
    def __init__(self, db: ScannerDB, matcher_db: ScannerDB, indexer: Indexer, matcher: Matcher,
                 webhook: WebhookConfig | None, psk_key: bytes | None):
        self.db = db
        self.matcher_db = matcher_db
        self.indexer = indexer
        self.matcher = matcher
        self.webhook = webhook
        self.psk_key = psk_key

    async def process(self) -> list[str]:
        """Diff every vulnerability update operation not seen yet; returns new notification set ids."""
        async with self.matcher_db.read() as conn:
            ops = (await conn.execute(select(update_operation).where(
                update_operation.c.kind == "vulnerability").order_by(update_operation.c.id))).all()
        async with self.db.read() as conn:
            seen = set((await conn.execute(select(notifier_seen.c.uo_ref))).scalars().all())
        created = []
        for op in ops:
            if op.ref in seen:
                continue
            set_id = await self._process_one(op, ops)
            if set_id:
                created.append(set_id)
        return created

    async def _process_one(self, op, ops) -> str | None:
        previous = [o for o in ops if o.updater == op.updater and o.id < op.id]
        notes: dict[tuple[str, str], object] = {}
        if previous:  # the first operation of an updater is a baseline, not news
            async with self.matcher_db.read() as conn:
                added, removed = diff_rows(await rows_of(conn, previous[-1].id), await rows_of(conn, op.id))
            for reason, rows in (("added", added), ("removed", removed)):
                if not rows:
                    continue
                names = {r.package_name for r in rows}
                for report in await self.indexer.manifests_with_packages(names):
                    for hits in self.matcher.match_rows(report, rows).values():
                        for vuln in hits:
                            key = (report["manifest_hash"], reason)
                            best = notes.get(key)
                            if best is None or RANK[vuln.normalized_severity] > RANK[best.normalized_severity]:
                                notes[key] = vuln
        set_id = str(uuid.uuid4()) if notes else None
        async with self.db.write() as conn:
            if set_id:
                await conn.execute(insert(notification_set).values(
                    id=set_id, uo_ref=op.ref, updater=op.updater, created_at=datetime.now(UTC),
                    delivered=False, deleted=False, attempts=0))
                rows = []
                for (manifest, reason), vuln in sorted(notes.items()):
                    nid = str(uuid.uuid4())
                    rows.append({"id": nid, "set_id": set_id, "manifest": manifest, "reason": reason,
                                 "body": {"id": nid, "manifest": manifest, "reason": reason,
                                          "vulnerability": summary(vuln)}})
                await conn.execute(insert(notification), rows)
            await conn.execute(insert(notifier_seen).values(uo_ref=op.ref))
        if set_id:
            log.info("notifier: set %s with %d notifications after %s", set_id, len(notes), op.updater)
        return set_id

    async def deliver(self, client: httpx.AsyncClient | None = None) -> int:
        """POST `{notification_id, callback}` for each undelivered set; returns how many succeeded."""
        if not self.webhook:
            return 0
        async with self.db.read() as conn:
            pending = (await conn.execute(select(notification_set.c.id).where(
                notification_set.c.delivered.is_(False), notification_set.c.deleted.is_(False)).order_by(
                notification_set.c.created_at))).scalars().all()
        if not pending:
            return 0
        own = client is None
        client = client or httpx.AsyncClient(timeout=30.0)
        delivered = 0
        try:
            for set_id in pending:
                ok = await self._post(client, set_id)
                async with self.db.write() as conn:
                    await conn.execute(update(notification_set).where(notification_set.c.id == set_id).values(
                        delivered=ok, attempts=notification_set.c.attempts + 1))
                delivered += ok
        finally:
            if own:
                await client.aclose()
        return delivered

    async def _post(self, client: httpx.AsyncClient, set_id: str) -> bool:
        assert self.webhook is not None
        callback = self.webhook.callback.rstrip("/") + "/" + set_id if self.webhook.callback else set_id
        headers = [(k, v) for k, values in self.webhook.headers.items() for v in values]
        if self.psk_key:
            headers.append(("Authorization", "Bearer " + sign(self.psk_key, NOTIFIER_ISSUER)))
        try:
            resp = await client.post(self.webhook.target, json={"notification_id": set_id, "callback": callback},
                                     headers=headers)
        except httpx.HTTPError as err:
            log.warning("notifier: webhook to %s failed: %s", self.webhook.target, err)
            WEBHOOKS.labels(outcome="error").inc()
            return False
        ok = 200 <= resp.status_code < 300
        WEBHOOKS.labels(outcome="ok" if ok else "error").inc()
        if not ok:
            log.warning("notifier: webhook to %s answered %d", self.webhook.target, resp.status_code)
        return ok

    async def page(self, set_id: str, size: int, after: str | None) -> dict | None:
        """Keyset page over notification ids; `next` is set only when more notifications follow."""
        async with self.db.read() as conn:
            found = (await conn.execute(select(notification_set.c.deleted).where(
                notification_set.c.id == set_id))).first()
            if found is None or found.deleted:
                return None
            query = select(notification.c.id, notification.c.body).where(notification.c.set_id == set_id)
            if after:
                query = query.where(notification.c.id > after)
            rows = (await conn.execute(query.order_by(notification.c.id).limit(size + 1))).all()
        items = [r.body for r in rows[:size]]
        page: dict = {"size": size}
        if len(rows) > size:
            page["next"] = rows[size - 1].id
        return {"page": page, "notifications": items}

    async def delete(self, set_id: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(update(notification_set).where(notification_set.c.id == set_id).values(deleted=True))
            await conn.execute(notification.delete().where(notification.c.set_id == set_id))
