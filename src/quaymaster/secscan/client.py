"""A Clair v4 client on httpx, speaking exactly what Quay sends: the contract between the
registry and any Clair-compatible scanner (ours or Clair itself).

Every request carries a fresh HS256 JWT signed with the base64-decoded SECURITY_SCANNER_V4_PSK
(claims `iss: quay`, `exp: now+5min`) when a PSK is configured. Every answer is checked for the
shape the contract promises before anyone uses it (`report.check_*`)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
import jwt

from quaymaster.secscan import report as checks

log = logging.getLogger(__name__)

ISSUER = "quay"
TOKEN_LIFETIME_S = 300
INDEX_TIMEOUT_S = 600.0  # indexing is synchronous: the scanner fetches and reads every layer first
DEFAULT_TIMEOUT_S = 30.0
INDEXER = "/indexer/api/v1"
MATCHER = "/matcher/api/v1"
NOTIFIER = "/notifier/api/v1"


class ScannerError(Exception):
    """The scanner could not be asked or answered nonsense. `kind` is Quay's failure reason:
    `server_error` (unreachable, 5xx) or `api_failure` (an answer outside the contract)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class NotReady(Exception):
    """The matcher has no vulnerability data yet (202: no updater has run)."""


def decode_psk(psk: str) -> bytes:
    try:
        return base64.b64decode(psk, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("SECURITY_SCANNER_V4_PSK is not base64") from None


def sign_request_token(psk: str, now: float | None = None) -> str:
    """The bearer token Quay puts on every request to the scanner."""
    now = time.time() if now is None else now
    return jwt.encode({"iss": ISSUER, "exp": int(now) + TOKEN_LIFETIME_S}, decode_psk(psk), algorithm="HS256")


@dataclass
class LayerRef:
    """One layer as the scanner is told to fetch it."""

    hash: str
    uri: str
    headers: dict[str, list[str]] = field(default_factory=dict)
    media_type: str | None = None

    def to_json(self) -> dict:
        body: dict[str, Any] = {"hash": self.hash, "uri": self.uri, "headers": self.headers}
        if self.media_type:
            body["media_type"] = self.media_type
        return body


class ClairClient:
    def __init__(self, endpoint: str, psk: str | None = None, *, verify: Any = True,
                 timeout: float = DEFAULT_TIMEOUT_S, transport: httpx.AsyncBaseTransport | None = None):
        if psk:
            decode_psk(psk)  # fail at start, not at the first request
        self.endpoint = endpoint.rstrip("/")
        self._psk = psk or None
        self._client = httpx.AsyncClient(base_url=self.endpoint, verify=verify, timeout=timeout,
                                         transport=transport, trust_env=False,
                                         headers={"User-Agent": "quaymaster-secscan"})

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._psk:
            headers["Authorization"] = f"Bearer {sign_request_token(self._psk)}"
        return headers

    async def _request(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None,
                       timeout: float | None = None) -> httpx.Response:
        kwargs: dict[str, Any] = {"headers": self._headers()}
        if json_body is not None:
            kwargs["json"] = json_body
        if params:
            kwargs["params"] = params
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ScannerError("server_error", f"{method} {path}: {exc.__class__.__name__}: {exc}") from None

    @staticmethod
    def _json(response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ScannerError("api_failure", f"{what}: the scanner's answer is not JSON") from None

    @staticmethod
    def _fail(response: httpx.Response, what: str) -> ScannerError:
        kind = "server_error" if response.status_code >= 500 or response.status_code in (401, 403, 429) \
            else "api_failure"
        detail = ""
        try:
            body = response.json()
            if isinstance(body, dict) and isinstance(body.get("message"), str):
                detail = ": " + body["message"][:300]
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
        return ScannerError(kind, f"{what}: HTTP {response.status_code}{detail}")

    # --- indexer ---

    async def index_state(self, timeout: float | None = None) -> str:
        """The indexer's state hash: it changes when the scanner set changes (then re-index)."""
        response = await self._request("GET", f"{INDEXER}/index_state", timeout=timeout)
        if response.status_code != 200:
            raise self._fail(response, "index_state")
        try:
            return checks.check_state(self._json(response, "index_state"))
        except checks.ReportError as exc:
            raise ScannerError("api_failure", str(exc)) from None

    async def index(self, manifest_digest: str, layers: list[LayerRef],
                    timeout: float = INDEX_TIMEOUT_S) -> tuple[dict, str]:
        """Index a manifest; returns the index report and the indexer state it was made with (ETag)."""
        body = {"hash": manifest_digest, "layers": [layer.to_json() for layer in layers]}
        response = await self._request("POST", f"{INDEXER}/index_report", json_body=body, timeout=timeout)
        if response.status_code not in (200, 201):
            raise self._fail(response, "index_report")
        etag = response.headers.get("etag", "").removeprefix("W/").strip('"')
        if not etag:
            raise ScannerError("api_failure", "index_report: the answer carries no ETag")
        try:
            return checks.check_index_report(self._json(response, "index_report")), etag
        except checks.ReportError as exc:
            raise ScannerError("api_failure", str(exc)) from None

    async def index_report(self, manifest_digest: str) -> dict | None:
        """The stored index report, or None when the scanner has none."""
        response = await self._request("GET", f"{INDEXER}/index_report/{manifest_digest}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, "index_report")
        try:
            return checks.check_index_report(self._json(response, "index_report"))
        except checks.ReportError as exc:
            raise ScannerError("api_failure", str(exc)) from None

    async def delete_index_report(self, manifest_digest: str, timeout: float | None = None) -> bool:
        """Forget a manifest; True if the scanner had it or answered success, False on 404."""
        response = await self._request("DELETE", f"{INDEXER}/index_report/{manifest_digest}", timeout=timeout)
        if response.status_code == 404:
            return False
        if response.status_code not in (200, 202, 204):
            raise self._fail(response, "delete index_report")
        return True

    # --- matcher ---

    async def vulnerability_report(self, manifest_digest: str, timeout: float | None = None) -> dict | None:
        """The vulnerability report; None when the manifest is not indexed (404); NotReady on 202."""
        response = await self._request("GET", f"{MATCHER}/vulnerability_report/{manifest_digest}",
                                       timeout=timeout)
        if response.status_code == 404:
            return None
        if response.status_code == 202:
            raise NotReady(manifest_digest)
        if response.status_code not in (200, 201):
            raise self._fail(response, "vulnerability_report")
        try:
            return checks.check_vulnerability_report(self._json(response, "vulnerability_report"))
        except checks.ReportError as exc:
            raise ScannerError("api_failure", str(exc)) from None

    # --- notifier ---

    async def notification_page(self, notification_id: str, next_page: str | None = None,
                                page_size: int = 500) -> dict | None:
        """One page of a notification set; None when it is gone."""
        params: dict[str, Any] = {"page_size": page_size}
        if next_page:
            params["next"] = next_page
        response = await self._request("GET", f"{NOTIFIER}/notification/{notification_id}", params=params)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, "notification")
        try:
            return checks.check_notification_page(self._json(response, "notification"))
        except checks.ReportError as exc:
            raise ScannerError("api_failure", str(exc)) from None

    async def delete_notification(self, notification_id: str) -> None:
        response = await self._request("DELETE", f"{NOTIFIER}/notification/{notification_id}")
        if response.status_code not in (200, 204, 404):  # 404: already gone, as Quay treats it
            raise self._fail(response, "delete notification")
