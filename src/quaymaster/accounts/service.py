"""User accounts: creation, lookup, passwords. Organizations, robots and tokens have their own
modules beside this one (orgs.py, robots.py, apptokens.py); together they write the accounts tables."""

import asyncio
import logging
import re
import unicodedata
import uuid
from dataclasses import dataclass

import bcrypt
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts.models import FederatedLogin, User
from quaymaster.db.base import utcnow

log = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_BYTES = 72
BCRYPT_ROUNDS = 12  # Quay's cost; tests lower it to keep thousands of logins fast
# The time-machine window new namespaces get (DEFAULT_TAG_EXPIRATION); see apply_settings.
DEFAULT_TAG_EXPIRATION_S = 1209600


def apply_settings(settings) -> None:
    """Take the account defaults from the config; every process calls it once its settings load."""
    from quaymaster.settings.units import parse_duration

    global DEFAULT_TAG_EXPIRATION_S
    DEFAULT_TAG_EXPIRATION_S = parse_duration(settings.DEFAULT_TAG_EXPIRATION)


class AccountError(Exception):
    """A rejected account operation, with a message fit for the user (HTTP 400 by default)."""

    status = 400


class NotFound(AccountError):
    status = 404


class Conflict(AccountError):
    status = 409


class AuthUnavailable(AccountError):
    """The outside service that checks passwords (LDAP) cannot be asked: a refusal, not a crash."""

    status = 403


@dataclass(frozen=True)
class Identity:
    """Who is making a request, as far as authorization cares.

    `scopes` is None for full rights (password, session, robot); a token's scopes cap them."""

    user_id: int | None
    username: str
    kind: str = "user"  # user | robot | anonymous
    superuser: bool = False
    scopes: frozenset[str] | None = None
    via: str = "password"  # password | session | robot | app_token | oauth | anonymous

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"

    def has_scope(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes


ANONYMOUS = Identity(user_id=None, username="(anonymous)", kind="anonymous", via="anonymous")


def validate_username(name: str) -> None:
    if not (2 <= len(name) <= 255) or not USERNAME_RE.match(name):
        raise AccountError(
            "invalid username: use 2-255 lowercase letters, digits and single . _ - between them"
        )


def validate_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:  # bcrypt refuses longer input (it used to truncate)
        raise AccountError(f"password must be at most {MAX_PASSWORD_BYTES} bytes")


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode()


def _check_password(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), password_hash.encode())
    except ValueError:
        return False


# A fixed hash to compare against for unknown users, so timing does not reveal which names exist.
_DUMMY_HASH = hash_password("not-a-real-password")


async def create_user(session: AsyncSession, username: str, email: str | None, password: str) -> User:
    validate_username(username)
    if email is not None and not EMAIL_RE.match(email):
        raise AccountError(f"invalid email address {email!r}")
    validate_password(password)
    if await get_namespace(session, username) is not None:
        raise Conflict(f"the name {username!r} is already taken")
    if email and await session.scalar(select(User.id).where(func.lower(User.email) == email.lower())):
        raise Conflict(f"the email {email!r} is already in use")
    password_hash = await asyncio.to_thread(hash_password, password)
    user = User(uuid=str(uuid.uuid4()), username=username, email=email, password_hash=password_hash,
                removed_tag_expiration_s=DEFAULT_TAG_EXPIRATION_S)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"the name {username!r} is already taken") from None
    return user


async def get_namespace(session: AsyncSession, name: str) -> User | None:
    return await session.scalar(select(User).where(User.username == name))


async def get_user(session: AsyncSession, name: str) -> User | None:
    """A real user (not an organization, not a robot)."""
    return await session.scalar(select(User).where(
        User.username == name, User.organization.is_(False), User.robot.is_(False)))


async def require_user(session: AsyncSession, name: str) -> User:
    user = await get_user(session, name)
    if user is None:
        raise NotFound(f"user {name!r} does not exist")
    return user


async def count_users(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(User).where(
        User.organization.is_(False), User.robot.is_(False))) or 0


async def list_users(session: AsyncSession, *, include_disabled: bool = True) -> list[User]:
    q = select(User).where(User.organization.is_(False), User.robot.is_(False)).order_by(User.username)
    if not include_disabled:
        q = q.where(User.enabled.is_(True))
    return list((await session.scalars(q)).all())


async def set_email(session: AsyncSession, user: User, email: str) -> None:
    if not EMAIL_RE.match(email):
        raise AccountError(f"invalid email address {email!r}")
    taken = await session.scalar(select(User.id).where(func.lower(User.email) == email.lower(), User.id != user.id))
    if taken:
        raise Conflict(f"the email {email!r} is already in use")
    user.email = email


async def set_enabled(session: AsyncSession, user: User, enabled: bool) -> None:
    user.enabled = enabled


async def delete_user(session: AsyncSession, user: User) -> None:
    """Remove the account row with its API tokens and stars (callers clear repositories,
    robots, memberships and permissions first)."""
    from sqlalchemy import delete as sql_delete

    from quaymaster.accounts.models import OAuthAccessToken, Star
    from quaymaster.content import quota

    await session.execute(sql_delete(OAuthAccessToken).where(OAuthAccessToken.authorized_user_id == user.id))
    await session.execute(sql_delete(Star).where(Star.user_id == user.id))
    await session.execute(sql_delete(FederatedLogin).where(FederatedLogin.user_id == user.id))
    await quota.forget_namespace(session, user.id)
    await session.delete(user)


