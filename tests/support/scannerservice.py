"""Helpers for driving the scanner as Quay does: PSK tokens, configs, a webhook receiver."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

from quaymaster.scanner.config import parse_config

from .scannerimages import DATA

PSK = b"scanner-tests-pre-shared-key-32b"


def quay_token(key: bytes = PSK, **claims) -> str:
    """What Quay sends: HS256, iss quay, exp five minutes out."""
    body = {"iss": "quay", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(body, key, algorithm="HS256")


def auth(**claims) -> dict[str, str]:
    return {"Authorization": "Bearer " + quay_token(**claims)}


class WebhookReceiver:
    """Records POSTs the notifier makes (body and Authorization)."""

    def __init__(self):
        self.calls: list[dict] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                calls.append({"body": json.loads(body), "authorization": self.headers.get("Authorization")})
                self.send_response(200)
                self.send_header("Content-Length", "4")
                self.end_headers()
                self.wfile.write(b"Okay")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/secscan/notification"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def scanner_config(tmp_path, webhook_url: str | None = None, **overrides):
    raw = {
        "indexer": {"connstring": f"sqlite:///{tmp_path}/scanner.db"},
        "matcher": {"disable_updaters": True},
        "updaters": {"sets": ["osv", "debian", "alpine", "clair.cvss"], "config": {
            "osv": {"url": str(DATA / "osv-pypi")},
            "debian": {"url": f"file://{DATA / 'debian' / 'bookworm-synthetic.json'}"},
            "alpine": {"url": [str(DATA / "alpine" / "v3.11-main-synthetic.json")]},
            "clair.cvss": {"url": str(DATA / "nvd")},
        }},
        "auth": {"psk": {"key": base64.b64encode(PSK).decode(), "iss": ["quay"]}},
    }
    if webhook_url:
        raw["notifier"] = {"webhook": {"target": webhook_url, "callback": "http://scanner/notifier/api/v1/notification/"}}
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value}
    return parse_config(raw)
