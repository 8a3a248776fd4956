"""GET /api/v1/repository/{ns}/{repo}/manifest/{digest}/security (Quay's shape and statuses,
read permission, 404 with the feature off) and the scanner's webhook POST /secscan/notification."""

import shutil
import time
import uuid

import httpx
import jwt
import pytest
from sqlalchemy import select
from support.secscanstub import PSK, install, scanner_config

from quaymaster.content.models import Manifest
from quaymaster.secscan import api as secscan_api
from quaymaster.secscan import service
from quaymaster.secscan.client import decode_psk
from quaymaster.secscan.models import IndexStatus

from .helpers import assert_error, signin
from .repohelpers import API, make_repo, push


@pytest.fixture
def db_uri(request, tmp_path):
    """SQLite only: these routes hold no SQL of their own (the worker tests run on both)."""
    path = tmp_path / "quaymaster.db"
    shutil.copy(request.getfixturevalue("sqlite_template"), path)
    return f"sqlite:///{path}"


@pytest.fixture
def config(config, request):
    return config if "feature_off" in request.node.name else scanner_config(config)


@pytest.fixture
def scanner(monkeypatch):
    yield install(monkeypatch)
    service.clear_cache()


def url(repo: str, digest: str, vulnerabilities: bool = True) -> str:
    return f"{API}/repository/{repo}/manifest/{digest}/security?vulnerabilities={str(vulnerabilities).lower()}"


async def set_status(ctx, repo: str, digest: str, status: IndexStatus) -> None:
    async with ctx.db.write() as session:
        manifest = await session.scalar(select(Manifest).where(Manifest.digest == digest))
        await service.record(session, manifest.id, manifest.repository_id, status, indexer_hash="state-1")


async def test_statuses_and_a_scanned_report(ctx, http, scanner):
    digest = await push(http, "alice/app", "v1")
    await signin(http, "alice")
    assert (await http.get(url("alice/app", digest))).json() == {"status": "queued", "data": None}
    for status, word in [(IndexStatus.MANIFEST_UNSUPPORTED, "unsupported"), (IndexStatus.FAILED, "failed"),
                         (IndexStatus.SCAN_RETRIES_EXHAUSTED, "failed"),
                         (IndexStatus.MANIFEST_LAYER_TOO_LARGE, "manifest_layer_too_large")]:
        await set_status(ctx, "alice/app", digest, status)
        assert (await http.get(url("alice/app", digest))).json() == {"status": word, "data": None}
    await set_status(ctx, "alice/app", digest, IndexStatus.COMPLETED)
    body = (await http.get(url("alice/app", digest))).json()
    assert body["status"] == "scanned"
    layer = body["data"]["Layer"]
    assert layer["Name"] == digest and layer["IndexedByVersion"] == 4
    (expat,) = [f for f in layer["Features"] if f["Name"] == "expat"]
    assert [v["Name"] for v in expat["Vulnerabilities"]] == ["CVE-2018-20843", "CVE-2019-15903"]
    assert expat["Vulnerabilities"][0]["FixedBy"] == "2.2.7-r0"
    # Without vulnerabilities: the packages alone.
    plain = (await http.get(url("alice/app", digest, vulnerabilities=False))).json()
    assert plain["status"] == "scanned"
    assert all(f["Vulnerabilities"] == [] for f in plain["data"]["Layer"]["Features"])
    assert len(plain["data"]["Layer"]["Features"]) == len(layer["Features"])


async def test_reports_are_cached_briefly(ctx, http, scanner):
    digest = await push(http, "alice/app", "v1")
    await set_status(ctx, "alice/app", digest, IndexStatus.COMPLETED)
    await signin(http, "alice")
    for _ in range(3):
        assert (await http.get(url("alice/app", digest))).json()["status"] == "scanned"
    asked = [r for r in scanner.requests if "vulnerability_report" in r.url.path]
    assert len(asked) == 1


