"""Drift between the database and the stored blobs (`quaymaster fsck`), and its safe repair.

For every configured location, the objects the store lists are compared with the blob rows and
their placements for that location:

- **missing**: a placement says the location holds the blob, the object is not there;
- **wrong size**: the object's size is not the blob row's;
- **checksum mismatch** (with `verify`): the object's bytes do not hash to its digest;
- **orphan**: an object with no blob row at all (a crashed push, a collection that died half-way,
  or a push that has written its bytes and not yet its row);
- **unrecorded**: the blob row exists but has no placement for this location (a copy the
  database does not know about, so garbage collection would never remove it).

Memory stays bounded on big registries: the listing is read a page at a time, and for each page
only the placements whose digests fall between the previous page's last digest and this page's
last one are read, in batches. Nothing here depends on the database ordering digests the way the
store does: any placement whose object is not in its page is checked again with a HEAD, and any
object without a placement in its window is looked up again by digest, so a different collation
costs requests, never a false report. Both also absorb pushes and collections that run while
fsck does: every problem is confirmed against a fresh read before it is reported.

Repair only does what cannot lose data: orphans older than `min_age_s` go through
`content.gc.delete_orphan_object`, which refuses once a blob row exists (a push that won the
race); unrecorded copies whose size (and, if verified, checksum) match get their placement.
Missing, short or corrupt objects are reported, never "fixed" by deleting rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError

from quaymaster.content import gc
from quaymaster.content.models import Blob, BlobPlacement
from quaymaster.db.engine import Database
from quaymaster.storage.base import BlobNotFound, BlobStore, StorageError, StoredBlob

if TYPE_CHECKING:
    from quaymaster.context import AppContext

log = logging.getLogger(__name__)

PAGE = 500  # stored objects looked up in the database at once (well under SQLite's parameter limit)
DB_BATCH = 1000  # placements read per query
CONCURRENCY = 8  # storage requests (HEADs, verifying reads) in flight per location
DEFAULT_MIN_AGE_S = 3600


class Kind(StrEnum):
    MISSING = "missing"
    WRONG_SIZE = "wrong-size"
    CHECKSUM = "checksum-mismatch"
    ORPHAN = "orphan"
    UNRECORDED = "unrecorded"


@dataclass
class Problem:
    kind: Kind
    location: str
    digest: str
    recorded_size: int | None = None  # the blob row's size (None: no row)
    stored_size: int | None = None  # the object's size (None: no object)
    modified: float | None = None  # the object's last write, epoch seconds, where the listing said
    placed: bool = False  # whether a placement for this location exists
    verified: bool = False  # the object's bytes were hashed and matched its digest
    actual_digest: str | None = None  # what a corrupt object hashes to
    fixed: bool = False
    note: str = ""


@dataclass
class LocationSummary:
    name: str
    objects: int = 0
    bytes: int = 0
    placements: int = 0
    verified: int = 0


@dataclass
class FsckReport:
    verify: bool
    locations: dict[str, LocationSummary] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # Placements naming locations that are not configured: fsck cannot look at those.
    unknown_locations: dict[str, int] = field(default_factory=dict)
    _seen: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def add(self, problem: Problem) -> None:
        key = (problem.location, problem.digest)
        if key not in self._seen:  # one problem per object, however it was reached
            self._seen.add(key)
            self.problems.append(problem)

    @property
    def remaining(self) -> list[Problem]:
        return [p for p in self.problems if not p.fixed]

    @property
    def clean(self) -> bool:
        return not self.remaining


# --- database reads ------------------------------------------------------------------------------

async def _placed_between(db: Database, location: str, lower: str | None,
                          upper: str | None) -> AsyncIterator[list[tuple[str, int]]]:
    """(digest, size) of the blobs placed in `location` with lower < digest <= upper, in batches."""
    base = (select(Blob.digest, Blob.size).join(BlobPlacement, BlobPlacement.blob_id == Blob.id)
            .where(BlobPlacement.location == location))
    if upper is not None:
        base = base.where(Blob.digest <= upper)
    cursor = lower
    while True:
        stmt = base if cursor is None else base.where(Blob.digest > cursor)
        async with db.read() as session:
            rows = [(r.digest, r.size) for r in await session.execute(stmt.order_by(Blob.digest).limit(DB_BATCH))]
        if rows:
            yield rows
        if len(rows) < DB_BATCH:
            return
        cursor = rows[-1][0]


async def _rows_for(db: Database, location: str, digests: list[str]) -> dict[str, tuple[int, bool]]:
    """digest -> (recorded size, placed in `location`) for those of `digests` with a blob row."""
    if not digests:
        return {}
    placed = exists().where(BlobPlacement.blob_id == Blob.id, BlobPlacement.location == location)
    async with db.read() as session:
        rows = await session.execute(select(Blob.digest, Blob.size, placed.label("placed"))
                                     .where(Blob.digest.in_(digests)))
        return {r.digest: (r.size, bool(r.placed)) for r in rows}


async def _unknown_locations(db: Database, configured: set[str]) -> dict[str, int]:
    async with db.read() as session:
        rows = await session.execute(select(BlobPlacement.location, func.count())
                                     .group_by(BlobPlacement.location).order_by(BlobPlacement.location))
        return {name: count for name, count in rows if name not in configured}


# --- storage reads -------------------------------------------------------------------------------

async def _pages(blobs: AsyncIterator[StoredBlob], size: int) -> AsyncIterator[dict[str, StoredBlob]]:
    page: dict[str, StoredBlob] = {}
    async with aclosing(blobs):
        async for blob in blobs:
            page[blob.digest] = blob
            if len(page) >= size:
                yield page
                page = {}
    if page:
        yield page


async def content_digest(store: BlobStore, digest: str) -> str:
    """Stream the object and hash it with its digest's algorithm; BlobNotFound if it is gone."""
    algorithm = digest.split(":", 1)[0]
    hasher = hashlib.new(algorithm)
    async with aclosing(store.stream(digest)) as chunks:
        async for chunk in chunks:
            await asyncio.to_thread(hasher.update, chunk)  # hashlib lets go of the GIL: cores hash in parallel
    return f"{algorithm}:{hasher.hexdigest()}"


