"""Robot accounts (`owner+name`): users and organizations own them; they log in with a token."""

import hmac
import secrets
import string
import uuid as uuidlib

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from quaymaster.accounts.models import (
    PermissionPrototype,
    RepositoryPermission,
    RobotAccountToken,
    Team,
    TeamMember,
    User,
)
from quaymaster.accounts.service import AccountError, Conflict, NotFound, get_namespace
from quaymaster.db.encryption import DecryptionError, FieldCipher

ROBOT_SHORTNAME_RE = r"^[a-z][a-z0-9_]{1,254}$"
TOKEN_ALPHABET = string.ascii_uppercase + string.digits
TOKEN_LENGTH = 64
MAX_NAME_LENGTH = 255  # the namespace column's width


def new_token() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def robot_name(owner: User, shortname: str) -> str:
    import re

    if not re.match(ROBOT_SHORTNAME_RE, shortname):
        raise AccountError("invalid robot name: start with a letter; use lowercase letters, digits and _")
    name = f"{owner.username}+{shortname}"
    if len(name) > MAX_NAME_LENGTH:
        raise AccountError(f"robot name too long: {owner.username}+<name> must fit in {MAX_NAME_LENGTH} characters")
    return name


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


async def list_robots(session: AsyncSession, owner: User,
                      limit: int | None = None) -> list[tuple[User, RobotAccountToken]]:
    prefix = owner.username + "+"
    q = (select(User, RobotAccountToken).join(RobotAccountToken, RobotAccountToken.robot_account_id == User.id)
         .where(User.robot.is_(True), User.username.startswith(prefix, autoescape=True))
         .order_by(User.username))
    if limit is not None:
        q = q.limit(limit)
    rows = (await session.execute(q)).all()
    return [(u, t) for u, t in rows]


def shortname(robot: User) -> str:
    return robot.username.split("+", 1)[1]


async def teams_of_robots(session: AsyncSession, robot_ids: list[int]) -> dict[int, list[str]]:
    """Team names per robot id, for listings with ?permissions=true (one query, not one per robot)."""
    out: dict[int, list[str]] = {rid: [] for rid in robot_ids}
    if robot_ids:
        rows = (await session.execute(
            select(TeamMember.user_id, Team.name).join(Team, Team.id == TeamMember.team_id)
            .where(TeamMember.user_id.in_(robot_ids)).order_by(Team.name))).all()
        for robot_id, team in rows:
            out[robot_id].append(team)
    return out


async def permissions_of_robots(session: AsyncSession, robot_ids: list[int]) -> dict[int, list[tuple[int, str]]]:
    """Direct (repository id, role) grants per robot id."""
    out: dict[int, list[tuple[int, str]]] = {rid: [] for rid in robot_ids}
    if robot_ids:
        rows = (await session.execute(
            select(RepositoryPermission.user_id, RepositoryPermission.repository_id, RepositoryPermission.role)
            .where(RepositoryPermission.user_id.in_(robot_ids)))).all()
        for robot_id, repo_id, role in rows:
            out[robot_id].append((repo_id, role))
    return out


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
    # Default permissions naming the robot would otherwise keep the row alive (foreign keys).
    await session.execute(delete(PermissionPrototype).where(or_(
        PermissionPrototype.delegate_user_id == robot.id, PermissionPrototype.activating_user_id == robot.id)))
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
