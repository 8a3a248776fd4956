"""Writing action logs. Entries are buffered and written in batches so that logging every pull
does not put a database write on the pull path; a clean shutdown flushes the buffer."""

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import Date, func, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from quaymaster.accounts.models import User  # read only, to name performers and namespaces
from quaymaster.auditlog.models import LogEntry
from quaymaster.db.base import utcnow
from quaymaster.db.engine import Database

log = logging.getLogger(__name__)

# Quay's log kind names (LogEntryKind); recording any other name is a programming error.
KINDS = frozenset("""
user_create user_delete user_disable user_enable user_change_email user_change_password user_change_name
user_change_tag_expiration user_change_metadata user_generate_client_key account_convert login_success
login_failure logout_success create_robot delete_robot regenerate_robot_token create_repo delete_repo
push_repo push_repo_failed pull_repo pull_repo_failed change_repo_visibility change_repo_state
set_repo_description add_repo_permission change_repo_permission delete_repo_permission create_tag move_tag
delete_tag delete_tag_failed revert_tag change_tag_expiration change_tag_immutability permanently_delete_tag
manifest_label_add manifest_label_delete org_create org_delete org_create_team org_delete_team
org_add_team_member org_remove_team_member org_set_team_description org_set_team_role org_change_email
org_change_name org_change_tag_expiration create_prototype_permission modify_prototype_permission
delete_prototype_permission create_app_specific_token revoke_app_specific_token create_oauth_api_token
revoke_oauth_api_token service_key_create service_key_approve service_key_delete service_key_modify
service_key_extend service_key_rotate take_ownership create_message delete_message
org_create_quota org_change_quota org_delete_quota org_create_quota_limit org_change_quota_limit
org_delete_quota_limit quota_warning
repo_mirror_enabled repo_mirror_disabled repo_mirror_config_changed repo_mirror_sync_started
repo_mirror_sync_success repo_mirror_sync_failed repo_mirror_sync_now_requested repo_mirror_sync_tag_success
repo_mirror_sync_tag_failed
""".split())


@dataclass
class Entry:
    kind: str
    account_id: int | None = None
    performer_id: int | None = None
    repository_id: int | None = None
    ip: str | None = None
    metadata: dict = field(default_factory=dict)
    datetime: datetime = field(default_factory=utcnow)


class AuditLog:
    def __init__(self, db: Database, flush_every_s: float = 0.5, max_buffer: int = 500):
        self.db = db
        self.flush_every_s = flush_every_s
        self.max_buffer = max_buffer
        self._buffer: list[Entry] = []
        self._lock = asyncio.Lock()

    def record(self, kind: str, **kwargs) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown log kind {kind!r}")
        self._buffer.append(Entry(kind=kind, **kwargs))
        if len(self._buffer) >= self.max_buffer:
            asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        async with self._lock:
            if not self._buffer:
                return
            batch, self._buffer = self._buffer, []
            rows = [
                {"kind": e.kind, "account_id": e.account_id, "performer_id": e.performer_id,
                 "repository_id": e.repository_id, "ip": e.ip, "metadata_json": e.metadata,
                 "datetime": e.datetime}
                for e in batch
            ]
            try:
                async with self.db.write() as session:
                    await session.execute(insert(LogEntry), rows)
            except Exception:
                log.exception("could not write %d action log entries; keeping them for retry", len(rows))
                self._buffer = batch + self._buffer

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every_s)
            await self.flush()


async def entries(session: AsyncSession, *, repository_id: int | None = None,
                  account_id: int | None = None, limit: int = 100) -> list[LogEntry]:
    """Newest first; the REST API builds on this."""
    q = select(LogEntry).order_by(LogEntry.datetime.desc(), LogEntry.id.desc()).limit(limit)
    if repository_id is not None:
        q = q.where(LogEntry.repository_id == repository_id)
    if account_id is not None:
        q = q.where(LogEntry.account_id == account_id)
    return list((await session.scalars(q)).all())


# --- usage-log queries (the REST API's /logs and /aggregatelogs) -------------------------------

# Kinds Quay keeps out of a user's own log view: they describe the registry, not the account.
SERVICE_LEVEL_KINDS = frozenset({
    "service_key_create", "service_key_approve", "service_key_delete", "service_key_modify",
    "service_key_extend", "service_key_rotate",
})
LOGS_PER_PAGE = 20


@dataclass(frozen=True)
class LogFilter:
    """Which entries a log view covers; None means "any"."""

    start: datetime
    end: datetime
    account_id: int | None = None
    repository_id: int | None = None
    performer: str | None = None
    exclude_kinds: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LogView:
    """One entry with the names of its performer and namespace resolved."""

    id: int
    kind: str
    metadata: dict
    ip: str | None
    datetime: datetime
    performer_name: str | None
    performer_robot: bool
    account_name: str | None
    account_is_org: bool


def _filtered(query, flt: LogFilter, performer):
    query = query.where(LogEntry.datetime >= flt.start, LogEntry.datetime < flt.end)
    if flt.repository_id is not None:
        query = query.where(LogEntry.repository_id == flt.repository_id)
    elif flt.account_id is not None:
        query = query.where(LogEntry.account_id == flt.account_id)
    if flt.performer is not None:
        query = query.where(LogEntry.performer_id.in_(
            select(performer.id).where(performer.username == flt.performer)))
    if flt.exclude_kinds:
        query = query.where(LogEntry.kind.not_in(sorted(flt.exclude_kinds)))
    return query


async def lookup_logs(session: AsyncSession, flt: LogFilter, *, after: tuple[datetime, int] | None = None,
                      limit: int = LOGS_PER_PAGE) -> tuple[list[LogView], tuple[datetime, int] | None]:
    """A page of entries, newest first, and the (datetime, id) key to continue after, if any."""
    performer, account = aliased(User), aliased(User)
    query = (select(LogEntry, performer.username, performer.robot, account.username, account.organization)
             .outerjoin(performer, performer.id == LogEntry.performer_id)
             .outerjoin(account, account.id == LogEntry.account_id))
    query = _filtered(query, flt, aliased(User))
    if after is not None:
        query = query.where(tuple_(LogEntry.datetime, LogEntry.id) < tuple_(*after))
    query = query.order_by(LogEntry.datetime.desc(), LogEntry.id.desc()).limit(limit + 1)
    rows = (await session.execute(query)).all()
    views = [LogView(e.id, e.kind, e.metadata_json or {}, e.ip, e.datetime, p_name, bool(p_robot),
                     a_name, bool(a_org)) for e, p_name, p_robot, a_name, a_org in rows[:limit]]
    more = len(rows) > limit
    return views, ((views[-1].datetime, views[-1].id) if more else None)


async def aggregate_logs(session: AsyncSession, flt: LogFilter) -> list[tuple[str, date, int]]:
    """(kind, day, count) for every kind logged on every day of the range (UTC days)."""
    day = func.date(LogEntry.datetime, type_=Date)
    query = _filtered(select(LogEntry.kind, day, func.count(LogEntry.id)), flt, aliased(User))
    query = query.group_by(LogEntry.kind, day).order_by(day, LogEntry.kind)
    out = []
    for kind, when, count in (await session.execute(query)).all():
        if isinstance(when, str):  # drivers without a date type hand back the ISO text
            when = date.fromisoformat(when)
        out.append((kind, when, int(count)))
    return out
