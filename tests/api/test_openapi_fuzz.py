"""The served OpenAPI document, and schemathesis fuzzing every /api/v1 operation for server errors.

Schemathesis drives the ASGI app in-process on its own event loop, so the app here starts its
services through its lifespan (as `quaymaster registry` does), on SQLite only: the routers are the
same on PostgreSQL and the database-specific paths are covered elsewhere. Each operation gets a
few generated requests, sent once with a superuser's OAuth token and once anonymously; any 5xx
fails. First valid data with random path parameters, then valid and invalid data with the path
parameters pinned to objects that exist (organization acme, repository acme/app, tag v1, robot
acme+bot, team owners), so generated bodies and queries reach past the 404s.
"""

import asyncio
import re
import shutil

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.errors import Unsatisfiable
from protocol.v2client import V2Client
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Err
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi

from quaymaster.accounts import apptokens, orgs, permissions, robots
from quaymaster.accounts import service as accounts
from quaymaster.app import bind_context, create_app, start_context
from quaymaster.content import service as content
from quaymaster.settings.model import settings_from_dict

from .helpers import assert_error, bearer

API = "/api/v1"
DISCOVERY = f"{API}/discovery"
EXAMPLES_PER_OPERATION = 3
DEADLINE_MS = 5000
SEED = 20240501
# Objects the seeded registry holds, for the run with pinned path parameters.
EXISTING = {"orgname": "acme", "namespace": "acme", "name": "app", "tag": "v1", "username": "alice",
            "membername": "alice", "teamname": "owners", "shortname": "bot", "prefix": "a"}
# Writes to a READ_ONLY or MIRROR repository answer 503 by design (as in Quay), so the state changes
# go to a repository of their own and acme/app stays NORMAL for everything else.
PINNED_OVERRIDES = {"PUT /repository/{namespace}/{name}/changestate": {"name": "scratch"}}


@pytest.fixture
def db_uri(tmp_path, sqlite_template) -> str:
    path = tmp_path / "quaymaster.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def config(config):
    return {**config, "SUPER_USERS": ["root"], "FEATURE_USER_CREATION": True}


@pytest.fixture(autouse=True)
def hypothesis_storage(tmp_path):
    """Hypothesis caches what it learns under ./.hypothesis; keep that out of the source tree."""
    set_hypothesis_home_dir(tmp_path / "hypothesis")
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture
def fuzz_settings(config, monkeypatch):
    monkeypatch.setattr(accounts, "BCRYPT_ROUNDS", 4)
    # Sign-ins of unknown users compare against this hash; Quay's cost would make each one 0.25 s.
    monkeypatch.setattr(accounts, "_DUMMY_HASH", accounts.hash_password("not-a-real-password"))
    return settings_from_dict(config)


async def _seed(app_settings) -> str:
    """root (a superuser who owns organization acme) with an image in acme/app; returns root's token."""
    ctx = await start_context(app_settings)
    app = create_app(app_settings)
    bind_context(app, ctx)
    try:
        async with ctx.db.write() as session:
            root = await accounts.create_user(session, "root", "root@example.com", "root-password")
            alice = await accounts.create_user(session, "alice", "alice@example.com", "alice-password")
            org = await orgs.create_org(session, "acme", "acme@example.com", root)
            team, _ = await orgs.upsert_team(session, org, "readers", "member")
            await orgs.add_team_member(session, org, team, alice)
            repo = await content.create_repository(session, org, "app", "private", creator_id=root.id)
            await content.create_repository(session, org, "scratch", "private", creator_id=root.id)
            robot, _ = await robots.create_robot(session, ctx.cipher, org, "bot")
            await permissions.set_permission(session, repo.id, "write", user=robot)
            _, token = await apptokens.create_oauth_token(session, root, frozenset(apptokens.SCOPES))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://registry.test") as http:
            client = V2Client(http)
            await client.push_image("acme/app", "v1", await client.auth("acme/app", user="root"))
        await ctx.audit.flush()
    finally:
        await ctx.db.dispose()
    return token


CONFIG = SchemathesisConfig.from_dict({"seed": SEED, "generation": {"max-examples": EXAMPLES_PER_OPERATION}})
FUZZ = settings(max_examples=EXAMPLES_PER_OPERATION, deadline=DEADLINE_MS, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])


@pytest.fixture
def superuser(fuzz_settings) -> dict:
    """Seeds the database; the superuser's OAuth token (every scope) as headers."""
    return {"Authorization": f"Bearer {asyncio.run(_seed(fuzz_settings))}"}


@pytest.fixture
def api_schema(fuzz_settings, superuser):
    """The schema as the app serves it; schemathesis starts the app's lifespan on first use."""
    loaded = schemathesis.openapi.from_asgi(DISCOVERY, create_app(fuzz_settings), config=CONFIG)
    loaded.config.update(base_url=f"http://{asgi.HOST}{API}")
    yield loaded
    asgi.shutdown_lifespans()  # flushes the audit log and closes the database