class LoginThrottled(AccountError):
    """Too many failed logins in a row: the account waits before it accepts another try."""

    status = 429

    def __init__(self, retry_after: int):
        super().__init__(f"too many failed login attempts; try again in {retry_after} seconds")
        self.retry_after = retry_after


THROTTLE_AFTER = 5
THROTTLE_MAX_S = 300


def _throttle_remaining(user: User) -> int:
    """Seconds this user must still wait: doubling from 1 s after the fifth failure, at most 5 min."""
    if user.invalid_login_attempts < THROTTLE_AFTER or user.last_invalid_login is None:
        return 0
    window = min(2 ** (user.invalid_login_attempts - THROTTLE_AFTER), THROTTLE_MAX_S)
    elapsed = (utcnow() - user.last_invalid_login).total_seconds()
    return max(0, int(window - elapsed + 0.999))


async def verify_password(session: AsyncSession, username: str, password: str) -> User | None:
    """The enabled, non-robot, non-org user with this password, else None (constant-ish time).

    Raises LoginThrottled while the account is backing off after repeated failures."""
    user = await session.scalar(
        select(User).where(User.username == username, User.organization.is_(False), User.robot.is_(False))
    )
    if user is not None:
        wait = _throttle_remaining(user)
        if wait:
            raise LoginThrottled(wait)
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    ok = await asyncio.to_thread(_check_password, password, stored)
    if user is None or not ok or not user.enabled:
        if user is not None and not ok:
            user.invalid_login_attempts += 1
            user.last_invalid_login = utcnow()
        return None
    if user.invalid_login_attempts:
        user.invalid_login_attempts = 0
    return user


async def set_password(session: AsyncSession, user: User, password: str) -> None:
    validate_password(password)
    user.password_hash = await asyncio.to_thread(hash_password, password)


# --- federated logins (LDAP): accounts the directory vouches for ---------------------------------

def check_not_throttled(user: User) -> None:
    """Raise LoginThrottled while the account is backing off after repeated failures."""
    wait = _throttle_remaining(user)
    if wait:
        raise LoginThrottled(wait)


def record_login_failure(user: User) -> None:
    user.invalid_login_attempts += 1
    user.last_invalid_login = utcnow()


def record_login_success(user: User) -> None:
    if user.invalid_login_attempts:
        user.invalid_login_attempts = 0


def username_candidates(name: str):
    """Local names for an outside identity, best first: Quay's rules (lowercase ASCII letters and
    digits, single . _ - between them, 2-255 long), then the same with 1, 2, 3 ... appended."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    base = re.sub(r"[^a-z0-9._-]+", "_", ascii_name)
    base = re.sub(r"([._-])[._-]+", r"\1", base).strip("._-")[:240].strip("._-")
    base = base.ljust(2, "0") if base else "user"
    yield base
    for n in range(1, 10000):
        yield f"{base}{n}"


async def get_federated_user(session: AsyncSession, service: str, ident: str) -> User | None:
    return await session.scalar(select(User).join(FederatedLogin, FederatedLogin.user_id == User.id).where(
        FederatedLogin.service == service, FederatedLogin.service_ident == ident.lower()))


async def federated_ident(session: AsyncSession, user_id: int, service: str) -> str | None:
    """The outside identity (e.g. LDAP uid) this account is linked to, if any."""
    return await session.scalar(select(FederatedLogin.service_ident).where(
        FederatedLogin.user_id == user_id, FederatedLogin.service == service))


async def _email_free(session: AsyncSession, email: str | None, user_id: int | None = None) -> bool:
    if not email or not EMAIL_RE.match(email):
        return False
    q = select(User.id).where(func.lower(User.email) == email.lower())
    if user_id is not None:
        q = q.where(User.id != user_id)
    return not await session.scalar(q)


async def create_federated_user(session: AsyncSession, service: str, ident: str, email: str | None) -> User:
    """A new account for an outside identity, with no local password, linked to it.

    The name comes from the identity (see username_candidates); an email another account already
    uses is left off rather than refusing the sign-in."""
    if email and not await _email_free(session, email):
        log.warning("%s user %r: email %r is not usable here (invalid or already taken); account created without it",
                    service, ident, email)
        email = None
    for candidate in username_candidates(ident):
        if await get_namespace(session, candidate) is None:
            break
    else:  # pragma: no cover - ten thousand namesakes
        raise Conflict(f"no free username for {ident!r}")
    user = User(uuid=str(uuid.uuid4()), username=candidate, email=email, password_hash=None,
                removed_tag_expiration_s=DEFAULT_TAG_EXPIRATION_S)
    session.add(user)
    await session.flush()
    session.add(FederatedLogin(user_id=user.id, service=service, service_ident=ident.lower(),
                               metadata_json={"service_username": ident}))
    await session.flush()
    return user


async def update_federated_email(session: AsyncSession, user: User, email: str | None) -> None:
    """Take the email the outside service has now, when it is valid and no other account uses it."""
    if not email or (user.email or "").lower() == email.lower():
        return
    if await _email_free(session, email, user.id):
        user.email = email
    else:
        log.warning("user %s: email %r from the directory is invalid or taken; keeping %r", user.username, email,
                    user.email)
