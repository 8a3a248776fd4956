"""The little of the registry protocol the mirror speaks itself: pushing one manifest (a
platform-filtered index) to this registry as the mirror robot, with Docker token auth.

skopeo does everything else; it cannot push an index that lists only some of the source's
platforms, so that one document goes through here."""

from __future__ import annotations

import re
import ssl

import httpx

TIMEOUT_S = 60.0
_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')


class RegistryClientError(Exception):
    """The destination refused the push; the message quotes its error, never a credential."""


def _challenge(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "bearer":
        return {}
    return dict(_PARAM_RE.findall(rest))


def _error_text(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        if errors:
            return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        pass
    return f"HTTP {response.status_code}"


async def push_manifest(base_url: str, repository: str, reference: str, body: bytes, media_type: str, *,
                        username: str, password: str, verify: bool | ssl.SSLContext) -> None:
    """PUT /v2/<repository>/manifests/<reference> with a bearer token for pull,push."""
    async with httpx.AsyncClient(base_url=base_url, verify=verify, timeout=TIMEOUT_S, trust_env=False) as http:
        probe = await http.get("/v2/")
        headers: dict[str, str] = {}
        if probe.status_code == 401:
            params = _challenge(probe.headers.get("www-authenticate", ""))
            if "realm" not in params:
                raise RegistryClientError("the destination registry sent no bearer challenge")
            query = {"scope": f"repository:{repository}:pull,push"}
            if params.get("service"):
                query["service"] = params["service"]
            answer = await http.get(params["realm"], params=query, auth=(username, password))
            if answer.status_code != 200:
                raise RegistryClientError(f"the destination refused the mirror robot's credentials "
                                          f"({_error_text(answer)})")
            token = answer.json().get("token") or answer.json().get("access_token")
            headers["Authorization"] = f"Bearer {token}"
        response = await http.put(f"/v2/{repository}/manifests/{reference}", content=body,
                                  headers={**headers, "Content-Type": media_type})
        if response.status_code not in (200, 201):
            raise RegistryClientError(f"pushing the filtered index failed: {_error_text(response)}")
