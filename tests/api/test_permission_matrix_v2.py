"""The permission matrix through /v2: what each caller's registry token grants, and what /v2 then allows."""

import jwt
import pytest
from protocol.v2client import V2Client

from . import matrix

V2_ACTIONS = ("pull", "push", "delete tag", "create repo")


@pytest.fixture
def config(config):
    return {**config, "SUPER_USERS": ["root"]}


@pytest.fixture
async def cast(ctx, http):
    callers = await matrix.build(ctx)
    # One tagged image in each repository, pushed by the org admin.
    client = V2Client(http)
    for path in matrix.REPOS.values():
        await client.push_image(path, "v1", await client.auth(path))
    return callers


async def _grant(http, caller: matrix.Caller, scope: str) -> tuple[list[str], str | None]:
    params = {"service": "registry.test", "scope": scope}
    r = await http.get("/v2/auth", params=params, auth=caller.basic)
    if r.status_code != 200:
        return [], None
    token = r.json()["token"]
    return jwt.decode(token, options={"verify_signature": False})["access"][0]["actions"], token


async def test_v2_matrix(http, cast):
    failures = []
    for visibility, path in matrix.REPOS.items():
        for name, caller in cast.items():
            actions, token = await _grant(http, caller, f"repository:{path}:pull,push")
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            pulled = (await http.get(f"/v2/{path}/manifests/v1", headers=headers)).status_code == 200
            may_push = "push" in actions
            outcomes = {"pull": pulled, "push": may_push}
            if may_push:
                r = await http.delete(f"/v2/{path}/manifests/doomed", headers=headers)
                outcomes["delete tag"] = r.status_code in (202, 404)
            else:
                r = await http.delete(f"/v2/{path}/manifests/doomed", headers=headers)
                outcomes["delete tag"] = r.status_code != 401
            for action, got in outcomes.items():
                if got != matrix.expected(action, name, visibility):
                    failures.append(f"{name} {action} {visibility}: got {got}")
    for name, caller in cast.items():
        actions, _ = await _grant(http, caller, f"repository:acme/new-{name.replace(' ', '-').replace(':', '-')}:pull,push")
        if ("push" in actions) != matrix.expected("create repo", name, "private"):
            failures.append(f"{name} create repo via push: got {actions}")
    assert not failures, "\n".join(failures)