def _describe(case, headers: dict | None, problem: str) -> str:
    who = "superuser" if headers else "anonymous"
    return f"{case.operation.label} as {who}: {problem}\n    {case.as_curl_command(headers)}"


def _check(case, headers: dict | None) -> str | None:
    """One request; what went wrong if the app answered 5xx (or raised instead of answering)."""
    try:  # a copy: the call adds its own headers to the dict it is given
        response = case.call(headers=dict(headers) if headers else None)
    except Exception as err:  # noqa: BLE001 - the app raised instead of answering
        return f"{type(err).__name__}: {err}"
    try:
        case.validate_response(response, checks=[not_a_server_error])
    except (Failure, FailureGroup):
        return f"{response.status_code} {response.text[:300]}"
    return None


def _has_inputs_to_break(operation) -> bool:
    """Negative data only where there is something to break: a body or query parameters. (Plain
    string path parameters cannot be made invalid, and Hypothesis would spend its time rejecting.)"""
    return bool(operation.body or operation.get_parameter_set(ParameterLocation.QUERY).schema["properties"])


def _plan(api_schema) -> list[tuple[object, GenerationMode, dict | None]]:
    """(operation, data, fixed path parameters): every operation with valid data and random path
    parameters; then, pinned to existing objects, valid and invalid data, deletions last."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    plan = [(op, GenerationMode.POSITIVE, None) for op in operations]
    for op in sorted(operations, key=lambda op: op.method.upper() == "DELETE"):
        names = re.findall(r"{(\w+)}", op.path)
        fixed = {n: EXISTING[n] for n in names if n in EXISTING} | PINNED_OVERRIDES.get(op.label, {})
        if fixed:
            plan.append((op, GenerationMode.POSITIVE, fixed))
        if _has_inputs_to_break(op):
            plan.append((op, GenerationMode.NEGATIVE, fixed or None))
    return plan


def _fuzz(api_schema, superuser: dict) -> tuple[list[str], int]:
    """Runs the plan, each case as the superuser and anonymously; the 5xx found and the number of requests."""
    failures: list[str] = []
    sent = 0
    for operation, mode, fixed in _plan(api_schema):
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)

        @FUZZ
        @given(case=strategy)
        def run(case):
            nonlocal sent
            for headers in (superuser, None):
                sent += 1
                problem = _check(case, headers)
                if problem:
                    failures.append(_describe(case, headers, problem))

        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing the pinned parameters leave can be made invalid
    return sorted(set(failures)), sent


def test_no_server_errors(api_schema, superuser):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 90, "the served schema lost operations"
    failures, sent = _fuzz(api_schema, superuser)
    assert sent > 4 * len(operations)
    assert not failures, f"{len(failures)} server errors:\n" + "\n".join(failures)


# --- the document itself -------------------------------------------------------------------------

QUAY_PATHS = ("/repository", "/organization/{orgname}", "/user/", "/superuser/users/", "/find/repositories",
              "/messages")


async def test_openapi_document_is_valid_and_has_quay_paths(http):
    r = await http.get(DISCOVERY)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    document = r.json()
    assert document["openapi"].startswith("3.")
    assert document["servers"] == [{"url": API}]
    loaded = schemathesis.openapi.from_dict(document)
    loaded.validate()  # raises when the document does not conform to the OpenAPI meta-schema
    problems = [str(result.err()) for result in loaded.get_all_operations() if isinstance(result, Err)]
    assert not problems
    for path in QUAY_PATHS:
        assert path in document["paths"], path
    assert {"get", "post"} <= set(document["paths"]["/repository"])
    assert {"get", "put", "delete"} <= set(document["paths"]["/organization/{orgname}"])
    assert {"get", "post"} <= set(document["paths"]["/messages"])


# --- what the fuzzing found ------------------------------------------------------------------------

LONG_PASSWORD = "p" * 60 + "\u00e9" * 7  # 67 characters, 74 bytes: more than bcrypt takes


async def test_passwords_longer_than_bcrypt_takes_are_refused(ctx, http):
    """bcrypt raised on passwords over 72 bytes, so setting one answered 500."""
    async with ctx.db.write() as session:
        await accounts.create_user(session, "root", "root@example.com", "root-password")
    root, alice = await bearer(ctx, "root"), await bearer(ctx, "alice")
    r = await http.put(f"{API}/superuser/users/alice", json={"password": LONG_PASSWORD}, headers=root)
    assert_error(r, 400)
    assert_error(await http.put(f"{API}/user/", json={"password": LONG_PASSWORD}, headers=alice), 400)
    assert_error(await http.post(f"{API}/user/", json={"username": "carol", "email": "carol@example.com",
                                                       "password": LONG_PASSWORD}), 400)
    # 72 bytes is still fine, and signs in.
    fits = "p" * 62 + "\u00e9" * 5
    assert (await http.put(f"{API}/user/", json={"password": fits}, headers=alice)).status_code == 200
    assert (await http.post(f"{API}/signin", json={"username": "alice", "password": fits})).status_code == 200
