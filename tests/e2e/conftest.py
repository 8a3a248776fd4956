"""Browser tests: Playwright driving Debian's chromium against a real `quaymaster registry`.

Never downloads a browser. Without chromium or the playwright package the tests skip on a
developer machine and fail in CI (CI=true)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.env import missing_dependency
from support.servers import QuaymasterServer, quaymaster_server

CHROMIUM = os.environ.get("QUAYMASTER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
ADMIN = "quayadmin"


@pytest.fixture(scope="package")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_dependency("the playwright Python package is not installed (pip install -e '.[test]')")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing_dependency(f"chromium not found at {CHROMIUM} (install the Debian package 'chromium')")
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="package")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuaymasterServer]:
    """One registry for the module, on SQLite; quayadmin (created through the UI) is a superuser."""
    with quaymaster_server(tmp_path_factory.mktemp("quaymaster-ui"), config={"SUPER_USERS": [ADMIN]}) as server:
        yield server


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def new_page(browser, server: QuaymasterServer):
    """A fresh browser context (own cookies) with a desktop viewport; returns (context, page)."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # data-confirm prompts: say yes
    return context, page
