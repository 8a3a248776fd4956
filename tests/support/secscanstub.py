"""A stub scanner for the secscan worker, API and page tests: it answers the Clair v4 routes from a
table and records requests. It stands in for the scanner only where a test needs a scanner
failure or answer on demand; tests/integration drives the real `quaymaster scanner`."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx

from quaymaster.secscan import service
from quaymaster.secscan.client import ClairClient

DATA = Path(__file__).resolve().parents[1] / "data" / "secscan"
PSK = base64.b64encode(b"registry and scanner share this key!").decode()
ENDPOINT = "http://scanner.test"


class StubScanner:
    def __init__(self) -> None:
        self.state = "state-1"
        self.fail_index: dict[str, httpx.Response] = {}  # manifest digest -> answer instead of a report
        self.state_answer: httpx.Response | None = None
        self.vulnerability_answer: httpx.Response | Exception | None = None
        self.delay = 0.0  # seconds before each answer
        self.indexed: list[dict] = []
        self.deleted: list[str] = []
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(self.vulnerability_answer, Exception) and "vulnerability_report" in request.url.path:
            raise self.vulnerability_answer
        path = request.url.path
        if path == "/indexer/api/v1/index_state":
            return self.state_answer or httpx.Response(200, json={"state": self.state})
        if path == "/indexer/api/v1/index_report" and request.method == "POST":
            body = json.loads(request.content)
            self.indexed.append(body)
            if body["hash"] in self.fail_index:
                return self.fail_index[body["hash"]]
            return httpx.Response(201, headers={"ETag": f'"{self.state}"'}, json={
                "manifest_hash": body["hash"], "state": "IndexFinished", "packages": {}, "distributions": {},
                "environments": {}, "success": True, "err": ""})
        if path.startswith("/indexer/api/v1/index_report/") and request.method == "DELETE":
            self.deleted.append(path.rsplit("/", 1)[1])
            return httpx.Response(204)
        if path.startswith("/matcher/api/v1/vulnerability_report/"):
            if self.vulnerability_answer is not None:
                return self.vulnerability_answer
            report = json.loads((DATA / "vulnerabilityreport_withenrichments.json").read_text())
            return httpx.Response(200, json=dict(report, manifest_hash=path.rsplit("/", 1)[1]))
        if path.startswith("/notifier/api/v1/notification/"):
            if request.method == "DELETE":
                return httpx.Response(200)
            # Two pages of one notification each, as with page_size=1.
            item = {"id": "n1", "manifest": "sha256:" + "a" * 64, "reason": "added",
                    "vulnerability": {"name": "CVE-2019-11236", "normalized_severity": "Medium",
                                      "package": {"name": "urllib3"}}}
            if request.url.params.get("next"):
                return httpx.Response(200, json={"page": {"size": 1}, "notifications": [dict(item, id="n2")]})
            return httpx.Response(200, json={"page": {"size": 1, "next": "n1"}, "notifications": [item]})
        return httpx.Response(404, json={"code": "not-found", "message": path})

    def client(self) -> ClairClient:
        return ClairClient(ENDPOINT, PSK, transport=httpx.MockTransport(self))


def scanner_config(config: dict) -> dict:
    return {**config, "FEATURE_SECURITY_SCANNER": True, "SECURITY_SCANNER_V4_ENDPOINT": ENDPOINT,
            "SECURITY_SCANNER_V4_PSK": PSK}


def install(monkeypatch) -> StubScanner:
    """A stub the API and pages reach through their shared client."""
    stub = StubScanner()
    clients: list[ClairClient] = []

    def shared(settings):
        if not clients:
            clients.append(stub.client())
        return clients[0]

    monkeypatch.setattr(service, "shared_client", shared)
    service.clear_cache()
    return stub
