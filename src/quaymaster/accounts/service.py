"""User accounts: creation, lookup, passwords. Organizations, robots and tokens have their own
modules beside this one (orgs.py, robots.py, apptokens.py); together they write the accounts tables."""

import asyncio
import re
import uuid
from dataclasses import dataclass

import bcrypt
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts.models import User
from quaymaster.db.base import utcnow

USERNAME_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 8
BCRYPT_ROUNDS = 12  # Quay's cost; tests lower it to keep thousands of logins fast


class AccountError(Exception):
    """A rejected account operation, with a message fit for the user (HTTP 400 by default)."""

    status = 400


class NotFound(AccountError):
    status = 404


class Conflict(AccountError):
    status = 409


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
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if await get_namespace(session, username) is not None:
        raise Conflict(f"the name {username!r} is already taken")
    if email and await session.scalar(select(User.id).where(func.lower(User.email) == email.lower())):
        raise Conflict(f"the email {email!r} is already in use")
    password_hash = await asyncio.to_thread(hash_password, password)
    user = User(uuid=str(uuid.uuid4()), username=username, email=email, password_hash=password_hash)
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

    await session.execute(sql_delete(OAuthAccessToken).where(OAuthAccessToken.authorized_user_id == user.id))
    await session.execute(sql_delete(Star).where(Star.user_id == user.id))
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
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    user.password_hash = await asyncio.to_thread(hash_password, password)
