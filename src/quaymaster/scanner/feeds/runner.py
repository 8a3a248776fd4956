"""Run updaters once: fetch, compare fingerprints, parse, store a new update operation."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice

from sqlalchemy import delete, func, insert, select

from quaymaster.scanner.db import ScannerDB
from quaymaster.scanner.feeds.registry import KNOWN_UPDATERS, urls_for
from quaymaster.scanner.feeds.source import FeedError, fingerprint, read_location
from quaymaster.scanner.metrics import UPDATER_RUNS
from quaymaster.scanner.models import enrichment, update_operation, vulnerability

log = logging.getLogger(__name__)
BATCH = 2000
_VULN_COLUMNS = [c.name for c in vulnerability.columns if c.name not in ("id", "uo_id")]
_TEXT_DEFAULTS = {name: ("Unknown" if name == "normalized_severity" else "binary" if name == "package_kind" else "")
                  for name in _VULN_COLUMNS}


@dataclass
class UpdateResult:
    updater: str
    outcome: str  # new | unchanged | error
    ref: str = ""
    count: int = 0
    message: str = ""

    def describe(self) -> str:
        if self.outcome == "new":
            return f"{self.updater}: new update operation {self.ref} ({self.count} records)"
        if self.outcome == "unchanged":
            return f"{self.updater}: unchanged"
        return f"{self.updater}: failed: {self.message}"


def _take(rows: Iterator[dict]) -> list[dict]:
    return list(islice(rows, BATCH))


def _vuln_row(row: dict, uo_id: int, updater: str) -> dict:
    out = {name: str(row.get(name) or _TEXT_DEFAULTS[name]) for name in _VULN_COLUMNS}
    out["updater"] = updater
    out["uo_id"] = uo_id
    return out


async def run_one(db: ScannerDB, name: str, config: dict, *, retention: int = 2) -> UpdateResult:
    spec = KNOWN_UPDATERS[name]
    try:
        urls = urls_for(spec, config)
        if not urls:
            raise FeedError(f"no url configured (updaters.config.{name}.url)")
        files = []
        for url in urls:
            files += await read_location(url)
        fp = fingerprint(files)
        async with db.read() as conn:
            latest = (await conn.execute(select(update_operation.c.fingerprint).where(
                update_operation.c.updater == name).order_by(update_operation.c.id.desc()).limit(1))).scalar()
        if latest == fp:
            UPDATER_RUNS.labels(updater=name, outcome="unchanged").inc()
            return UpdateResult(name, "unchanged")
        rows = iter(spec.parse(files))  # parsers may stream: rows are taken BATCH at a time
        first = await asyncio.to_thread(_take, rows)
    except FeedError as err:
        return _failed(name, err)
    try:
        ref, count = await _store(db, spec, name, fp, first, rows, retention)
    except FeedError as err:  # malformed half-way: the transaction rolled back, the old data stays
        return _failed(name, err)
    UPDATER_RUNS.labels(updater=name, outcome="new").inc()
    log.info("updater %s: update operation %s with %d records", name, ref, count)
    return UpdateResult(name, "new", ref=ref, count=count)


def _failed(name: str, err: FeedError) -> UpdateResult:
    UPDATER_RUNS.labels(updater=name, outcome="error").inc()
    log.warning("updater %s failed: %s", name, err)
    return UpdateResult(name, "error", message=str(err))


async def _store(db: ScannerDB, spec, name: str, fp: str, first: list[dict], rows: Iterator[dict],
                 retention: int) -> tuple[str, int]:
    """One transaction: the new operation with every row, and the oldest operations dropped."""
    ref = str(uuid.uuid4())
    count = 0
    async with db.write() as conn:
        uo_id = (await conn.execute(insert(update_operation).values(
            ref=ref, updater=name, fingerprint=fp, date=datetime.now(UTC), kind=spec.kind,
        ).returning(update_operation.c.id))).scalar_one()
        chunk = first
        while chunk:
            count += len(chunk)
            if spec.kind == "enrichment":
                await conn.execute(insert(enrichment), [{"uo_id": uo_id, **r} for r in chunk])
            else:
                await conn.execute(insert(vulnerability), [_vuln_row(r, uo_id, name) for r in chunk])
            chunk = await asyncio.to_thread(_take, rows)
        # Keep the newest `retention` operations of this updater (the notifier diffs the last two).
        keep = select(update_operation.c.id).where(update_operation.c.updater == name).order_by(
            update_operation.c.id.desc()).limit(retention).scalar_subquery()
        old = (await conn.execute(select(update_operation.c.id).where(
            update_operation.c.updater == name, update_operation.c.id.not_in(keep)))).scalars().all()
        if old:
            await conn.execute(delete(vulnerability).where(vulnerability.c.uo_id.in_(old)))
            await conn.execute(delete(enrichment).where(enrichment.c.uo_id.in_(old)))
            await conn.execute(delete(update_operation).where(update_operation.c.id.in_(old)))
    return ref, count


async def run_updaters(db: ScannerDB, sets: list[str], configs: dict[str, dict], *,
                       retention: int = 2) -> list[UpdateResult]:
    """Each configured updater in turn; one failing leaves the others' data and its own old data."""
    return [await run_one(db, name, configs.get(name) or {}, retention=retention) for name in sets]


async def count_operations(db: ScannerDB) -> int:
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(update_operation))).scalar() or 0)
