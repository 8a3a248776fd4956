"""Turn what a client sends (Basic credentials, a bearer token, a session) into an Identity.

Basic usernames dispatch as in Quay: `$app` -> app-specific token, `$oauthtoken` -> OAuth token,
`owner+name` -> robot token, anything else -> the user's password, checked by the local database
or, with AUTHENTICATION_TYPE: LDAP, by the directory alone (`password_login`)."""

import dataclasses

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts import apptokens, ldap, robots
from quaymaster.accounts import service as users
from quaymaster.accounts.models import User
from quaymaster.accounts.service import Identity
from quaymaster.db.encryption import FieldCipher
from quaymaster.settings import Settings


def identity_for(user: User, settings: Settings, *, via: str, scopes: frozenset[str] | None = None) -> Identity:
    return Identity(user_id=user.id, username=user.username, kind="robot" if user.robot else "user",
                    superuser=not user.robot and settings.is_superuser(user.username), scopes=scopes, via=via)


async def identity_of(session: AsyncSession, user: User, settings: Settings, *, via: str,
                      scopes: frozenset[str] | None = None) -> Identity:
    """identity_for, plus LDAP_SUPERUSER_FILTER for accounts linked to the directory."""
    identity = identity_for(user, settings, via=via, scopes=scopes)
    if (settings.AUTHENTICATION_TYPE == "LDAP" and settings.LDAP_SUPERUSER_FILTER and identity.kind == "user"
            and not identity.superuser):
        uid = await users.federated_ident(session, user.id, ldap.SERVICE)
        if uid is not None:
            try:
                superuser = await ldap.authenticator(settings).is_superuser(uid)
            except users.AuthUnavailable:
                superuser = False
            if superuser:
                identity = dataclasses.replace(identity, superuser=True)
    return identity


async def password_login(session: AsyncSession, settings: Settings, username: str,
                         password: str) -> tuple[User, bool] | None:
    """(user, superuser) for a username and password, else None; the one place passwords are checked.

    Database: the local password. LDAP: the directory only (local passwords are not accepted), the
    account created on the first sign-in and its email kept in step. Raises users.LoginThrottled
    while an account backs off, users.AuthUnavailable when the directory cannot be asked."""
    if settings.AUTHENTICATION_TYPE != "LDAP":
        user = await users.verify_password(session, username, password)
        return (user, settings.is_superuser(user.username)) if user else None
    directory = ldap.authenticator(settings)
    # The directory is asked before the database is touched, so a slow directory holds no lock.
    entry = await directory.lookup(username)
    accepted = entry is not None and await directory.check_password(entry, password)
    if entry is None:
        return None
    user = await users.get_federated_user(session, ldap.SERVICE, entry.uid)
    if user is not None:
        users.check_not_throttled(user)
        if not accepted:
            users.record_login_failure(user)
            return None
    if not accepted:
        return None
    if user is None:
        try:
            async with session.begin_nested():
                user = await users.create_federated_user(session, ldap.SERVICE, entry.uid, entry.email)
        except IntegrityError:  # the same first sign-in, racing on another connection
            user = await users.get_federated_user(session, ldap.SERVICE, entry.uid)
            if user is None:
                raise
    else:
        await users.update_federated_email(session, user, entry.email)
    if not user.enabled or user.robot or user.organization:
        return None
    users.record_login_success(user)
    return user, entry.superuser or settings.is_superuser(user.username)


async def confirm_password(session: AsyncSession, settings: Settings, user: User, password: str) -> bool:
    """Whether `password` is this signed-in user's (a fresh login): the local one, or with LDAP the
    password of the directory entry the account is linked to."""
    if settings.AUTHENTICATION_TYPE != "LDAP":
        return await users.verify_password(session, user.username, password) is not None
    uid = await users.federated_ident(session, user.id, ldap.SERVICE)
    if uid is None:
        return False
    found = await password_login(session, settings, uid, password)
    return found is not None and found[0].id == user.id


async def from_basic(session: AsyncSession, settings: Settings, cipher: FieldCipher,
                     username: str, password: str) -> Identity | None:
    """None for wrong credentials; users.LoginThrottled propagates while an account backs off,
    users.AuthUnavailable when the LDAP directory cannot be asked."""
    if username == "$app":
        user = await apptokens.verify_app_token(session, cipher, password)
        return await identity_of(session, user, settings, via="app_token") if user else None
    if username == "$oauthtoken":
        found = await apptokens.verify_oauth_token(session, password)
        return await identity_of(session, found[0], settings, via="oauth", scopes=found[1]) if found else None
    if "+" in username:
        robot = await robots.verify_robot(session, cipher, username, password)
        return identity_for(robot, settings, via="robot") if robot else None
    found = await password_login(session, settings, username, password)
    if found is None:
        return None
    user, superuser = found
    return dataclasses.replace(identity_for(user, settings, via="password"), superuser=superuser)


async def from_bearer(session: AsyncSession, settings: Settings, token: str) -> Identity | None:
    found = await apptokens.verify_oauth_token(session, token)
    return await identity_of(session, found[0], settings, via="oauth", scopes=found[1]) if found else None
