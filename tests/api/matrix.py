"""The cast of the permission matrix: one organization, every kind of caller, two repositories.

alice creates organization `acme` (so she is in its owners team). Teams: plain (member role, no
permissions), readers/writers/repoadmins (member role with read/write/admin on both repositories),
creators (creator role). A robot `acme+bot` has write on both repositories. Tokens are OAuth
tokens of alice with one scope each. `root` is a superuser with no membership.

On /api/v1 every user calls with an OAuth token carrying all scopes (what a browser session
amounts to); the robot presents its token as a bearer, which the API does not accept.
"""

import base64
from dataclasses import dataclass

from quaymaster.accounts import apptokens, orgs, permissions, robots
from quaymaster.accounts import service as users
from quaymaster.content import service as content

ORG = "acme"
REPOS = {"private": "acme/private", "public": "acme/public"}
TEAM_MEMBERS = {"plain": ("member", "mem", None), "readers": ("member", "rdr", "read"),
                "writers": ("member", "wrt", "write"), "repoadmins": ("member", "radm", "admin"),
                "creators": ("creator", "crt", None)}
SCOPES = ("repo:read", "repo:write", "repo:admin", "repo:create", "user:read", "org:admin", "super:user")


@dataclass
class Caller:
    """How one role authenticates: Basic credentials for /v2/auth and headers for /api/v1."""

    name: str
    basic: tuple[str, str] | None
    api_headers: dict


def _basic_header(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def _full_token(session, user) -> dict:
    """An OAuth token with every scope: the API-side equivalent of the user's browser session."""
    _, token = await apptokens.create_oauth_token(session, user, frozenset(apptokens.SCOPES))
    return {"Authorization": f"Bearer {token}"}


async def build(ctx) -> dict[str, Caller]:
    callers: dict[str, Caller] = {"anonymous": Caller("anonymous", None, {})}
    async with ctx.db.write() as session:
        alice = await users.require_user(session, "alice")
        bob = await users.require_user(session, "bob")
        callers["outsider"] = Caller("outsider", ("bob", "bob-password"), await _full_token(session, bob))
        org = await orgs.create_org(session, ORG, "acme@example.com", alice)
        repo_ids = {}
        for visibility, path in REPOS.items():
            repo = await content.create_repository(session, org, path.split("/")[1], visibility, creator_id=None)
            repo_ids[visibility] = repo.id
        for team_name, (role, member, repo_role) in TEAM_MEMBERS.items():
            team, _ = await orgs.upsert_team(session, org, team_name, role)
            user = await users.create_user(session, member, f"{member}@example.com", f"{member}-password")
            await orgs.add_team_member(session, org, team, user)
            if repo_role:
                for repo_id in repo_ids.values():
                    await permissions.set_permission(session, repo_id, repo_role, team=team)
            callers[f"team {team_name}"] = Caller(team_name, (member, f"{member}-password"),
                                                  await _full_token(session, user))
        callers["org admin"] = Caller("org admin", ("alice", "alice-password"), await _full_token(session, alice))
        robot, token = await robots.create_robot(session, ctx.cipher, org, "bot")
        for repo_id in repo_ids.values():
            await permissions.set_permission(session, repo_id, "write", user=robot)
        callers["robot"] = Caller("robot", ("acme+bot", token), {"Authorization": f"Bearer {token}"})
        root = await users.create_user(session, "root", "root@example.com", "root-password")
        callers["superuser"] = Caller("superuser", ("root", "root-password"), await _full_token(session, root))
        for scope in SCOPES:
            _, oauth = await apptokens.create_oauth_token(session, alice, frozenset({scope}))
            callers[f"token {scope}"] = Caller(f"token {scope}", ("$oauthtoken", oauth),
                                               {"Authorization": f"Bearer {oauth}"})
    return callers


# Which callers may do each action on a private repository; on the public one, pull is open to all.
READERS = {"team readers", "team writers", "team repoadmins", "org admin", "robot",
           "token repo:read", "token repo:write", "token repo:admin"}
WRITERS = {"team writers", "team repoadmins", "org admin", "robot", "token repo:write", "token repo:admin"}
ADMINS = {"team repoadmins", "org admin", "token repo:admin"}
CREATORS = {"team creators", "org admin", "token repo:create"}
ORG_ADMINS = {"org admin", "token org:admin"}


def expected(action: str, caller: str, visibility: str) -> bool:
    if action == "pull":
        return visibility == "public" or caller in READERS
    return caller in {"push": WRITERS, "delete tag": WRITERS, "change permission": ADMINS,
                      "read logs": ADMINS, "create repo": CREATORS, "admin org": ORG_ADMINS}[action]


def expected_api(action: str, caller: str, visibility: str) -> bool:
    """The same rights through /api/v1, except that robots cannot use the API at all."""
    return caller != "robot" and expected(action, caller, visibility)
