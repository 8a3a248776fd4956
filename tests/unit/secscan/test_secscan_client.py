"""The Clair v4 client: the JWT it signs, the requests it sends (checked against Quay's copy of
the Clair OpenAPI spec) and how it reads failures. A stub transport plays the scanner here, only
to produce error answers on demand; the real scanner is driven in tests/integration."""

import base64
import json
import time
from pathlib import Path

import httpx
import jsonschema
import jwt
import pytest
from support.clairschema import SPEC

from quaymaster.secscan.client import (
    ClairClient,
    LayerRef,
    NotReady,
    ScannerError,
    sign_request_token,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "secscan"
PSK_BYTES = b"a pre-shared key of 32 bytes or more"
PSK = base64.b64encode(PSK_BYTES).decode()
DIGEST = "sha256:" + "a" * 64
LAYER = "sha256:" + "b" * 64


def schema(name: str) -> dict:
    """A component schema of Quay's copy of the spec, with its references resolvable."""
    spec = json.loads(SPEC.read_text())
    return {**spec["components"]["schemas"][name], "components": spec["components"]}


def test_request_token_is_what_quay_signs():
    before = time.time()
    token = sign_request_token(PSK)
    claims = jwt.decode(token, PSK_BYTES, algorithms=["HS256"])
    assert claims["iss"] == "quay"
    assert before + 299 <= claims["exp"] <= time.time() + 301
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, b"another key that is long enough!", algorithms=["HS256"])


def test_a_psk_that_is_not_base64_is_refused_at_once():
    with pytest.raises(ValueError, match="base64"):
        ClairClient("http://scanner.test", "not base64!")


class Stub:
    """Answers from a table; records every request."""

    def __init__(self, answers: dict):
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.get((request.method, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"code": "not-found", "message": "nothing here"})
        if isinstance(answer, Exception):
            raise answer
        return answer


def client_for(answers: dict, psk: str | None = PSK) -> tuple[ClairClient, Stub]:
    stub = Stub(answers)
    return ClairClient("http://scanner.test/", psk, transport=httpx.MockTransport(stub)), stub


INDEX_REPORT = {"manifest_hash": DIGEST, "state": "IndexFinished", "packages": {}, "distributions": {},
                "environments": {}, "success": True, "err": ""}


async def test_index_sends_quays_manifest_and_reads_the_etag():
    client, stub = client_for({("POST", "/indexer/api/v1/index_report"):
                               httpx.Response(201, json=INDEX_REPORT, headers={"ETag": '"state-1"'})})
    layer = LayerRef(LAYER, f"http://registry.test/v2/alice/app/blobs/{LAYER}",
                     {"Authorization": ["Bearer t"], "Accept": ["application/gzip"]})
    async with client:
        report, etag = await client.index(DIGEST, [layer])
    assert report["state"] == "IndexFinished" and etag == "state-1"
    (request,) = stub.requests
    body = json.loads(request.content)
    jsonschema.validate(body, schema("Manifest"))
    assert body == {"hash": DIGEST, "layers": [{"hash": LAYER, "uri": layer.uri, "headers": layer.headers}]}
    scheme, token = request.headers["authorization"].split(" ")
    assert scheme == "Bearer" and jwt.decode(token, PSK_BYTES, algorithms=["HS256"])["iss"] == "quay"


async def test_without_a_psk_no_authorization_is_sent():
    client, stub = client_for({("GET", "/indexer/api/v1/index_state"): httpx.Response(200, json={"state": "s"})},
                              psk=None)
    async with client:
        assert await client.index_state() == "s"
    assert "authorization" not in stub.requests[0].headers


@pytest.mark.parametrize(("answer", "kind"), [
    (httpx.Response(500, json={"code": "internal-error", "message": "boom"}), "server_error"),
    (httpx.Response(401), "server_error"),
    (httpx.Response(200, content=b"<html>not json</html>"), "api_failure"),
    (httpx.Response(200, json={"nope": 1}), "api_failure"),
    (httpx.Response(400, json={"code": "bad-request", "message": "bogus manifest"}), "api_failure"),
    (httpx.ConnectError("refused"), "server_error"),
])
async def test_failures_are_scanner_errors_of_quays_kinds(answer, kind):
    client, _ = client_for({("GET", "/indexer/api/v1/index_state"): answer,
                            ("POST", "/indexer/api/v1/index_report"): answer,
                            ("GET", "/matcher/api/v1/vulnerability_report/" + DIGEST): answer})
    async with client:
        with pytest.raises(ScannerError) as state_error:
            await client.index_state()
        with pytest.raises(ScannerError) as index_error:
            await client.index(DIGEST, [LayerRef(LAYER, "http://x/")])
        with pytest.raises(ScannerError) as vuln_error:
            await client.vulnerability_report(DIGEST)
    assert state_error.value.kind == index_error.value.kind == vuln_error.value.kind == kind


async def test_index_without_etag_is_an_api_failure():
    client, _ = client_for({("POST", "/indexer/api/v1/index_report"): httpx.Response(201, json=INDEX_REPORT)})
    async with client:
        with pytest.raises(ScannerError, match="ETag") as error:
            await client.index(DIGEST, [LayerRef(LAYER, "http://x/")])
    assert error.value.kind == "api_failure"


async def test_vulnerability_report_not_indexed_not_ready_and_ready():
    report = json.loads((DATA / "vulnerabilityreport_withenrichments.json").read_text())
    path = "/matcher/api/v1/vulnerability_report/" + DIGEST
    client, _ = client_for({})
    async with client:
        assert await client.vulnerability_report(DIGEST) is None  # 404: not indexed
    client, _ = client_for({("GET", path): httpx.Response(202)})
    async with client:
        with pytest.raises(NotReady):
            await client.vulnerability_report(DIGEST)
    client, _ = client_for({("GET", path): httpx.Response(200, json=report)})
    async with client:
        assert (await client.vulnerability_report(DIGEST))["manifest_hash"] == report["manifest_hash"]


async def test_delete_and_notifications():
    page = {"page": {"size": 1, "next": "n2"}, "notifications": [
        {"id": "n1", "manifest": DIGEST, "reason": "added", "vulnerability": {"name": "CVE-1"}}]}
    client, stub = client_for({
        ("DELETE", f"/indexer/api/v1/index_report/{DIGEST}"): httpx.Response(204),
        ("GET", "/notifier/api/v1/notification/set-1"): httpx.Response(200, json=page),
        ("DELETE", "/notifier/api/v1/notification/set-1"): httpx.Response(200),
    })
    async with client:
        assert await client.delete_index_report(DIGEST) is True
        assert await client.delete_index_report("sha256:" + "c" * 64) is False
        got = await client.notification_page("set-1", next_page="n1", page_size=1)
        await client.delete_notification("set-1")
        await client.delete_notification("gone")  # 404 counts as done
    jsonschema.validate(got, schema("PagedNotifications"))
    assert got["page"]["next"] == "n2"
    assert stub.requests[2].url.params["next"] == "n1" and stub.requests[2].url.params["page_size"] == "1"