async def test_read_permission_is_required(ctx, http, scanner):
    private = await push(http, "alice/app", "v1")
    await make_repo(ctx, "alice/open", "public")
    public = await push(http, "alice/open", "v1")
    assert_error(await http.get(url("alice/app", private)), 404)  # anonymous, private repository
    assert (await http.get(url("alice/open", public))).json()["status"] == "queued"  # anonymous, public
    await signin(http, "bob")
    assert_error(await http.get(url("alice/app", private)), 404)
    http.cookies.clear()
    await signin(http, "alice")
    assert (await http.get(url("alice/app", private))).status_code == 200
    assert_error(await http.get(url("alice/app", "sha256:" + "0" * 64)), 404)
    assert_error(await http.get(url("alice/app", public)), 404)  # a digest of another repository


async def test_scanner_trouble_is_a_downstream_issue_and_a_lost_index_is_requeued(ctx, http, scanner):
    digest = await push(http, "alice/app", "v1")
    await set_status(ctx, "alice/app", digest, IndexStatus.COMPLETED)
    await signin(http, "alice")
    scanner.vulnerability_answer = httpx.Response(200, content=b"{ not json")
    assert_error(await http.get(url("alice/app", digest)), 520)
    service.clear_cache()
    scanner.vulnerability_answer = httpx.Response(202)  # no vulnerability data yet
    assert (await http.get(url("alice/app", digest))).json()["status"] == "queued"
    service.clear_cache()
    scanner.vulnerability_answer = httpx.Response(404, json={"code": "not-found", "message": "no index"})
    assert (await http.get(url("alice/app", digest))).json()["status"] == "queued"
    async with ctx.db.read() as session:
        manifest = await session.scalar(select(Manifest).where(Manifest.digest == digest))
        assert await service.status_of(session, manifest.id) is None  # the worker indexes it again


async def test_feature_off_is_404(ctx, http):
    digest = await push(http, "alice/app", "v1")
    await signin(http, "alice")
    assert_error(await http.get(url("alice/app", digest)), 404)
    assert (await http.post("/secscan/notification", json={"notification_id": "x", "callback": "y"})).status_code == 404


def webhook_token(**overrides) -> str:
    now = int(time.time())
    claims = {"iss": "clair-notifier", "iat": now, "nbf": now - 60, "exp": now + 60, **overrides}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, decode_psk(PSK), algorithm="HS256")


async def test_notification_webhook(ctx, http, scanner):
    set_id = str(uuid.uuid4())  # the process remembers the ids it handled
    notification = f"/notifier/api/v1/notification/{set_id}"
    body = {"notification_id": set_id, "callback": f"http://scanner.test{notification}"}
    post = http.post
    assert (await post("/secscan/notification", json=body)).status_code == 401
    for bad in (webhook_token(nbf=None), webhook_token(iat=None), webhook_token(exp=int(time.time()) - 120),
                webhook_token(iat=int(time.time()) + 600),
                jwt.encode({"iat": 1, "nbf": 1, "exp": 2 ** 31}, b"a different key of enough length!", "HS256")):
        r = await post("/secscan/notification", json=body, headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, bad
    auth = {"Authorization": f"Bearer {webhook_token()}"}
    assert (await post("/secscan/notification", json={"notification_id": set_id}, headers=auth)).status_code == 400
    assert (await post("/secscan/notification", content=b"nope", headers=auth)).status_code == 400
    traversal = {"notification_id": "../../indexer/api/v1/index_report/sha256:" + "a" * 64, "callback": "x"}
    assert (await post("/secscan/notification", json=traversal, headers=auth)).status_code == 400
    r = await post("/secscan/notification", json=body, headers=auth)
    assert r.status_code == 200 and r.text == "Okay"
    await secscan_api.drain()
    paths = [(q.method, q.url.path) for q in scanner.requests]
    assert paths == [("GET", notification), ("GET", notification), ("DELETE", notification)]
    assert scanner.requests[1].url.params["next"] == "n1"
    # The scanner redelivers: answered, not processed twice by this process.
    assert (await post("/secscan/notification", json=body, headers=auth)).text == "Okay"
    await secscan_api.drain()
    assert len(scanner.requests) == 3
