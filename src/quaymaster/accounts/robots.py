"""Robot accounts (`owner+name`): users and organizations own them; they log in with a token."""

import hmac
import secrets
import string
import uuid as uuidlib

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts.models import RepositoryPermission, RobotAccountToken, TeamMember, User
from quaymaster.accounts.service import AccountError, Conflict, NotFound, get_namespace
from quaymaster.db.encryption import DecryptionError, FieldCipher

ROBOT_SHORTNAME_RE = r"^[a-z][a-z0-9_]{1,254}$"
TOKEN_ALPHABET = string.ascii_uppercase + string.digits
TOKEN_LENGTH = 64


def new_token() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def robot_name(owner: User, shortname: str) -> str:
    import re

    if not re.match(ROBOT_SHORTNAME_RE, shortname):
        raise AccountError("invalid robot name: start with a letter; use lowercase letters, digits and _")
    return f"{owner.username}+{shortname}"


async def create_robot(session: AsyncSession, cipher: FieldCipher, owner: User, shortname: str,
                       description: str = "", unstructured: dict | None = None) -> tuple[User, str]:
    """Returns the robot and its token (shown to whoever created it)."""
    name = robot_name(owner, shortname)
    if await get_namespace(session, name) is not None:
        raise Conflict(f"robot {name!r} already exists")
    robot = User(uuid=str(uuidlib.uuid4()), username=name, robot=True, email=None)
    session.add(robot)
    await session.flush()
    token = new_token()
    session.add(RobotAccountToken(robot_account_id=robot.id, token=cipher.encrypt(token),
                                  description=description or "", unstructured_json=unstructured or {}))
    return robot, token


async def get_robot(session: AsyncSession, owner: User, shortname: str) -> User | None:
    return await session.scalar(select(User).where(
        User.username == f"{owner.username}+{shortname}", User.robot.is_(True)))


async def require_robot(session: AsyncSession, owner: User, shortname: str) -> User:
    robot = await get_robot(session, owner, shortname)
    if robot is None:
        raise NotFound(f"robot {owner.username}+{shortname} does not exist")
    return robot


async def robot_by_name(session: AsyncSession, fullname: str) -> User | None:
    return await session.scalar(select(User).where(User.username == fullname, User.robot.is_(True)))


async def list_robots(session: AsyncSession, owner: User) -> list[tuple[User, RobotAccountToken]]:
    prefix = owner.username + "+"
    rows = (await session.execute(
        select(User, RobotAccountToken).join(RobotAccountToken, RobotAccountToken.robot_account_id == User.id)
        .where(User.robot.is_(True), User.username.startswith(prefix, autoescape=True))
        .order_by(User.username))).all()
    return [(u, t) for u, t in rows]


async def robot_token_row(session: AsyncSession, robot: User) -> RobotAccountToken:
    return await session.scalar(select(RobotAccountToken).where(RobotAccountToken.robot_account_id == robot.id))


def reveal_token(cipher: FieldCipher, row: RobotAccountToken) -> str:
    return cipher.decrypt(row.token)


async def regenerate_token(session: AsyncSession, cipher: FieldCipher, robot: User) -> str:
    row = await robot_token_row(session, robot)
    token = new_token()
    row.token = cipher.encrypt(token)
    return token


async def delete_robot(session: AsyncSession, robot: User) -> None:
    await session.execute(delete(RobotAccountToken).where(RobotAccountToken.robot_account_id == robot.id))
    await session.execute(delete(RepositoryPermission).where(RepositoryPermission.user_id == robot.id))
    await session.execute(delete(TeamMember).where(TeamMember.user_id == robot.id))
    await session.delete(robot)


async def verify_robot(session: AsyncSession, cipher: FieldCipher, fullname: str, token: str) -> User | None:
    """The robot if the token matches and its owner is enabled."""
    robot = await robot_by_name(session, fullname)
    if robot is None or not robot.enabled:
        return None
    owner = await get_namespace(session, fullname.split("+", 1)[0])
    if owner is None or not owner.enabled:
        return None
    row = await robot_token_row(session, robot)
    try:
        expected = cipher.decrypt(row.token) if row else None
    except DecryptionError:
        return None
    if expected is None or not hmac.compare_digest(expected.encode(), token.encode()):
        return None
    return robot
