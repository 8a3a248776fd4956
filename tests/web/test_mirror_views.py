"""The repository's Mirroring tab in-process: who sees it, the form with CSRF, validation errors
shown in place, the password never rendered, and the Sync now / Cancel buttons."""

import pytest
from api.repohelpers import make_org, make_repo
from web.conftest import browser_session

from quaymaster.accounts import orgs, robots
from quaymaster.accounts import service as accounts
from quaymaster.content import repositories
from quaymaster.content import service as content
from quaymaster.content.models import RepositoryState
from quaymaster.mirroring import service

PAGE = "/repository/acme/mirror/mirroring"
PASSWORD = "upstream-pass-42"


@pytest.fixture
def config(config):
    return {**config, "FEATURE_REPO_MIRROR": True}


@pytest.fixture
async def mirror_repo(ctx):
    await make_org(ctx, "acme")
    repo_id = await make_repo(ctx, "acme/mirror")
    async with ctx.db.write() as session:
        org = await orgs.get_org(session, "acme")
        await robots.create_robot(session, ctx.cipher, org, "mirror")
        await repositories.set_state(session, repo_id, RepositoryState.MIRROR)
    return repo_id


def form(csrf: str, **overrides) -> dict:
    data = {"_csrf_token": csrf, "is_enabled": "on", "external_reference": "quay.io/upstream/app",
            "tags": "v1.*, latest", "robot_username": "acme+mirror", "external_registry_username": "puller",
            "external_registry_password": PASSWORD, "sync_start_date": "2030-01-02T03:04",
            "sync_interval": "3600", "skopeo_timeout_interval": "300", "verify_tls": "on",
            "architecture_filter": ["amd64", "arm64"]}
    data.update(overrides)
    return data


async def _config(ctx, repo_id):
    async with ctx.db.read() as session:
        return await service.get_config(session, repo_id)


async def test_admin_configures_the_mirror_and_syncs(ctx, http, mirror_repo):
    csrf = await browser_session(http, "alice")
    settings = await http.get("/repository/acme/mirror?tab=settings")
    assert 'href="/repository/acme/mirror?tab=mirroring"' in settings.text
    r = await http.get("/repository/acme/mirror?tab=mirroring")
    assert r.status_code == 303 and r.headers["location"] == PAGE
    page = await http.get(PAGE)
    assert page.status_code == 200 and "Set up mirroring" in page.text
    assert '<option value="acme+mirror"' in page.text

    assert (await http.post(PAGE, data=form("wrong"))).status_code == 403
    r = await http.post(PAGE, data=form(csrf, external_reference="library/nginx"))
    assert r.status_code == 400 and "must start with the registry host" in r.text
    assert 'value="v1.*, latest"' in r.text and PASSWORD not in r.text  # kept, except the password

    r = await http.post(PAGE, data=form(csrf))
    assert r.status_code == 303, r.text[:2000]
    config = await _config(ctx, mirror_repo)
    assert config.root_rule_value == ["v1.*", "latest"] and config.architecture_filter == ["amd64", "arm64"]
    assert ctx.cipher.decrypt(config.external_registry_password) == PASSWORD
    page = await http.get(PAGE)
    assert "acme+mirror was given write permission" in page.text
    assert PASSWORD not in page.text and "A password is stored" in page.text
    assert 'data-sync-status="NEVER_RUN"' in page.text and "repo_mirror" not in page.text.split("Recent mirror")[0]

    # Saving again with the password left blank keeps it; the log shows the change.
    r = await http.post(PAGE, data=form(csrf, external_registry_password="", tags="v2.*"))
    assert r.status_code == 303
    config = await _config(ctx, mirror_repo)
    assert config.root_rule_value == ["v2.*"] and ctx.cipher.decrypt(config.external_registry_password) == PASSWORD
    assert "config changed" in (await http.get(PAGE)).text

    r = await http.post(PAGE + "/sync-now", data={"_csrf_token": csrf})
    assert r.status_code == 303
    page = await http.get(PAGE)
    assert 'data-sync-status="SYNC_NOW"' in page.text and "sync now requested" in page.text
    r = await http.post(PAGE + "/sync-cancel", data={"_csrf_token": csrf})
    assert r.status_code == 303
    page = await http.get(PAGE)
    assert 'data-sync-status="CANCEL"' in page.text and "Sync cancelled" in page.text

    r = await http.post(PAGE, data=form(csrf, clear_credentials="on", external_registry_password=""))
    assert r.status_code == 303
    config = await _config(ctx, mirror_repo)
    assert config.external_registry_username is None and config.external_registry_password is None


async def test_only_admins_see_it_and_only_with_the_feature(ctx, http, anon, mirror_repo, monkeypatch):
    r = await anon.get(PAGE)
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")
    bob_csrf = await browser_session(anon, "bob")
    assert (await anon.get(PAGE)).status_code == 404  # bob cannot read the repository
    async with ctx.db.write() as session:
        bob = await accounts.get_namespace(session, "bob")
        await service.permissions.set_permission(session, mirror_repo, "write", user=bob)
    assert (await anon.get(PAGE)).status_code == 403
    assert (await anon.post(PAGE, data=form(bob_csrf))).status_code == 403
    assert await _config(ctx, mirror_repo) is None

    await browser_session(http, "alice")
    monkeypatch.setattr(ctx.settings, "FEATURE_REPO_MIRROR", False)
    assert (await http.get(PAGE)).status_code == 404
    assert "tab=mirroring" not in (await http.get("/repository/acme/mirror?tab=settings")).text


async def test_a_repository_not_in_mirror_state_explains_what_to_do(ctx, http, mirror_repo):
    async with ctx.db.write() as session:
        await repositories.set_state(session, mirror_repo, RepositoryState.NORMAL)
    csrf = await browser_session(http, "alice")
    page = await http.get(PAGE)
    assert "is in NORMAL state" in page.text
    r = await http.post(PAGE, data=form(csrf))
    assert r.status_code == 400 and "not in MIRROR state" in r.text
    async with ctx.db.read() as session:
        assert await content.get_repository(session, "acme", "mirror") is not None
