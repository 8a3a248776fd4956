"""Mirror configurations and their sync state: the only code that writes `repomirrorconfig`.

The sync state follows Quay: a configuration is due when its start date has come (enabled, retries
left, not syncing), when someone asked to sync now, or when a worker's lease on it ran out. Every
change of the sync state writes a new `sync_transaction_id` with a conditional UPDATE on the old
one, so two workers never claim one configuration, and a worker whose sync was cancelled (or taken
over after its lease ran out) finds out at its next renewal. Editing the configuration itself does
not touch the transaction id, so a running sync is never orphaned by an edit.

Every function takes the caller's session, as the other domains' services do.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts import permissions, robots
from quaymaster.accounts.models import User
from quaymaster.content import repositories
from quaymaster.content.models import Repository, RepositoryState
from quaymaster.content.service import RepoRef
from quaymaster.db.base import utcnow
from quaymaster.db.encryption import DecryptionError, FieldCipher
from quaymaster.mirroring.models import (
    MAX_SYNC_RETRIES,
    RULE_TAG_GLOB_CSV,
    MirrorStatus,
    RepoMirrorConfig,
)
from quaymaster.oci.errors import OCIError
from quaymaster.oci.reference import validate_tag

MIN_SYNC_INTERVAL_S = 60
MAX_INT32 = 2**31 - 1
MIN_SKOPEO_TIMEOUT_S = 300  # Quay's bounds for skopeo_timeout_interval
MAX_SKOPEO_TIMEOUT_S = 43200
DEFAULT_SKOPEO_TIMEOUT_S = 300
LEASE_MARGIN_S = 120  # a lease outlives the longest single skopeo call by this much
MAX_GLOBS = 100
MAX_GLOB_LENGTH = 255
MAX_REFERENCE_LENGTH = 512
# Go architecture names; Quay's UI offers the first four.
ARCHITECTURES = ("amd64", "arm64", "ppc64le", "s390x", "386", "arm", "riscv64", "mips64le")

_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST_RE = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])(?::([0-9]{{1,5}}))?$")
_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")
_GLOB_RE = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!]+$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_PROXY_SCHEMES = ("http://", "https://", "socks5://", "socks5h://")
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "[::1]", "::1"}


class MirrorError(Exception):
    """A request the mirroring rules refuse; `status` is the HTTP status the API answers."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class MirrorNotFound(MirrorError):
    status = 404


class MirrorConflict(MirrorError):
    status = 409


# --- validation ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExternalReference:
    """`host[:port]/ns/repo`, split."""

    host: str  # lowercased; IPv6 literals keep their brackets
    port: int | None
    path: str

    @property
    def registry(self) -> str:
        return self.host + (f":{self.port}" if self.port is not None else "")

    def __str__(self) -> str:
        return f"{self.registry}/{self.path}"


def parse_external_reference(value: Any) -> ExternalReference:
    """Quay's external_reference: a registry host (with a dot, a port, or `localhost`) and a
    repository path, without a tag or digest."""
    if not isinstance(value, str) or not value.strip():
        raise MirrorError("external_reference is required, e.g. quay.io/namespace/repository")
    text = value.strip()
    if len(text) > MAX_REFERENCE_LENGTH:
        raise MirrorError(f"external_reference is too long (at most {MAX_REFERENCE_LENGTH} characters)")
    if "://" in text:
        raise MirrorError("external_reference takes no scheme: write host[:port]/namespace/repository")
    if "@" in text:
        raise MirrorError("external_reference names a repository, not a digest: drop the @sha256:... part")
    host, sep, path = text.partition("/")
    match = _HOST_RE.match(host)
    if not sep or not path or match is None:
        raise MirrorError(f"external_reference {text!r} is not host[:port]/namespace/repository")
    hostname = host.rsplit(":", 1)[0] if match.group(1) else host
    if not ("." in hostname or match.group(1) or hostname.lower() == "localhost" or hostname.startswith("[")):
        raise MirrorError(f"external_reference must start with the registry host, e.g. docker.io/{text}")
    port = int(match.group(1)) if match.group(1) else None
    if port is not None and not 1 <= port <= 65535:
        raise MirrorError(f"external_reference: port {port} is out of range")
    components = path.split("/")
    last = components[-1]
    if ":" in last:
        raise MirrorError("external_reference names a repository, not a tag: choose tags with the tag patterns")
    for component in components:
        if not _COMPONENT_RE.match(component):
            raise MirrorError(f"external_reference: {component!r} is not a valid repository path component "
                              "(lowercase letters, digits, and . _ - between them)")
    return ExternalReference(hostname.lower(), port, path)