# --- check ---------------------------------------------------------------------------------------

class _LocationCheck:
    def __init__(self, ctx: AppContext, store: BlobStore, verify: bool, report: FsckReport):
        self.db = ctx.db
        self.store = store
        self.verify = verify
        self.report = report
        self.summary = report.locations.setdefault(store.name, LocationSummary(store.name))
        self.limit = asyncio.Semaphore(CONCURRENCY)
        # Placed objects met outside their window: the other side of the pair may come later
        # and must not examine them twice. Stays tiny when the listing is in digest order.
        self.out_of_window: set[str] = set()

    async def run(self) -> None:
        lower: str | None = None
        async with aclosing(_pages(self.store.list_blobs(), PAGE)) as pages:
            async for page in pages:
                # Both drivers list in digest order, so the window (lower, upper] holds this
                # page's placements; `upper` never goes back, so each placement is read once.
                upper = max(page) if lower is None else max(lower, max(page))
                await self._page(page, lower, upper)
                lower = upper
        # Placements past the last listed object (all of them, if the location is empty).
        async for rows in _placed_between(self.db, self.store.name, lower, None):
            self.summary.placements += len(rows)
            await self._confirm_missing(rows)

    async def _page(self, page: dict[str, StoredBlob], lower: str | None, upper: str) -> None:
        self.summary.objects += len(page)
        self.summary.bytes += sum(b.size for b in page.values())
        matched: set[str] = set()
        async for rows in _placed_between(self.db, self.store.name, lower, upper):
            self.summary.placements += len(rows)
            jobs, absent = [], []
            for digest, size in rows:
                blob = page.get(digest)
                if blob is None:
                    absent.append((digest, size))
                else:
                    matched.add(digest)
                    jobs.append(self._examine(digest, blob.size, size, placed=True, modified=blob.modified))
            await asyncio.gather(*jobs, self._confirm_missing(absent))
        await self._classify([b for d, b in page.items() if d not in matched])

    async def _classify(self, blobs: list[StoredBlob]) -> None:
        """Objects that no placement in their window claimed: orphans, unrecorded copies, or
        blobs recorded while we listed (or sorted differently by the database)."""
        rows = await _rows_for(self.db, self.store.name, [b.digest for b in blobs])
        jobs = []
        for blob in blobs:
            row = rows.get(blob.digest)
            if row is None:
                self.report.add(Problem(Kind.ORPHAN, self.store.name, blob.digest, stored_size=blob.size,
                                        modified=blob.modified))
            elif not row[1] or self._first_time(blob.digest):
                jobs.append(self._examine(blob.digest, blob.size, row[0], placed=row[1], modified=blob.modified))
        await asyncio.gather(*jobs)

    def _first_time(self, digest: str) -> bool:
        if digest in self.out_of_window:
            self.out_of_window.discard(digest)
            return False
        self.out_of_window.add(digest)
        return True

    async def _examine(self, digest: str, stored: int, recorded: int, *, placed: bool,
                       modified: float | None) -> None:
        """An object that has a blob row: size, then (with verify) content, then its placement."""
        problem = Problem(Kind.UNRECORDED, self.store.name, digest, recorded_size=recorded, stored_size=stored,
                          modified=modified, placed=placed)
        if stored != recorded:
            problem.kind = Kind.WRONG_SIZE
            self.report.add(problem)
            return
        if self.verify:
            try:
                async with self.limit:
                    actual = await content_digest(self.store, digest)
            except BlobNotFound:  # deleted since the listing: a collection, or really missing
                if placed:
                    await self._confirm_missing([(digest, recorded)])
                return
            if actual != digest:
                problem.kind, problem.actual_digest = Kind.CHECKSUM, actual
                self.report.add(problem)
                return
            problem.verified = True
            self.summary.verified += 1
        if not placed:
            self.report.add(problem)

    async def _confirm_missing(self, rows: list[tuple[str, int]]) -> None:
        """Placements whose object the listing did not show: look again, then ask the database
        again, so a push or a collection running meanwhile is not reported."""
        if not rows:
            return

        async def head(digest: str) -> int | None:
            async with self.limit:
                return await self.store.size(digest)

        sizes = await asyncio.gather(*(head(d) for d, _ in rows))
        present = [(d, s, n) for (d, s), n in zip(rows, sizes, strict=True) if n is not None]
        absent = [d for (d, _), n in zip(rows, sizes, strict=True) if n is None]
        current = await _rows_for(self.db, self.store.name, absent)
        for digest in absent:
            row = current.get(digest)
            if row is not None and row[1]:
                self.report.add(Problem(Kind.MISSING, self.store.name, digest, recorded_size=row[0], placed=True))
        await asyncio.gather(*(self._examine(d, n, s, placed=True, modified=None)
                               for d, s, n in present if self._first_time(d)))


