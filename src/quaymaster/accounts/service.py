"""Account operations: the only code that writes the user table."""

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
    """A rejected account operation, with a message fit for the user."""


@dataclass(frozen=True)
class Identity:
    """Who is making a request, as far as authorization cares."""

    user_id: int | None
    username: str
    kind: str = "user"  # user | robot | anonymous
    superuser: bool = False

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"


ANONYMOUS = Identity(user_id=None, username="(anonymous)", kind="anonymous")


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
        raise AccountError(f"the name {username!r} is already taken")
    if email and await session.scalar(select(User.id).where(func.lower(User.email) == email.lower())):
        raise AccountError(f"the email {email!r} is already in use")
    password_hash = await asyncio.to_thread(hash_password, password)
    user = User(uuid=str(uuid.uuid4()), username=username, email=email, password_hash=password_hash)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise AccountError(f"the name {username!r} is already taken") from None
    return user


async def get_namespace(session: AsyncSession, name: str) -> User | None:
    return await session.scalar(select(User).where(User.username == name))


async def verify_password(session: AsyncSession, username: str, password: str) -> User | None:
    """The enabled, non-robot, non-org user with this password, else None (constant-ish time)."""
    user = await session.scalar(
        select(User).where(User.username == username, User.organization.is_(False), User.robot.is_(False))
    )
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
