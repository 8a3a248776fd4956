"""App-specific tokens (CLI passwords, login `$app`) and OAuth bearer tokens with Quay's scopes."""

import hashlib
import hmac
import secrets
import string
import uuid as uuidlib
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts.models import AppSpecificAuthToken, OAuthAccessToken, User
from quaymaster.accounts.service import AccountError, NotFound
from quaymaster.db.base import utcnow
from quaymaster.db.encryption import DecryptionError, FieldCipher

ALPHABET = string.ascii_letters + string.digits
SCOPES = ("repo:read", "repo:write", "repo:admin", "repo:create", "user:read", "user:admin", "org:admin",
          "super:user")
OAUTH_TOKEN_LIFETIME = timedelta(days=3650)  # Quay's default: ten years


def _random(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


# --- app-specific tokens -----------------------------------------------------------------------

async def create_app_token(session: AsyncSession, cipher: FieldCipher, user: User, title: str,
                           expiration: datetime | None = None) -> tuple[AppSpecificAuthToken, str]:
    """Returns the row and the full 120-character token, shown once."""
    if not title or len(title) > 255:
        raise AccountError("an app token needs a title of 1-255 characters")
    name, secret = _random(60), _random(60)
    row = AppSpecificAuthToken(user_id=user.id, uuid=str(uuidlib.uuid4()), title=title, token_name=name,
                               token_secret=cipher.encrypt(secret), expiration=expiration)
    session.add(row)
    await session.flush()
    return row, name + secret


async def list_app_tokens(session: AsyncSession, user: User) -> list[AppSpecificAuthToken]:
    return list((await session.scalars(select(AppSpecificAuthToken).where(
        AppSpecificAuthToken.user_id == user.id).order_by(AppSpecificAuthToken.created))).all())


async def require_app_token(session: AsyncSession, user: User, token_uuid: str) -> AppSpecificAuthToken:
    row = await session.scalar(select(AppSpecificAuthToken).where(
        AppSpecificAuthToken.user_id == user.id, AppSpecificAuthToken.uuid == token_uuid))
    if row is None:
        raise NotFound("app token does not exist")
    return row


def full_app_token(cipher: FieldCipher, row: AppSpecificAuthToken) -> str:
    return row.token_name + cipher.decrypt(row.token_secret)


async def revoke_app_token(session: AsyncSession, row: AppSpecificAuthToken) -> None:
    await session.delete(row)


async def verify_app_token(session: AsyncSession, cipher: FieldCipher, token: str) -> User | None:
    if len(token) != 120:
        return None
    row = await session.scalar(select(AppSpecificAuthToken).where(AppSpecificAuthToken.token_name == token[:60]))
    if row is None or (row.expiration is not None and row.expiration < utcnow()):
        return None
    try:
        secret = cipher.decrypt(row.token_secret)
    except DecryptionError:
        return None
    if not hmac.compare_digest(secret.encode(), token[60:].encode()):
        return None
    user = await session.get(User, row.user_id)
    if user is None or not user.enabled:
        return None
    row.last_accessed = utcnow()
    return user


# --- OAuth bearer tokens -----------------------------------------------------------------------

def parse_scopes(value: str) -> frozenset[str]:
    scopes = frozenset(s for s in value.replace(",", " ").split() if s)
    unknown = scopes - set(SCOPES)
    if unknown:
        raise AccountError(f"unknown scope(s): {', '.join(sorted(unknown))}")
    return scopes


async def create_oauth_token(session: AsyncSession, user: User, scopes: frozenset[str]) -> tuple[OAuthAccessToken, str]:
    """A 40-character bearer token; only the sha256 of its secret half is stored (it is random,
    so a fast hash is enough and the API does not pay for bcrypt on every call)."""
    name, code = _random(20), _random(20)
    row = OAuthAccessToken(uuid=str(uuidlib.uuid4()), authorized_user_id=user.id, scope=" ".join(sorted(scopes)),
                           token_name=name, token_code=hashlib.sha256(code.encode()).hexdigest(),
                           expires_at=utcnow() + OAUTH_TOKEN_LIFETIME)
    session.add(row)
    await session.flush()
    return row, name + code


async def verify_oauth_token(session: AsyncSession, token: str) -> tuple[User, frozenset[str]] | None:
    if len(token) != 40:
        return None
    row = await session.scalar(select(OAuthAccessToken).where(OAuthAccessToken.token_name == token[:20]))
    if row is None or row.expires_at < utcnow():
        return None
    if not hmac.compare_digest(row.token_code, hashlib.sha256(token[20:].encode()).hexdigest()):
        return None
    user = await session.get(User, row.authorized_user_id)
    if user is None or not user.enabled:
        return None
    return user, frozenset(row.scope.split())