def _ports(port: int | None) -> set[int]:
    return {port} if port is not None else {80, 443}


def _same_host(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return a == b or (a in _LOOPBACK_NAMES and b in _LOOPBACK_NAMES)


def check_reachable_safely(ref: ExternalReference, own_hostnames: Iterable[str]) -> None:
    """Refuse a source that is this registry (a mirror of itself) or a link-local address such as
    a cloud metadata service: the worker would fetch from it with the server's network position."""
    for own in own_hostnames:
        if not own:
            continue
        match = _HOST_RE.match(own)
        own_host = own.rsplit(":", 1)[0] if match and match.group(1) else own
        own_port = int(match.group(1)) if match and match.group(1) else None
        if _same_host(ref.host, own_host) and _ports(ref.port) & _ports(own_port):
            raise MirrorError(f"external_reference points at this registry ({own}); mirror from another registry")
    try:
        address = ipaddress.ip_address(ref.host.strip("[]"))
    except ValueError:
        return
    if address.is_link_local or address.is_unspecified or address.is_multicast:
        raise MirrorError(f"external_reference: {ref.host} is not an address a registry can be mirrored from")


def parse_globs(value: Any) -> list[str]:
    """The tag patterns: a non-empty list of globs (a comma-separated string is accepted too)."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MirrorError("root_rule.rule_value must be a list of tag patterns, e.g. [\"v1.*\", \"latest\"]")
    globs = list(dict.fromkeys(v.strip() for v in value if v.strip()))
    if not globs:
        raise MirrorError("root_rule.rule_value needs at least one tag pattern, e.g. latest or v1.*")
    if len(globs) > MAX_GLOBS:
        raise MirrorError(f"root_rule.rule_value: at most {MAX_GLOBS} tag patterns")
    for glob in globs:
        if len(glob) > MAX_GLOB_LENGTH or not _GLOB_RE.match(glob):
            raise MirrorError(f"tag pattern {glob!r} is not valid: use tag characters (letters, digits, _ . -) "
                              "and the wildcards * ? [abc] [!abc]")
    return globs


def matching_tags(tags: Iterable[str], globs: Iterable[str]) -> list[str]:
    """Tags matching any of the globs (case-sensitive fnmatch), sorted; invalid tag names are skipped."""
    patterns = list(globs)
    out = set()
    for tag in tags:
        try:
            validate_tag(tag)
        except OCIError:
            continue
        if any(fnmatch.fnmatchcase(tag, pattern) for pattern in patterns):
            out.add(tag)
    return sorted(out)


def parse_root_rule(value: Any) -> list[str]:
    if not isinstance(value, dict):
        raise MirrorError('root_rule must be {"rule_kind": "tag_glob_csv", "rule_value": [...]}')
    kind = value.get("rule_kind", RULE_TAG_GLOB_CSV)
    if kind != RULE_TAG_GLOB_CSV:
        raise MirrorError(f"root_rule.rule_kind {kind!r} is not supported; use tag_glob_csv")
    return parse_globs(value.get("rule_value"))


def parse_start_date(value: Any) -> datetime:
    """ISO 8601 (`2026-01-02T03:04:05Z`); a time without a zone is UTC. Naive UTC out."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str) and value.strip():
        try:
            when = datetime.fromisoformat(value.strip().replace("z", "Z"))
        except ValueError:
            raise MirrorError(f"sync_start_date {value!r} is not an ISO 8601 date, e.g. 2026-01-02T03:04:05Z") \
                from None
    else:
        raise MirrorError("sync_start_date is required (ISO 8601, e.g. 2026-01-02T03:04:05Z)")
    if when.tzinfo is not None:
        try:
            when = when.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise MirrorError(f"sync_start_date {value!r} is out of range") from None
    return when.replace(microsecond=0)


def _int_in(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        else:
            raise MirrorError(f"{name} must be a whole number of seconds")
    if not low <= value <= high:
        raise MirrorError(f"{name} must be between {low} and {high} seconds")
    return value


def _optional_text(name: str, value: Any, limit: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit or _CONTROL_RE.search(value):
        raise MirrorError(f"{name} must be text of at most {limit} characters, without line breaks")
    return value


def parse_registry_config(value: Any) -> dict:
    """{verify_tls, unsigned_images, proxy: {http_proxy, https_proxy, no_proxy}}; other keys dropped."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise MirrorError("external_registry_config must be an object")
    out: dict[str, Any] = {"verify_tls": True, "unsigned_images": False,
                           "proxy": {"http_proxy": None, "https_proxy": None, "no_proxy": None}}
    for key in ("verify_tls", "unsigned_images"):
        if key in value and value[key] is not None:
            if not isinstance(value[key], bool):
                raise MirrorError(f"external_registry_config.{key} must be true or false")
            out[key] = value[key]
    proxy = value.get("proxy")
    proxy = {} if proxy is None else proxy
    if not isinstance(proxy, dict):
        raise MirrorError("external_registry_config.proxy must be an object")
    for key in ("http_proxy", "https_proxy", "no_proxy"):
        text = _optional_text(f"external_registry_config.proxy.{key}", proxy.get(key), 2048)
        if text is not None:
            text = text.strip() or None
        if text and key != "no_proxy" and not text.lower().startswith(_PROXY_SCHEMES):
            raise MirrorError(f"external_registry_config.proxy.{key} must be a URL such as http://proxy:3128")
        out["proxy"][key] = text
    return out


def parse_architectures(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MirrorError("architecture_filter must be a list such as [\"amd64\", \"arm64\"]")
    unknown = [v for v in value if v not in ARCHITECTURES]
    if unknown:
        raise MirrorError(f"architecture_filter: unknown architecture {unknown[0]!r} "
                          f"(choose from {', '.join(ARCHITECTURES)})")
    return list(dict.fromkeys(value))


@dataclass
class MirrorChanges:
    """Validated column values from a request; only the fields the request carried are set."""

    values: dict[str, Any] = field(default_factory=dict)
    robot_username: str | None = None
    username: str | None = None  # plaintext until stored
    password: str | None = field(default=None, repr=False)
    set_username: bool = False
    set_password: bool = False


REQUIRED_FIELDS = ("external_reference", "sync_interval", "sync_start_date", "robot_username", "root_rule")


def parse_changes(body: dict[str, Any], *, own_hostnames: Iterable[str], creating: bool) -> MirrorChanges:
    """Validate Quay's mirror JSON fields present in `body` (all required ones when creating)."""
    if creating:
        missing = [f for f in REQUIRED_FIELDS if body.get(f) in (None, "")]
        if missing:
            raise MirrorError(f"{missing[0]} is required")
    changes = MirrorChanges()
    v = changes.values
    if "is_enabled" in body and body["is_enabled"] is not None:
        if not isinstance(body["is_enabled"], bool):
            raise MirrorError("is_enabled must be true or false")
        v["is_enabled"] = body["is_enabled"]
    if "external_reference" in body:
        ref = parse_external_reference(body["external_reference"])
        check_reachable_safely(ref, own_hostnames)
        v["external_reference"] = str(ref)
    if "sync_interval" in body:
        v["sync_interval"] = _int_in("sync_interval", body["sync_interval"], MIN_SYNC_INTERVAL_S, MAX_INT32)
    if "sync_start_date" in body:
        v["sync_start_date"] = parse_start_date(body["sync_start_date"])
    if "root_rule" in body:
        v["root_rule_value"] = parse_root_rule(body["root_rule"])
        v["root_rule_kind"] = RULE_TAG_GLOB_CSV
    if "external_registry_config" in body:
        v["external_registry_config"] = parse_registry_config(body["external_registry_config"])
    if body.get("skopeo_timeout_interval") is not None:
        v["skopeo_timeout"] = _int_in("skopeo_timeout_interval", body["skopeo_timeout_interval"],
                                      MIN_SKOPEO_TIMEOUT_S, MAX_SKOPEO_TIMEOUT_S)
    if "architecture_filter" in body:
        v["architecture_filter"] = parse_architectures(body["architecture_filter"])
    if "robot_username" in body:
        name = body["robot_username"]
        if not isinstance(name, str) or "+" not in name:
            raise MirrorError("robot_username must name a robot account, e.g. myorg+mirrorbot")
        changes.robot_username = name.strip()
    if "external_registry_username" in body:
        changes.set_username = True
        changes.username = _optional_text("external_registry_username", body["external_registry_username"], 255)
        if changes.username and ":" in changes.username:
            raise MirrorError("external_registry_username cannot contain ':'")
    if "external_registry_password" in body:
        changes.set_password = True
        changes.password = _optional_text("external_registry_password", body["external_registry_password"], 4096)
    return changes


# --- configurations ------------------------------------------------------------------------------

def _new_txn() -> str:
    return str(uuidlib.uuid4())


async def get_config(session: AsyncSession, repository_id: int) -> RepoMirrorConfig | None:
    return await session.scalar(select(RepoMirrorConfig).where(RepoMirrorConfig.repository_id == repository_id))


async def _mirror_robot(session: AsyncSession, repo: RepoRef, name: str) -> User:
    """The robot, which must belong to the repository's own namespace."""
    owner, _, short = name.partition("+")
    robot = await robots.robot_by_name(session, name)
    if robot is None or owner != repo.namespace or not short:
        raise MirrorError(f"robot_username {name!r} is not a robot account of {repo.namespace}")
    return robot


async def _ensure_push_permission(session: AsyncSession, repo: RepoRef, robot: User) -> bool:
    """The robot pushes through /v2 like any client, so it needs write on the repository; grant it
    if missing (returns True then)."""
    for user, role in await permissions.user_permissions(session, repo.id):
        if user.id == robot.id and permissions.ROLE_RANK[role] >= permissions.ROLE_RANK["write"]:
            return False
    await permissions.set_permission(session, repo.id, "write", user=robot)
    return True


def _require_mirror_state(repo: RepoRef) -> None:
    if repo.state != RepositoryState.MIRROR:
        raise MirrorError(f"repository {repo.path} is not in MIRROR state; set its state to MIRROR first "
                          f"(PUT /api/v1/repository/{repo.path}/changestate)")


@dataclass(frozen=True)
class SavedConfig:
    config: RepoMirrorConfig
    granted_write: bool  # the robot was given write permission on the repository
    changed: tuple[str, ...]  # names of the fields the request changed (never their secret values)
    robot_username: str | None = None


async def create_config(session: AsyncSession, cipher: FieldCipher, repo: RepoRef,
                        changes: MirrorChanges) -> SavedConfig:
    _require_mirror_state(repo)
    if await get_config(session, repo.id) is not None:
        raise MirrorConflict(f"{repo.path} already has a mirror configuration; change it with PUT")
    robot = await _mirror_robot(session, repo, changes.robot_username or "")
    values = {"is_enabled": True, "skopeo_timeout": DEFAULT_SKOPEO_TIMEOUT_S, "architecture_filter": [],
              "external_registry_config": parse_registry_config({}), **changes.values}
    config = RepoMirrorConfig(repository_id=repo.id, internal_robot_id=robot.id, sync_transaction_id=_new_txn(),
                              sync_status=MirrorStatus.NEVER_RUN, sync_retries_remaining=MAX_SYNC_RETRIES,
                              external_registry_username=cipher.encrypt(changes.username) if changes.username
                              else None,
                              external_registry_password=cipher.encrypt(changes.password) if changes.password
                              else None,
                              **values)
    session.add(config)
    await session.flush()
    granted = await _ensure_push_permission(session, repo, robot)
    return SavedConfig(config, granted, _api_names([*changes.values, "robot_username"]), robot.username)


async def update_config(session: AsyncSession, cipher: FieldCipher, repo: RepoRef,
                        changes: MirrorChanges) -> SavedConfig:
    _require_mirror_state(repo)
    config = await get_config(session, repo.id)
    if config is None:
        raise MirrorNotFound(f"{repo.path} has no mirror configuration; create one with POST")
    changed = [k for k, value in changes.values.items() if getattr(config, k) != value]
    for key, value in changes.values.items():
        setattr(config, key, value)
    if "sync_start_date" in changes.values and config.sync_status != MirrorStatus.SYNCING:
        # A new schedule starts with full retries (after a cancel they are 0).
        config.sync_retries_remaining = MAX_SYNC_RETRIES
    granted, robot_name = False, None
    if changes.robot_username is not None:
        robot = await _mirror_robot(session, repo, changes.robot_username)
        if config.internal_robot_id != robot.id:
            changed.append("robot_username")
        config.internal_robot_id = robot.id
        granted = await _ensure_push_permission(session, repo, robot)
        robot_name = robot.username
    for wanted, column, new_value in ((changes.set_username, "external_registry_username", changes.username),
                                      (changes.set_password, "external_registry_password", changes.password)):
        if not wanted:
            continue
        if _decrypted_or_none(cipher, getattr(config, column)) != new_value:
            changed.append(column)
        setattr(config, column, cipher.encrypt(new_value) if new_value else None)
    await session.flush()
    return SavedConfig(config, granted, _api_names(changed), robot_name)


def _decrypted_or_none(cipher: FieldCipher, stored: str | None) -> str | None:
    try:
        return cipher.decrypt(stored) if stored else None
    except DecryptionError:
        return None


_API_NAMES = {"root_rule_value": "root_rule", "root_rule_kind": "root_rule", "skopeo_timeout": "skopeo_timeout_interval",
              "internal_robot_id": "robot_username"}


def _api_names(columns: Iterable[str]) -> tuple[str, ...]:
    """Column names as the API calls the fields, for the action log."""
    return tuple(sorted({_API_NAMES.get(c, c) for c in columns}))


@dataclass(frozen=True)
class MirrorView:
    """A configuration as the API and the page show it (the password never leaves the service)."""

    is_enabled: bool
    external_reference: str
    external_registry_username: str | None
    external_registry_config: dict
    sync_interval: int
    sync_start_date: datetime | None
    sync_expiration_date: datetime | None
    sync_retries_remaining: int
    sync_status: str
    root_rule: dict
    robot_username: str | None
    skopeo_timeout_interval: int
    architecture_filter: list[str]
    has_password: bool


async def view(session: AsyncSession, cipher: FieldCipher, config: RepoMirrorConfig) -> MirrorView:
    robot = await session.get(User, config.internal_robot_id) if config.internal_robot_id else None
    try:
        username = cipher.decrypt(config.external_registry_username) if config.external_registry_username else None
    except DecryptionError:
        username = None
    return MirrorView(
        is_enabled=config.is_enabled, external_reference=config.external_reference,
        external_registry_username=username,
        external_registry_config=parse_registry_config(config.external_registry_config or {}),
        sync_interval=config.sync_interval, sync_start_date=config.sync_start_date,
        sync_expiration_date=config.sync_expiration_date, sync_retries_remaining=config.sync_retries_remaining,
        sync_status=MirrorStatus(config.sync_status).name,
        root_rule={"rule_kind": config.root_rule_kind, "rule_value": list(config.root_rule_value or [])},
        robot_username=robot.username if robot is not None else None,
        skopeo_timeout_interval=config.skopeo_timeout, architecture_filter=list(config.architecture_filter or []),
        has_password=bool(config.external_registry_password),
    )


async def is_mirror_robot(session: AsyncSession, repository_id: int, user_id: int | None) -> bool:
    """Whether this account is the configured mirror robot of the repository (the one writer a
    MIRROR repository accepts)."""
    if user_id is None:
        return False
    return bool(await session.scalar(select(exists().where(
        RepoMirrorConfig.repository_id == repository_id, RepoMirrorConfig.internal_robot_id == user_id))))


# --- sync state ----------------------------------------------------------------------------------

async def request_sync_now(session: AsyncSession, repo: RepoRef) -> RepoMirrorConfig:
    """Queue a sync for the next worker pass, whatever the schedule (enabled or not)."""
    _require_mirror_state(repo)
    config = await get_config(session, repo.id)
    if config is None:
        raise MirrorNotFound(f"{repo.path} has no mirror configuration")
    now = utcnow()
    if config.sync_status == MirrorStatus.SYNCING and config.sync_expiration_date and config.sync_expiration_date > now:
        raise MirrorConflict("a sync of this repository is running now; wait for it or cancel it first")
    result = await session.execute(
        update(RepoMirrorConfig)
        .where(RepoMirrorConfig.id == config.id, RepoMirrorConfig.sync_transaction_id == config.sync_transaction_id)
        .values(sync_status=MirrorStatus.SYNC_NOW, sync_expiration_date=None,
                sync_retries_remaining=max(config.sync_retries_remaining, 1), sync_transaction_id=_new_txn()))
    if result.rowcount != 1:
        raise MirrorConflict("the mirror's state changed meanwhile; try again")
    await session.refresh(config)
    return config


async def cancel_sync(session: AsyncSession, repo: RepoRef) -> RepoMirrorConfig:
    """Stop a running or queued sync (the worker stops before its next tag). As in Quay the
    schedule is cleared: nothing runs until "sync now" or a new start date."""
    config = await get_config(session, repo.id)
    if config is None:
        raise MirrorNotFound(f"{repo.path} has no mirror configuration")
    if config.sync_status not in (MirrorStatus.SYNCING, MirrorStatus.SYNC_NOW):
        raise MirrorError("no sync of this repository is running or queued")
    result = await session.execute(
        update(RepoMirrorConfig)
        .where(RepoMirrorConfig.id == config.id, RepoMirrorConfig.sync_transaction_id == config.sync_transaction_id)
        .values(sync_status=MirrorStatus.CANCEL, sync_start_date=None, sync_expiration_date=None,
                sync_retries_remaining=0, sync_transaction_id=_new_txn()))
    if result.rowcount != 1:
        raise MirrorConflict("the mirror's state changed meanwhile; try again")
    await session.refresh(config)
    return config


def _due(now: datetime):
    """SQL on the config row alone: due to sync now (the repository state is checked by a join)."""
    c = RepoMirrorConfig
    return or_(
        and_(c.sync_status == MirrorStatus.SYNC_NOW,
             or_(c.sync_expiration_date.is_(None), c.sync_expiration_date <= now)),
        and_(c.is_enabled.is_(True), c.sync_start_date <= now, c.sync_retries_remaining > 0,
             c.sync_status.not_in([MirrorStatus.SYNCING, MirrorStatus.SYNC_NOW])),
        and_(c.sync_status == MirrorStatus.SYNCING, c.sync_expiration_date <= now),
    )


async def due_configs(session: AsyncSession, *, limit: int = 50,
                      exclude: Iterable[int] = ()) -> list[tuple[int, str]]:
    """(config id, transaction id) of configurations due now: sync-now requests first, then the
    longest overdue."""
    now = utcnow()
    q = (select(RepoMirrorConfig.id, RepoMirrorConfig.sync_transaction_id)
         .join(Repository, Repository.id == RepoMirrorConfig.repository_id)
         .where(Repository.state == RepositoryState.MIRROR, _due(now))
         .order_by(case((RepoMirrorConfig.sync_status == MirrorStatus.SYNC_NOW, 0), else_=1),
                   RepoMirrorConfig.sync_start_date, RepoMirrorConfig.id)
         .limit(limit))
    excluded = list(exclude)
    if excluded:
        q = q.where(RepoMirrorConfig.id.not_in(excluded))
    return [(cid, txn) for cid, txn in (await session.execute(q)).all()]


def lease_seconds(timeout_s: int) -> int:
    return timeout_s + LEASE_MARGIN_S


async def claim(session: AsyncSession, config_id: int, transaction_id: str) -> str | None:
    """Take the configuration for one sync: SYNCING with a lease. Returns the new transaction id,
    or None when another worker got there first (or it is no longer due)."""
    now = utcnow()
    config = await session.get(RepoMirrorConfig, config_id)
    if config is None:
        return None
    new_txn = _new_txn()
    result = await session.execute(
        update(RepoMirrorConfig)
        .where(RepoMirrorConfig.id == config_id, RepoMirrorConfig.sync_transaction_id == transaction_id, _due(now))
        .values(sync_status=MirrorStatus.SYNCING, sync_transaction_id=new_txn,
                sync_expiration_date=now + timedelta(seconds=lease_seconds(config.skopeo_timeout)))
        .execution_options(synchronize_session=False))
    return new_txn if result.rowcount == 1 else None


async def renew_lease(session: AsyncSession, config_id: int, transaction_id: str, timeout_s: int) -> bool:
    """Extend the lease before the next step; False means the sync was cancelled or taken over."""
    result = await session.execute(
        update(RepoMirrorConfig)
        .where(RepoMirrorConfig.id == config_id, RepoMirrorConfig.sync_transaction_id == transaction_id,
               RepoMirrorConfig.sync_status == MirrorStatus.SYNCING)
        .values(sync_expiration_date=utcnow() + timedelta(seconds=lease_seconds(timeout_s)))
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def next_start(start: datetime | None, interval_s: int, now: datetime) -> datetime:
    """The next run on the schedule's grid (start + k·interval) strictly after now."""
    if start is None:
        return now + timedelta(seconds=interval_s)
    if start > now:
        return start
    periods = int((now - start).total_seconds() // interval_s) + 1
    return start + timedelta(seconds=periods * interval_s)


async def release(session: AsyncSession, config_id: int, transaction_id: str, outcome: MirrorStatus) -> bool:
    """End a claimed sync with SUCCESS, FAIL or CANCEL, as Quay does: success (or the last retry
    failing) moves the start date to the next interval and restores the retries; a failure with
    retries left keeps the start date, so the next pass tries again; a cancel clears the schedule.
    False when the claim was lost meanwhile (cancelled via the API, or a lease taken over)."""
    config = await session.scalar(select(RepoMirrorConfig).where(
        RepoMirrorConfig.id == config_id, RepoMirrorConfig.sync_transaction_id == transaction_id))
    if config is None:
        return False
    now = utcnow()
    retries, start = config.sync_retries_remaining, config.sync_start_date
    if outcome == MirrorStatus.FAIL:
        retries = max(0, retries - 1)
    if outcome == MirrorStatus.SUCCESS or (outcome == MirrorStatus.FAIL and retries < 1):
        start = next_start(start, config.sync_interval, now)
        retries = MAX_SYNC_RETRIES
    if outcome == MirrorStatus.CANCEL:
        start, retries = None, 0
    result = await session.execute(
        update(RepoMirrorConfig)
        .where(RepoMirrorConfig.id == config_id, RepoMirrorConfig.sync_transaction_id == transaction_id)
        .values(sync_status=outcome, sync_start_date=start, sync_retries_remaining=retries,
                sync_expiration_date=None, sync_transaction_id=_new_txn())
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


# --- what a worker needs for one sync ------------------------------------------------------------

@dataclass(frozen=True)
class SyncJob:
    """One claimed sync, with its secrets decrypted; repr never shows them."""

    config_id: int
    transaction_id: str
    repository_id: int
    namespace_id: int
    namespace: str
    repository: str
    external_reference: str
    globs: tuple[str, ...]
    architectures: tuple[str, ...]
    verify_tls: bool
    unsigned_images: bool
    proxy: dict = field(repr=False)
    timeout_s: int
    robot_id: int | None
    robot_username: str | None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    robot_token: str | None = field(default=None, repr=False)
    problem: str | None = None  # set when the sync cannot even start (no robot, unreadable secrets)

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.repository}"

    def secrets(self) -> list[str]:
        """Every secret value, for scrubbing tool output."""
        return [s for s in (self.password, self.robot_token) if s]


async def sync_job(session: AsyncSession, cipher: FieldCipher, config_id: int, transaction_id: str) -> SyncJob:
    config = await session.get(RepoMirrorConfig, config_id)
    repo, owner = await repositories.details(session, config.repository_id)
    registry = parse_registry_config(config.external_registry_config or {})
    problem = None
    username = password = token = None
    robot = await session.get(User, config.internal_robot_id) if config.internal_robot_id else None
    if robot is None or not robot.robot:
        problem = "the mirror robot account no longer exists; choose another robot in the mirror settings"
    elif not robot.enabled:
        problem = f"the mirror robot {robot.username} is disabled"
    try:
        username = cipher.decrypt(config.external_registry_username) if config.external_registry_username else None
        password = cipher.decrypt(config.external_registry_password) if config.external_registry_password else None
        if robot is not None and problem is None:
            row = await robots.robot_token_row(session, robot)
            token = robots.reveal_token(cipher, row) if row is not None else None
            if token is None:
                problem = f"the mirror robot {robot.username} has no token"
    except DecryptionError:
        problem = ("stored credentials cannot be decrypted with this DATABASE_SECRET_KEY; "
                   "save the mirror's username and password again")
    return SyncJob(
        config_id=config.id, transaction_id=transaction_id, repository_id=repo.id, namespace_id=owner.id,
        namespace=owner.username, repository=repo.name, external_reference=config.external_reference,
        globs=tuple(config.root_rule_value or ()), architectures=tuple(config.architecture_filter or ()),
        verify_tls=registry["verify_tls"], unsigned_images=registry["unsigned_images"],
        proxy={k: v for k, v in registry["proxy"].items() if v}, timeout_s=config.skopeo_timeout,
        robot_id=robot.id if robot is not None else None,
        robot_username=robot.username if robot is not None else None,
        username=username, password=password, robot_token=token, problem=problem)


async def status_of(session: AsyncSession, config_id: int) -> tuple[MirrorStatus, str] | None:
    row = (await session.execute(select(RepoMirrorConfig.sync_status, RepoMirrorConfig.sync_transaction_id)
                                 .where(RepoMirrorConfig.id == config_id))).first()
    return (MirrorStatus(row[0]), row[1]) if row else None


async def abandon(session: AsyncSession, config_id: int, transaction_id: str) -> None:
    """A stopping worker gives its sync back: the lease ends now, so the next pass takes it over."""
    await session.execute(
        update(RepoMirrorConfig)
        .where(RepoMirrorConfig.id == config_id, RepoMirrorConfig.sync_transaction_id == transaction_id,
               RepoMirrorConfig.sync_status == MirrorStatus.SYNCING)
        .values(sync_expiration_date=utcnow())
        .execution_options(synchronize_session=False))
