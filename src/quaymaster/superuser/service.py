"""Superuser operations: global messages, service keys, and registry-wide account administration.

Messages and service keys are this domain's own rows. Account changes are composed from the
accounts and content services, so their rules (last owner, owned repositories) still hold."""

import asyncio
import hashlib
import json
import re
import secrets
import string
import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts import apptokens, orgs, permissions, robots
from quaymaster.accounts import service as accounts
from quaymaster.accounts.models import ServiceKey, User
from quaymaster.accounts.service import AccountError, Conflict, NotFound
from quaymaster.content import gc
from quaymaster.content import service as content
from quaymaster.db.base import utcnow
from quaymaster.superuser.models import Message

# --- global messages -----------------------------------------------------------------------------

MEDIA_TYPES = ("text/plain", "text/markdown")
SEVERITIES = ("info", "warning", "error")
MAX_MESSAGE_LENGTH = 10_000


async def list_messages(session: AsyncSession) -> list[Message]:
    return list((await session.scalars(select(Message).order_by(Message.id))).all())


async def create_message(session: AsyncSession, content_text: str, media_type: str, severity: str) -> Message:
    if not content_text or not content_text.strip():
        raise AccountError("a message needs some content")
    if len(content_text) > MAX_MESSAGE_LENGTH:
        raise AccountError(f"a message may be at most {MAX_MESSAGE_LENGTH} characters")
    if media_type not in MEDIA_TYPES:
        raise AccountError(f"invalid media_type {media_type!r}; use {' or '.join(MEDIA_TYPES)}")
    if severity not in SEVERITIES:
        raise AccountError(f"invalid severity {severity!r}; use {', '.join(SEVERITIES)}")
    message = Message(uuid=str(uuidlib.uuid4()), content=content_text, media_type=media_type, severity=severity)
    session.add(message)
    await session.flush()
    return message


async def delete_message(session: AsyncSession, message_uuid: str) -> Message:
    message = await session.scalar(select(Message).where(Message.uuid == message_uuid))
    if message is None:
        raise NotFound(f"message {message_uuid} does not exist")
    await session.delete(message)
    return message


# --- service keys --------------------------------------------------------------------------------

