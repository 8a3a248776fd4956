"""The "Security scan" column of the tags table, its summary fragment, and a manifest's security
page; a slow or broken scanner never holds a page up."""

import time

import httpx
import pytest
from api.repohelpers import make_repo, push, push_index
from sqlalchemy import select
from support.secscanstub import install, scanner_config

from quaymaster.content.models import Manifest
from quaymaster.secscan import service
from quaymaster.secscan.models import IndexStatus
from web.conftest import browser_session

HX = {"HX-Request": "true"}


@pytest.fixture
def config(config, request):
    return config if "feature_off" in request.node.name else scanner_config(config)


@pytest.fixture
def scanner(monkeypatch):
    yield install(monkeypatch)
    service.clear_cache()


async def set_status(ctx, digest: str, status: IndexStatus) -> None:
    async with ctx.db.write() as session:
        for manifest in (await session.scalars(select(Manifest).where(Manifest.digest == digest))).all():
            await service.record(session, manifest.id, manifest.repository_id, status, indexer_hash="s")


async def test_tags_column_statuses_and_summary(ctx, http, scanner):
    queued = await push(http, "alice/app", "queued")
    failed = await push(http, "alice/app", "failed")
    scanned = await push(http, "alice/app", "scanned")
    await push_index(http, "alice/app", "multi", [scanned])
    await set_status(ctx, failed, IndexStatus.FAILED)
    await set_status(ctx, scanned, IndexStatus.COMPLETED)
    await browser_session(http, "alice")
    page = (await http.get("/repository/alice/app?tab=tags")).text
    assert "Security scan" in page
    row = lambda tag: page.split(f'data-tag="{tag}"')[1].split("</tr>")[0]
    assert ">Queued<" in row("queued") and ">Failed<" in row("failed")
    assert "See platforms" in row("multi")
    summary_url = f"/repository/alice/app/manifest/{scanned}/security-summary"
    assert f'hx-get="{summary_url}"' in row("scanned")
    assert not [r for r in scanner.requests if "vulnerability_report" in r.url.path]  # the table asked nobody
    # The fragment: counts by severity, the highest one colored.
    cell = (await http.get(summary_url, headers=HX)).text
    assert "Critical" in cell and "High" in cell and "font-weight:700" in cell.split("Critical")[0].rsplit("<span", 1)[1]
    assert f"/repository/alice/app/manifest/{scanned}/security" in cell
    # The htmx table fragment carries the column too.
    assert "Security scan" in (await http.get("/repository/alice/app/tags-table", headers=HX)).text
    del queued


async def test_security_page_lists_vulnerabilities(ctx, http, scanner):
    digest = await push(http, "alice/app", "v1")
    await set_status(ctx, digest, IndexStatus.COMPLETED)
    await browser_session(http, "alice")
    manifest_page = (await http.get(f"/repository/alice/app/manifest/{digest}")).text
    assert f"/repository/alice/app/manifest/{digest}/security" in manifest_page
    page = await http.get(f"/repository/alice/app/manifest/{digest}/security")
    assert page.status_code == 200
    row = page.text.split('data-advisory="CVE-2018-20843"')[1].split("</tr>")[0]
    for text in ("expat", "2.2.5-r0", "2.2.7-r0", "High", "https://cve.mitre.org/cgi-bin/cvename.cgi?name=CVE-2018-20843"):
        assert text in row, text
    assert "Packages" in page.text and "setuptools" in page.text
    # Most severe first.
    assert page.text.index(">Critical<") < page.text.index(">High<") < page.text.index(">Low<")


async def test_passed_queued_and_unsupported_pages(ctx, http, scanner):
    digest = await push(http, "alice/app", "v1")
    await browser_session(http, "alice")
    base = f"/repository/alice/app/manifest/{digest}"
    assert "queued for scanning" in (await http.get(base + "/security")).text
    await set_status(ctx, digest, IndexStatus.MANIFEST_UNSUPPORTED)
    assert "cannot be scanned" in (await http.get(base + "/security")).text
    assert ">Unsupported<" in (await http.get(base + "/security-summary", headers=HX)).text
    await set_status(ctx, digest, IndexStatus.COMPLETED)
    scanner.vulnerability_answer = httpx.Response(200, json={
        "manifest_hash": digest, "packages": {}, "distributions": {}, "environments": {}, "vulnerabilities": {},
        "package_vulnerabilities": {}, "enrichments": {}})
    assert ">Passed<" in (await http.get(base + "/security-summary", headers=HX)).text


async def test_a_broken_or_slow_scanner_shows_unavailable_quickly(ctx, http, scanner, monkeypatch):
    digest = await push(http, "alice/app", "v1")
    await set_status(ctx, digest, IndexStatus.COMPLETED)
    await browser_session(http, "alice")
    base = f"/repository/alice/app/manifest/{digest}"
    scanner.vulnerability_answer = httpx.ConnectError("connection refused")
    assert "unavailable" in (await http.get(base + "/security-summary", headers=HX)).text
    assert "unavailable right now" in (await http.get(base + "/security")).text
    service.clear_cache()
    scanner.vulnerability_answer = httpx.Response(200, content=b"<html>proxy error</html>")
    r = await http.get(base + "/security")
    assert r.status_code == 200 and "unavailable right now" in r.text
    service.clear_cache()
    scanner.vulnerability_answer = None
    scanner.delay = 5.0
    monkeypatch.setattr(service, "PAGE_TIMEOUT_S", 0.3)
    started = time.monotonic()
    assert "unavailable" in (await http.get(base + "/security-summary", headers=HX)).text
    assert time.monotonic() - started < 2.0


async def test_permissions(ctx, http, anon, scanner):
    private = await push(http, "alice/app", "v1")
    await make_repo(ctx, "alice/open", "public")
    public = await push(http, "alice/open", "v1")
    assert (await anon.get(f"/repository/alice/open/manifest/{public}/security")).status_code == 200
    r = await anon.get(f"/repository/alice/app/manifest/{private}/security")
    assert r.status_code in (303, 404)
    await browser_session(anon, "bob")
    assert (await anon.get(f"/repository/alice/app/manifest/{private}/security")).status_code == 404
    assert (await anon.get(f"/repository/alice/app/manifest/{private}/security-summary", headers=HX)).status_code == 404


async def test_feature_off_hides_the_column_and_pages(ctx, http):
    digest = await push(http, "alice/app", "v1")
    await browser_session(http, "alice")
    assert "Security scan" not in (await http.get("/repository/alice/app?tab=tags")).text
    assert "/security" not in (await http.get(f"/repository/alice/app/manifest/{digest}")).text
    assert (await http.get(f"/repository/alice/app/manifest/{digest}/security")).status_code == 404
