"""In-process UI tests: the app on SQLite (views hold no SQL of their own, one database suffices)."""

import re
import shutil
from pathlib import Path

import httpx
import pytest

CSRF_RE = re.compile(r'name="_csrf_token" value="([^"]+)"')


@pytest.fixture
def db_uri(request, tmp_path: Path) -> str:
    """SQLite only (overrides the sqlite/postgres parametrization of support.appfixtures)."""
    path = tmp_path / "quaymaster.db"
    shutil.copy(request.getfixturevalue("sqlite_template"), path)
    return f"sqlite:///{path}"


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF field"
    return match.group(1)


async def page_csrf(http: httpx.AsyncClient, path: str = "/signin") -> str:
    r = await http.get(path)
    assert r.status_code == 200, r.text[:500]
    return csrf_of(r.text)


async def browser_session(http: httpx.AsyncClient, username: str, password: str | None = None) -> str:
    """Sign the client in through the /signin form; returns the session's CSRF token."""
    token = await page_csrf(http, "/signin")
    r = await http.post("/signin", data={"username": username, "password": password or f"{username}-password",
                                         "_csrf_token": token, "next": "/repository/"})
    assert r.status_code == 303, r.text[:500]
    return await page_csrf(http, "/repository/")


@pytest.fixture
async def anon(ctx):
    """A second client with its own cookie jar, for another visitor."""
    transport = httpx.ASGITransport(app=ctx.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        yield client
