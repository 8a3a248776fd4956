"""Ways to call the API as a given caller: a browser session (cookie + CSRF) or a bearer token."""

import httpx

from quaymaster.accounts import apptokens
from quaymaster.accounts import service as users


async def signin(http: httpx.AsyncClient, username: str, password: str | None = None) -> dict:
    """Sign the client's cookie jar in; returns the headers browser writes need (X-CSRF-Token)."""
    r = await http.post("/api/v1/signin", json={"username": username, "password": password or f"{username}-password"})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


async def bearer(ctx, username: str, scopes: str = " ".join(apptokens.SCOPES)) -> dict:
    """An OAuth access token for the user with the given scopes, as an Authorization header."""
    async with ctx.db.write() as session:
        user = await users.require_user(session, username)
        _, token = await apptokens.create_oauth_token(session, user, apptokens.parse_scopes(scopes))
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, error_type: str | None = None) -> dict:
    """Quay's error shape, with the expected status (and error_type when given)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and "error_message" in body and "type" in body
    if error_type:
        assert body["error_type"] == error_type, body
    return body
