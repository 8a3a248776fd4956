"""Organizations, robots and the superuser panel in a real browser against a real server.

A superuser (made with `quaymaster user create --superuser`) signs in, creates a user in the
superuser panel (its generated password shown once), an organization, a team and a robot, reads the robot's token off the page, grants it write on a new
repository and pushes an image with skopeo as that robot. Then the superuser publishes a warning
that an anonymous visitor and a second signed-in user see as a banner, and removes it.

The steps share one server of their own (not the session's ui_server, whose first account is
made through sign-up) and run in order: each builds on the previous one's state."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect
from support.clients import Skopeo
from support.images import ImageSpec, host_arch, write_oci_layout
from support.servers import QuaymasterServer, quaymaster_server

from e2e.conftest import new_page

SU, SU_PASSWORD = "opsadmin", "opsadmin-secret-1"
VIEWER = "viewer"  # created in the superuser panel, with the password it generates
ORG, ROBOT, REPO, TAG = "acme", "builder", "app", "v1"
NOTICE = "Registry maintenance tonight at 22:00 UTC"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuaymasterServer]:
    with quaymaster_server(tmp_path_factory.mktemp("quaymaster-orgs-ui"), config={"SUPER_USERS": [SU]}) as srv:
        srv.create_user(SU, SU_PASSWORD, f"{SU}@example.com", superuser=True)
        yield srv


@pytest.fixture(scope="module")
def admin(browser, server):
    """The superuser's browser context, signed in once for every step."""
    context, page = new_page(browser, server)
    _sign_in(page, SU, SU_PASSWORD)
    yield page
    context.close()


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


def _sign_in(page, username: str, password: str) -> None:
    page.goto("/signin")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".nav-account summary")).to_contain_text(username)


