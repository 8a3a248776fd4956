"""The permission matrix through /api/v1: the cast of matrix.py, each action of the REST API, on the
public and the private repository.

Users call with an OAuth token carrying every scope (the API-side equivalent of a browser session)
or, in the second run, through a real session sign-in (cookie + X-CSRF-Token); tokens carry their
one scope; the robot presents its token as a bearer, which the API refuses. A refused call answers
401 or 403 (or 404 where the caller may not even see the repository); reading a private repository
one may not read answers 404 exactly as a repository that does not exist.
"""

import httpx
import pytest
from protocol.v2client import V2Client

from quaymaster.accounts import service as users

from . import matrix
from .helpers import signin

API = "/api/v1"
ACTIONS = ("pull", "push", "delete tag", "change permission", "read logs", "create repo", "admin org")
DENIED = {401, 403, 404}
GRANTEE = "carol"  # not in the cast: granting her a role changes nobody's rights in the matrix


@pytest.fixture
def config(config):
    return {**config, "SUPER_USERS": ["root"]}


@pytest.fixture
async def cast(ctx, http):
    callers = await matrix.build(ctx)
    async with ctx.db.write() as session:
        await users.create_user(session, GRANTEE, f"{GRANTEE}@example.com", f"{GRANTEE}-password")
    # One tagged image in each repository, pushed by the org admin.
    client = V2Client(http)
    digests = {}
    for path in matrix.REPOS.values():
        digests[path], _ = await client.push_image(path, "v1", await client.auth(path))
    return callers, digests


def _slug(name: str) -> str:
    return name.replace(" ", "-").replace(":", "-")


class Cell:
    """Runs the actions of one caller against one repository and records each outcome."""

    def __init__(self, client: httpx.AsyncClient, headers: dict, admin: dict, digest: str):
        self.client, self.headers, self.admin, self.digest = client, headers, admin, digest

    async def run(self, action: str, name: str, visibility: str, path: str) -> httpx.Response:
        c, h, slug = self.client, self.headers, _slug(name)
        repo = f"{API}/repository/{path}"
        if action == "pull":
            return await c.get(repo, headers=h)
        if action == "push":
            return await c.put(f"{repo}/tag/retarget", json={"manifest_digest": self.digest}, headers=h)
        if action == "delete tag":
            # The tag exists before every attempt, so a 404 can only mean "not for you".
            r = await c.put(f"{repo}/tag/doomed", json={"manifest_digest": self.digest}, headers=self.admin)
            assert r.status_code == 201, r.text
            return await c.delete(f"{repo}/tag/doomed", headers=h)
        if action == "change permission":
            return await c.put(f"{repo}/permissions/user/{GRANTEE}", json={"role": "read"}, headers=h)
        if action == "read logs":
            return await c.get(f"{repo}/logs", headers=h)
        if action == "create repo":
            return await c.post(f"{API}/repository", headers=h, json={
                "namespace": matrix.ORG, "repository": f"new-{slug}-{visibility}", "visibility": visibility,
                "description": ""})
        if action == "admin org":
            return await c.put(f"{API}/organization/{matrix.ORG}", headers=h,
                               json={"email": f"acme-{slug}-{visibility}@example.com"})
        raise AssertionError(action)


async def _run_matrix(http: httpx.AsyncClient, callers: dict[str, matrix.Caller], digests: dict[str, str],
                      clients: dict[str, tuple[httpx.AsyncClient, dict]]) -> list[str]:
    """Every caller x action x visibility; returns the mismatches (empty when all agree)."""
    admin = callers["org admin"].api_headers
    missing = await http.get(f"{API}/repository/{matrix.ORG}/no-such-repo", headers=admin)
    assert missing.status_code == 404
    failures = []
    for visibility, path in matrix.REPOS.items():
        for name in callers:
            client, headers = clients[name]
            cell = Cell(client, headers, admin, digests[path])
            for action in ACTIONS:
                r = await cell.run(action, name, visibility, path)
                want = matrix.expected_api(action, name, visibility)
                got = r.status_code
                if want and not 200 <= got < 300:
                    failures.append(f"{name} {action} {visibility}: expected 2xx, got {got} {r.text}")
                elif not want and got not in DENIED:
                    failures.append(f"{name} {action} {visibility}: expected 401/403/404, got {got} {r.text}")
                elif (not want and action == "pull" and visibility == "private"
                      and name not in ("robot",)):
                    # Not readable must look exactly like not there.
                    body = r.json()
                    like = missing.json()
                    if got != 404 or body["error_type"] != like["error_type"] or \
                            body["error_message"] != like["error_message"].replace("no-such-repo", "private"):
                        failures.append(f"{name} pull private: not a missing-repository 404: {got} {r.text}")
    return failures


async def test_api_matrix_with_tokens(http, cast):
    callers, digests = cast
    clients = {name: (http, caller.api_headers) for name, caller in callers.items()}
    failures = await _run_matrix(http, callers, digests, clients)
    assert not failures, "\n".join(failures)


async def test_api_matrix_with_sessions(ctx, http, cast):
    """The same matrix with users signed in through POST /api/v1/signin (cookie + CSRF header)."""
    callers, digests = cast
    transport = httpx.ASGITransport(app=ctx.app)
    clients: dict[str, tuple[httpx.AsyncClient, dict]] = {}
    opened = []
    try:
        for name, caller in callers.items():
            is_user = caller.basic is not None and not name.startswith("token ") and name != "robot"
            if not is_user:
                clients[name] = (http, caller.api_headers)
                continue
            client = httpx.AsyncClient(transport=transport, base_url=str(http.base_url))
            opened.append(client)
            csrf = await signin(client, *caller.basic)
            clients[name] = (client, csrf)
        failures = await _run_matrix(http, callers, digests, clients)
    finally:
        for client in opened:
            await client.aclose()
    assert not failures, "\n".join(failures)
