"""An in-process scanner (SQLite in tmp_path) driven through its ASGI app."""

from __future__ import annotations

import httpx
import pytest
from support.scannerservice import WebhookReceiver, scanner_config

from quaymaster.scanner.api.app import build_app
from quaymaster.scanner.runtime import Runtime


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
async def scanner(tmp_path, webhook):
    runtime = Runtime(scanner_config(tmp_path, webhook.url), "combo")
    await runtime.dbs.create_schema()  # no background loops: tests drive updates and notifications
    app = build_app(runtime, manage_lifecycle=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scanner") as client:
        client.runtime = runtime  # type: ignore[attr-defined]
        yield client
    await runtime.stop()