def shot(page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def test_superuser_creates_a_user(admin, state, screenshots):
    admin.get_by_role("link", name="Superuser").click()
    expect(admin).to_have_url(re.compile(r"/superuser$"))
    form = admin.locator("#create-user")
    form.get_by_label("Username").fill(VIEWER)
    form.get_by_label("Email (optional)").fill(f"{VIEWER}@example.com")
    form.get_by_role("button", name="Create user").click()
    password = admin.locator("#new-user-password").input_value()
    assert re.fullmatch(r"[A-Z0-9]{32}", password)
    state["viewer_password"] = password
    expect(admin.locator(f'tr[data-user="{VIEWER}"]')).to_be_visible()
    shot(admin, screenshots, "superuser-01-users")
    admin.reload()
    expect(admin.locator("#new-user-password")).to_have_count(0)  # shown once


def test_superuser_creates_an_organization(admin, screenshots):
    admin.locator("summary", has_text="Organizations").click()
    admin.get_by_role("link", name="Create organization").click()
    expect(admin).to_have_url(re.compile(r"/organizations/new$"))
    admin.get_by_label("Organization name").fill("Not Valid!")
    admin.get_by_role("button", name="Create organization").click()
    expect(admin.locator(".field-error")).to_contain_text("Invalid organization name")  # shown in place
    admin.get_by_label("Organization name").fill(ORG)
    admin.get_by_label("Contact email (optional)").fill(f"{ORG}@example.com")
    shot(admin, screenshots, "orgs-01-create-organization")
    admin.get_by_role("button", name="Create organization").click()
    expect(admin).to_have_url(re.compile(rf"/organization/{ORG}$"))
    expect(admin.locator(".flash")).to_contain_text(f"Organization {ORG} created")
    expect(admin.locator(".empty-state")).to_contain_text("No repositories here yet")


def test_create_team(admin, screenshots):
    admin.locator(".tabs").get_by_role("link", name="Teams and members").click()
    form = admin.locator("#new-team")
    form.get_by_label("Team name").fill("developers")
    form.get_by_label("Role").select_option("creator")
    form.get_by_label("Description (optional)").fill("People who build the images")
    form.get_by_role("button", name="Create team").click()
    expect(admin).to_have_url(re.compile(rf"/organization/{ORG}/teams/developers$"))
    admin.get_by_label("Add a user or robot").fill(VIEWER)
    admin.get_by_role("button", name="Add member").click()
    expect(admin.locator(f'tr[data-member="{VIEWER}"]')).to_be_visible()
    shot(admin, screenshots, "orgs-02-team")
    admin.goto(f"/organization/{ORG}?tab=teams")
    expect(admin.locator('tr[data-team="developers"]')).to_contain_text("creator")
    shot(admin, screenshots, "orgs-03-teams-and-members")


def test_create_robot_and_read_its_token(admin, server, state, screenshots):
    admin.locator(".tabs").get_by_role("link", name="Robot accounts").click()
    expect(admin.locator(".empty-state")).to_contain_text("No robot accounts yet")
    admin.get_by_label("Robot name").fill(ROBOT)
    admin.get_by_label("Description (optional)").fill("CI pushes")
    admin.get_by_role("button", name="Create robot account").click()
    expect(admin).to_have_url(re.compile(rf"/organization/{ORG}/robots/{ROBOT}$"))
    token = admin.locator("#robot-token").input_value()
    assert re.fullmatch(r"[A-Z0-9]{64}", token)
    expect(admin.locator("#robot-podman-login")).to_have_value(
        f"podman login -u '{ORG}+{ROBOT}' -p {token} {server.host}")
    expect(admin.get_by_role("button", name="Copy").first).to_be_visible()
    state["token"] = token
    shot(admin, screenshots, "orgs-04-robot")


def test_grant_the_robot_write_and_push_as_it(admin, server, state, tmp_path_factory, screenshots):
    # a private repository in the organization, made from the organization page
    admin.goto(f"/organization/{ORG}")
    admin.get_by_role("link", name="Create repository").first.click()
    form = admin.locator("#create")
    form.get_by_label("Namespace").select_option(ORG)
    form.get_by_label("Repository name").fill(REPO)
    form.get_by_role("button", name="Create repository").click()
    expect(admin).to_have_url(re.compile(rf"/repository/{ORG}/{REPO}$"))

    admin.goto(f"/organization/{ORG}/robots/{ROBOT}")
    admin.get_by_label("Repository", exact=True).fill(REPO)
    admin.locator("#f-perm-role").select_option("write")
    admin.get_by_role("button", name="Grant permission").click()
    expect(admin.locator(f'tr[data-repository="{REPO}"] select')).to_have_value("write")

    work = tmp_path_factory.mktemp("robot-push")
    layout = write_oci_layout(work / "layout", ImageSpec(host_arch(), layers=1, layer_size=64 * 1024))
    Skopeo(work / "skopeo").copy(layout.ref, f"docker://{server.host}/{ORG}/{REPO}:{TAG}",
                                 creds=f"{ORG}+{ROBOT}:{state['token']}")
    admin.goto(f"/repository/{ORG}/{REPO}?tab=tags")
    expect(admin.locator(f'tr[data-tag="{TAG}"]')).to_be_visible()

    admin.goto(f"/organization/{ORG}?tab=logs")
    expect(admin.locator("svg.chart rect.bar").first).to_be_visible()
    expect(admin.locator('tr[data-kind="create_robot"]')).to_be_visible()
    shot(admin, screenshots, "orgs-05-usage-logs")
    admin.goto(f"/organization/{ORG}")
    expect(admin.locator(".repo-list")).to_contain_text(f"{ORG}/{REPO}")
    shot(admin, screenshots, "orgs-06-repositories")


def test_default_permission_and_settings(admin, screenshots):
    admin.goto(f"/organization/{ORG}?tab=defaultperms")
    form = admin.locator("#new-prototype")
    form.get_by_label("Grant to").select_option("team")
    form.get_by_label("User, robot or team name").fill("developers")
    form.get_by_label("Role").select_option("write")
    form.get_by_role("button", name="Add default permission").click()
    expect(admin.locator("tr[data-prototype]")).to_contain_text("developers")
    shot(admin, screenshots, "orgs-07-default-permissions")
    admin.goto(f"/organization/{ORG}?tab=settings")
    admin.get_by_label(f"Type {ORG} to confirm").fill("not-" + ORG)
    admin.get_by_role("button", name="Delete organization").click()  # the confirm dialog is accepted
    expect(admin.locator("#delete")).to_contain_text(f"Type {ORG} to confirm")
    shot(admin, screenshots, "orgs-08-settings")


def test_superuser_panel_pages(admin, screenshots):
    admin.get_by_role("link", name="Superuser").click()
    admin.locator(".tabs").get_by_role("link", name="Organizations", exact=True).click()
    expect(admin.locator(f'tr[data-org="{ORG}"]')).to_be_visible()
    shot(admin, screenshots, "superuser-02-organizations")
    admin.locator(".tabs").get_by_role("link", name="Usage logs").click()
    expect(admin.locator('tr[data-kind="org_create"]')).to_be_visible()
    shot(admin, screenshots, "superuser-03-usage-logs")
    admin.locator(".tabs").get_by_role("link", name="Service keys").click()
    expect(admin.get_by_role("heading", name="Create service key")).to_be_visible()
    shot(admin, screenshots, "superuser-04-service-keys")


def test_global_message_reaches_everyone(admin, browser, server, state, screenshots):
    admin.goto("/superuser?tab=messages")
    expect(admin.locator(".empty-state")).to_contain_text("No messages")
    admin.get_by_label("Warning").check()
    admin.get_by_label("Message", exact=True).fill(NOTICE)
    admin.get_by_role("button", name="Publish message").click()
    expect(admin.locator(".flash")).to_contain_text("Message published")
    expect(admin.locator(".banners .banner-warning")).to_contain_text(NOTICE)
    shot(admin, screenshots, "superuser-05-messages")

    anon_context, anon = new_page(browser, server)
    viewer_context, viewer = new_page(browser, server)
    try:
        anon.goto("/repository/")
        expect(anon.locator(".banners .banner-warning")).to_contain_text(NOTICE)
        expect(anon.get_by_role("link", name="Superuser")).to_have_count(0)
        shot(anon, screenshots, "superuser-06-banner-anonymous")
        _sign_in(viewer, VIEWER, state["viewer_password"])
        expect(viewer.locator(".banners .banner-warning")).to_contain_text(NOTICE)
        assert viewer.goto("/superuser").status == 404  # not a superuser: the panel does not exist

        admin.locator(".message-list li", has_text=NOTICE).get_by_role("button", name=re.compile("^Delete")).click()
        expect(admin.locator(".flash")).to_contain_text("Message removed")
        expect(admin.locator(".banners")).to_have_count(0)
        anon.reload()
        expect(anon.locator(".banners")).to_have_count(0)
        viewer.goto("/repository/")
        expect(viewer.locator(".banners")).to_have_count(0)
    finally:
        anon_context.close()
        viewer_context.close()
