"""Turn what a client sends (Basic credentials, a bearer token, a session) into an Identity.

Basic usernames dispatch as in Quay: `$app` -> app-specific token, `$oauthtoken` -> OAuth token,
`owner+name` -> robot token, anything else -> the user's password."""

from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts import apptokens, robots
from quaymaster.accounts import service as users
from quaymaster.accounts.models import User
from quaymaster.accounts.service import Identity
from quaymaster.db.encryption import FieldCipher
from quaymaster.settings import Settings


def identity_for(user: User, settings: Settings, *, via: str, scopes: frozenset[str] | None = None) -> Identity:
    return Identity(user_id=user.id, username=user.username, kind="robot" if user.robot else "user",
                    superuser=not user.robot and settings.is_superuser(user.username), scopes=scopes, via=via)


async def from_basic(session: AsyncSession, settings: Settings, cipher: FieldCipher,
                     username: str, password: str) -> Identity | None:
    """None for wrong credentials; users.LoginThrottled propagates while an account backs off."""
    if username == "$app":
        user = await apptokens.verify_app_token(session, cipher, password)
        return identity_for(user, settings, via="app_token") if user else None
    if username == "$oauthtoken":
        found = await apptokens.verify_oauth_token(session, password)
        return identity_for(found[0], settings, via="oauth", scopes=found[1]) if found else None
    if "+" in username:
        robot = await robots.verify_robot(session, cipher, username, password)
        return identity_for(robot, settings, via="robot") if robot else None
    user = await users.verify_password(session, username, password)
    return identity_for(user, settings, via="password") if user else None


async def from_bearer(session: AsyncSession, settings: Settings, token: str) -> Identity | None:
    found = await apptokens.verify_oauth_token(session, token)
    return identity_for(found[0], settings, via="oauth", scopes=found[1]) if found else None
