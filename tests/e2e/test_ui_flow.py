"""The first-user walk through the web UI: sign up, create a repository, push with skopeo, see the
tag, delete and restore it, and make sure an outsider cannot even see the private repository.

The steps share one server and run in order (each test builds on the previous one's state)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails in CI) with the reason
    expect = None

from support.clients import Skopeo
from support.images import ImageSpec, host_arch, write_oci_layout

from e2e.conftest import ADMIN, new_page
from quaymaster.web.render import humansize, shortdigest

PASSWORD = "quayadmin-secret-1"
REPO = "hello"
TAG = "v1"


@pytest.fixture(scope="module")
def admin(browser, ui_server):
    """quayadmin's browser: a context that stays signed in across the steps."""
    context, page = new_page(browser, ui_server)
    yield page
    context.close()


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """Filled in by the push step: the image layout written and pushed."""
    return {}


def shot(page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def test_signup_creates_the_first_account(admin, screenshots):
    admin.goto("/signin")
    expect(admin.get_by_label("Username")).to_be_visible()
    shot(admin, screenshots, "01-signin")
    admin.get_by_role("link", name="Create Account").first.click()
    expect(admin).to_have_url(re.compile(r"/signup"))
    admin.get_by_label("Username").fill(ADMIN)
    admin.get_by_label("Email address").fill("quayadmin@example.com")
    admin.get_by_label("Password", exact=True).fill(PASSWORD)
    admin.get_by_label("Confirm password").fill(PASSWORD)
    shot(admin, screenshots, "02-signup")
    admin.get_by_role("button", name="Create Account").click()
    expect(admin).to_have_url(re.compile(r"/repository/$"))
    expect(admin.locator(".flash")).to_contain_text(f"Welcome, {ADMIN}")
    expect(admin.locator(".nav-account summary")).to_contain_text(ADMIN)
    expect(admin.get_by_role("link", name="Superuser")).to_be_visible()  # SUPER_USERS names quayadmin
    expect(admin.locator(".empty-state")).to_contain_text("No repositories yet")


def test_create_repository_in_the_ui(admin, screenshots):
    admin.goto("/repository/")
    form = admin.locator("#create")
    form.get_by_label("Repository name").fill("Bad Name!")
    form.get_by_role("button", name="Create repository").click()
    expect(admin.locator("#create .field-error")).to_contain_text("lowercase")  # shown in place
    form = admin.locator("#create")
    form.get_by_label("Repository name").fill(REPO)
    form.get_by_label("Private").check()
    form.get_by_label("Description").fill("Hello from the browser test")
    shot(admin, screenshots, "03-repositories-create")
    form.get_by_role("button", name="Create repository").click()
    expect(admin).to_have_url(re.compile(rf"/repository/{ADMIN}/{REPO}$"))
    expect(admin.locator("h1")).to_contain_text(REPO)
    expect(admin.locator(".badge-private")).to_be_visible()
    expect(admin.locator("#pull-podman")).to_have_value(re.compile(rf"^podman pull .+/{ADMIN}/{REPO}:latest$"))


def test_push_with_skopeo_shows_tag_size_and_digest(admin, ui_server, pushed, tmp_path_factory, screenshots):
    work = tmp_path_factory.mktemp("push")
    layout = write_oci_layout(work / "layout", ImageSpec(host_arch(), layers=2, layer_size=300 * 1024))
    skopeo = Skopeo(work / "skopeo")
    skopeo.copy(layout.ref, f"docker://{ui_server.host}/{ADMIN}/{REPO}:{TAG}", creds=f"{ADMIN}:{PASSWORD}")
    image = next(iter(layout.images.values()))
    size = sum((layout.path / "blobs" / "sha256" / d.split(":", 1)[1]).stat().st_size for d in image.layer_digests)
    pushed.update(digest=image.manifest_digest, size=size)

    admin.goto(f"/repository/{ADMIN}/{REPO}?tab=tags")
    row = admin.locator(f'tr[data-tag="{TAG}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text(shortdigest(image.manifest_digest))
    expect(row).to_contain_text(humansize(size))
    shot(admin, screenshots, "04-repository-tags")

    # the manifest page lists both layers with their sizes
    row.get_by_role("link", name=shortdigest(image.manifest_digest)).click()
    expect(admin).to_have_url(re.compile(r"/manifest/sha256:"))
    expect(admin.get_by_role("heading", name="Layers")).to_be_visible()
    expect(admin.locator("table").filter(has_text="Digest").locator("tbody tr")).to_have_count(2)
    expect(admin.locator("dd", has_text=humansize(size))).to_be_visible()
    shot(admin, screenshots, "05-manifest")


def test_delete_tag_then_restore_from_history(admin, pushed, screenshots):
    admin.goto(f"/repository/{ADMIN}/{REPO}?tab=tags")
    row = admin.locator(f'tr[data-tag="{TAG}"]')
    row.locator("summary").click()
    row.get_by_role("button", name="Delete tag").click()  # the confirm dialog is accepted
    expect(admin.locator(".flash")).to_contain_text(f"Tag {TAG} deleted")
    expect(admin.locator(f'tr[data-tag="{TAG}"]')).to_have_count(0)
    expect(admin.locator(".empty-state")).to_contain_text("no tags yet")

    admin.get_by_role("link", name="Tag history").click()
    ended = admin.locator(f'tr[data-tag="{TAG}"][data-digest="{pushed["digest"]}"]')
    expect(ended).to_contain_text("ended")
    shot(admin, screenshots, "06-tag-history")
    ended.get_by_role("button", name=re.compile("^Restore")).click()
    expect(admin.locator(".flash")).to_contain_text(f"Tag {TAG} restored")
    expect(admin.locator(f'tr[data-tag="{TAG}"]')).to_contain_text(shortdigest(pushed["digest"]))


def test_tags_filter_is_live(admin, screenshots):
    admin.goto(f"/repository/{ADMIN}/{REPO}?tab=tags")
    admin.get_by_label("Filter tags").fill("nomatch")  # no submit: htmx swaps the table in
    expect(admin.locator("#tags-table")).to_contain_text("No tag matches")
    admin.get_by_label("Filter tags").fill("v")
    expect(admin.locator(f'#tags-table tr[data-tag="{TAG}"]')).to_be_visible()
    admin.set_viewport_size({"width": 390, "height": 844})  # a phone
    admin.goto(f"/repository/{ADMIN}/{REPO}")
    shot(admin, screenshots, "11-repository-info-narrow")
    admin.set_viewport_size({"width": 1280, "height": 860})


def test_keyboard_reaches_the_forms(admin):
    admin.goto("/repository/")
    admin.keyboard.press("Tab")  # the skip link comes first
    expect(admin.get_by_role("link", name="Skip to content")).to_be_focused()
    admin.get_by_label("Search repositories").focus()
    admin.keyboard.type(REPO)
    expect(admin.locator("#repo-results .repo-name")).to_have_text(f"{ADMIN}/{REPO}")
    admin.keyboard.press("Enter")
    expect(admin.locator("#repo-results .repo-name")).to_have_count(1)


def test_logs_and_settings_tabs(admin, screenshots):
    admin.goto(f"/repository/{ADMIN}/{REPO}?tab=logs")
    expect(admin.locator("svg.chart rect.bar").first).to_be_visible()
    expect(admin.get_by_role("table", name=re.compile("Usage log"))).to_contain_text("revert tag")
    shot(admin, screenshots, "07-usage-logs")
    admin.goto(f"/repository/{ADMIN}/{REPO}?tab=settings")
    expect(admin.get_by_role("heading", name="Permissions")).to_be_visible()
    shot(admin, screenshots, "08-repository-settings")


def test_account_settings_token_shown_once(admin, ui_server, screenshots):
    admin.locator(".nav-account summary").click()
    admin.get_by_role("link", name="Account settings").click()
    expect(admin).to_have_url(re.compile(rf"/user/{ADMIN}\?tab=settings"))
    expect(admin.locator("#cli-podman")).to_have_value(f"podman login {ui_server.host}")
    admin.get_by_label("Token title").fill("laptop")
    admin.get_by_role("button", name="Create token").click()
    token = admin.locator("#new-token-value").input_value()
    assert len(token) == 120
    shot(admin, screenshots, "09-account-settings")
    admin.reload()
    expect(admin.locator("#new-token-value")).to_have_count(0)  # shown once
    expect(admin.locator("#tokens table")).to_contain_text("laptop")


def test_outsider_gets_the_same_404_as_for_a_missing_repository(browser, ui_server, screenshots):
    context, page = new_page(browser, ui_server)
    try:
        page.goto("/signup")
        page.get_by_label("Username").fill("outsider")
        page.get_by_label("Email address").fill("outsider@example.com")
        page.get_by_label("Password", exact=True).fill("outsider-secret")
        page.get_by_label("Confirm password").fill("outsider-secret")
        page.get_by_role("button", name="Create Account").click()
        expect(page).to_have_url(re.compile(r"/repository/$"))
        expect(page.locator(".repo-list")).to_have_count(0)  # the private repository is not listed

        private = page.goto(f"/repository/{ADMIN}/{REPO}")
        assert private.status == 404
        private_text = page.locator("main").inner_text()
        shot(page, screenshots, "10-not-found")
        missing = page.goto(f"/repository/{ADMIN}/does-not-exist")
        assert missing.status == 404
        assert page.locator("main").inner_text() == private_text
        assert page.goto(f"/repository/{ADMIN}/{REPO}?tab=tags").status == 404
    finally:
        context.close()