APPROVAL_SUPERUSER = "Super User API"  # Quay's ServiceKeyApprovalType.SUPERUSER
# The key table has no approver or notes columns (Quay keeps them in a ServiceKeyApproval
# table); they live under this metadata key, which views strip and updates cannot touch.
APPROVAL_META = "_approval"
KEY_NAME_RE = re.compile(r"^[\sa-zA-Z0-9\-_:/]*$")
SERVICE_RE = re.compile(r"^[a-zA-Z0-9_.\-]{1,255}$")
KEY_BITS = 2048


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: the row plus the PEM halves (the private one is never stored)."""

    row: ServiceKey
    public_pem: str
    private_pem: str


def _kid(public_jwk: dict) -> str:
    """RFC 7638 thumbprint, the same kind of id the registry's own keys carry."""
    canonical = json.dumps({k: public_jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    return jwt.utils.base64url_encode(hashlib.sha256(canonical.encode()).digest()).decode()


def _check_name(name: str) -> None:
    if len(name) > 255 or not KEY_NAME_RE.match(name):
        raise AccountError(f"invalid service key name {name!r}: use letters, digits, spaces and - _ : /")


def _check_expiration(expiration: datetime | None) -> None:
    if expiration is not None and expiration <= utcnow():
        raise AccountError("the expiration date cannot be in the past")


def _is_live_instance_key(row: ServiceKey) -> bool:
    """A running registry node's signing key: removing it would break that node's tokens."""
    alive = row.expiration_date is None or row.expiration_date > utcnow()
    return (row.metadata_json or {}).get("created_by") == "instance" and alive


def public_metadata(row: ServiceKey) -> dict:
    return {k: v for k, v in (row.metadata_json or {}).items() if k != APPROVAL_META}


def approval(row: ServiceKey) -> dict | None:
    """Quay's approval block: type, date, and who approved with what notes (None if pending)."""
    if row.approved_date is None:
        return None
    extra = (row.metadata_json or {}).get(APPROVAL_META) or {}
    return {"approval_type": row.approval_type, "approved_date": row.approved_date,
            "approver": extra.get("approver"), "notes": extra.get("notes", "")}


async def list_keys(session: AsyncSession) -> list[ServiceKey]:
    return list((await session.scalars(select(ServiceKey).order_by(ServiceKey.created_date, ServiceKey.id))).all())


async def require_key(session: AsyncSession, kid: str) -> ServiceKey:
    row = await session.scalar(select(ServiceKey).where(ServiceKey.kid == kid))
    if row is None:
        raise NotFound(f"service key {kid} does not exist")
    return row


def _generate() -> tuple[dict, str, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    public_jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption()).decode()
    return public_jwk, public_pem, private_pem


async def create_key(session: AsyncSession, *, name: str, service: str, expiration: datetime | None,
                     metadata: dict, approver: str, notes: str = "") -> NewKey:
    """Generate an RSA key for `service`, approved at once by the superuser who asked for it."""
    _check_name(name)
    if not SERVICE_RE.match(service):
        raise AccountError(f"invalid service {service!r}: use 1-255 letters, digits and . _ -")
    _check_expiration(expiration)
    public_jwk, public_pem, private_pem = await asyncio.to_thread(_generate)
    kid = _kid(public_jwk)
    public_jwk["kid"] = kid
    now = utcnow()
    meta = {k: v for k, v in metadata.items() if k != APPROVAL_META}
    meta[APPROVAL_META] = {"approver": approver, "notes": notes}
    row = ServiceKey(name=name, kid=kid, service=service, jwk=public_jwk, metadata_json=meta, created_date=now,
                     expiration_date=expiration, approval_type=APPROVAL_SUPERUSER, approved_date=now)
    session.add(row)
    await session.flush()
    return NewKey(row, public_pem, private_pem)


async def update_key(session: AsyncSession, row: ServiceKey, *, name: str | None = None,
                     metadata: dict | None = None, set_expiration: bool = False,
                     expiration: datetime | None = None) -> None:
    """Rename, merge metadata into, or re-date a key (Quay merges metadata rather than replacing it)."""
    if _is_live_instance_key(row):
        raise AccountError("this key belongs to a running registry node and renews itself; leave it alone")
    if name is not None:
        _check_name(name)
        row.name = name
    if metadata is not None:
        merged = dict(row.metadata_json or {})
        merged.update({k: v for k, v in metadata.items() if k != APPROVAL_META})
        row.metadata_json = merged
    if set_expiration:
        _check_expiration(expiration)
        row.expiration_date = expiration


async def approve_key(session: AsyncSession, row: ServiceKey, approver: str, notes: str = "") -> bool:
    """Approve a pending key; False if it was approved already (nothing changes then)."""
    if row.approved_date is not None:
        return False
    row.approval_type = APPROVAL_SUPERUSER
    row.approved_date = utcnow()
    row.metadata_json = {**(row.metadata_json or {}), APPROVAL_META: {"approver": approver, "notes": notes}}
    return True


async def delete_key(session: AsyncSession, row: ServiceKey) -> None:
    if _is_live_instance_key(row):
        raise AccountError("this key belongs to a running registry node; it expires on its own once the node stops")
    await session.execute(delete(ServiceKey).where(ServiceKey.id == row.id))


# --- accounts, registry-wide ---------------------------------------------------------------------

GENERATED_PASSWORD_ALPHABET = string.ascii_uppercase + string.digits
GENERATED_PASSWORD_LENGTH = 32


def generate_password() -> str:
    return "".join(secrets.choice(GENERATED_PASSWORD_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH))


async def create_user(session: AsyncSession, username: str, email: str | None) -> tuple[User, str]:
    """A user with a generated password, which the caller shows once."""
    password = generate_password()
    return await accounts.create_user(session, username, email, password), password


async def _owns_repositories(session: AsyncSession, namespace: User) -> bool:
    live, pending = await content.namespace_repository_counts(session, namespace.id)
    return bool(live or pending)


async def _flush_or_conflict(session: AsyncSession, what: str) -> None:
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"{what} is still referenced elsewhere (for example by OAuth tokens or stars) "
                       "and cannot be deleted yet") from None


async def delete_user(session: AsyncSession, user: User) -> None:
    """Delete a user with their robots, memberships, permissions and app tokens; refused while
    they are the last owner of an organization. Repositories they own are queued for garbage
    collection, which removes the account row after them (the name is free at once)."""
    for robot, _ in await robots.list_robots(session, user):
        await robots.delete_robot(session, robot)
    for org, _ in await orgs.orgs_of(session, user.id):
        try:
            await orgs.remove_org_member(session, org, user)
        except AccountError as exc:
            raise AccountError(f"cannot remove {user.username} from organization {org.username}: {exc}") from None
    for repository_id, _ in await permissions.permissions_of_user(session, user):
        await permissions.delete_permission(session, repository_id, user=user)
    for org in await orgs.list_orgs(session):
        for proto in await orgs.list_prototypes(session, org):
            if user.id in (proto.delegate_user_id, proto.activating_user_id):
                await orgs.delete_prototype(session, proto)
    for token in await apptokens.list_app_tokens(session, user):
        await apptokens.revoke_app_token(session, token)
    await session.flush()
    if await _owns_repositories(session, user):
        await gc.queue_namespace_deletion(session, user)
        return
    await accounts.delete_user(session, user)
    await _flush_or_conflict(session, f"user {user.username}")


async def delete_org(session: AsyncSession, org: User) -> None:
    """Delete an organization with its teams and robots; with repositories, queue it for garbage
    collection (which deletes them, then the organization; the name is free at once)."""
    if await _owns_repositories(session, org):
        await orgs.clear_org(session, org)
        await gc.queue_namespace_deletion(session, org)
        return
    await orgs.delete_org(session, org)
    await _flush_or_conflict(session, f"organization {org.username}")


async def take_ownership(session: AsyncSession, org: User, user: User) -> bool:
    """Put the user in the organization's owners team (made again if missing); False if already in."""
    team = await orgs.get_team(session, org, orgs.OWNERS_TEAM)
    if team is None:
        team, _ = await orgs.upsert_team(session, org, orgs.OWNERS_TEAM, "admin")
    return await orgs.add_team_member(session, org, team, user)