async def check(ctx: AppContext, *, verify: bool) -> FsckReport:
    """Compare every configured location with the database; `verify` also hashes every object
    that has a blob row."""
    report = FsckReport(verify=verify)
    for store in ctx.storage.stores.values():
        await _LocationCheck(ctx, store, verify, report).run()
    report.unknown_locations = await _unknown_locations(ctx.db, set(ctx.storage.stores))
    return report


# --- repair --------------------------------------------------------------------------------------

async def repair(ctx: AppContext, report: FsckReport, *, min_age_s: float = DEFAULT_MIN_AGE_S) -> None:
    """Fix what can be fixed without risk, marking those problems `fixed`; the rest get a note."""
    now = time.time()
    for problem in report.problems:
        if problem.fixed:
            continue
        try:
            if problem.kind is Kind.ORPHAN:
                await _remove_orphan(ctx, problem, now, min_age_s)
            elif problem.kind is Kind.UNRECORDED:
                await _record_copy(ctx, problem)
        except StorageError as err:
            problem.note = f"not repaired: {err}"
            log.warning("fsck: could not repair %s %s in %s: %s", problem.kind, problem.digest, problem.location, err)


async def _remove_orphan(ctx: AppContext, problem: Problem, now: float, min_age_s: float) -> None:
    age = now - (problem.modified if problem.modified is not None else now)
    # Object stores stamp whole seconds (and their clock is not ours): no age check at 0.
    if min_age_s > 0 and age < min_age_s:
        problem.note = f"kept: written {int(age)} s ago, younger than the minimum age (a push may still record it)"
        return
    if await gc.delete_orphan_object(ctx, problem.location, problem.digest):
        problem.fixed, problem.note = True, "removed"
        return
    # A push recorded the digest after we listed (never delete that), or a collection pass is
    # deleting it already.
    row = (await _rows_for(ctx.db, problem.location, [problem.digest])).get(problem.digest)
    if row is None:
        problem.note = "kept: garbage collection is deleting it; run fsck again"
    elif row[1] and row[0] == problem.stored_size:
        problem.fixed, problem.note = True, "kept: a push recorded it meanwhile"
    else:
        problem.note = "kept: a blob row exists now; run fsck again"


async def _record_copy(ctx: AppContext, problem: Problem) -> None:
    store = ctx.storage.location(problem.location)
    if await store.size(problem.digest) != problem.recorded_size:
        problem.note = "not recorded: the object changed or went away"
        return
    try:
        async with ctx.db.write() as session:
            # Locked, as a push locks it: garbage collection cannot delete the row under us, and
            # once it does, the placement goes with the row and the object with the blob.
            blob = await session.scalar(select(Blob).where(Blob.digest == problem.digest).with_for_update())
            if blob is None:
                problem.note = "not recorded: the blob row is gone (collected meanwhile)"
                return
            if blob.size != problem.recorded_size:
                problem.note = "not recorded: the blob row changed"
                return
            placed = await session.scalar(select(exists().where(
                BlobPlacement.blob_id == blob.id, BlobPlacement.location == problem.location)))
            if not placed:
                session.add(BlobPlacement(blob_id=blob.id, location=problem.location))
    except IntegrityError:  # recorded by someone else at the same moment
        pass
    problem.fixed, problem.note = True, "placement recorded"
