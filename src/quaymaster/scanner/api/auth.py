"""ASGI middleware: every route needs a valid PSK token, except robots.txt and health/metrics."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from quaymaster.scanner.auth import PSKVerifier

OPEN_PATHS = frozenset({"/robots.txt", "/healthz", "/readyz", "/metrics"})


class PSKMiddleware:
    def __init__(self, app: ASGIApp, verifier: PSKVerifier | None):
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.verifier is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        value = None
        for name, raw in scope.get("headers") or ():
            if name == b"authorization":
                text = raw.decode("latin-1")
                if text.startswith("Bearer "):
                    value = text
                    break
        if not self.verifier.verify_header(value):
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)
