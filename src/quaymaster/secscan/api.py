"""The security API (`/api/v1/repository/{ns}/{repo}/manifest/{digest}/security`, Quay's shape)
and the scanner's notification webhook (`POST /secscan/notification`).

Notifications are received, paged through, logged and deleted from the scanner; turning them into
user notifications (Quay's `vulnerability_found` events) is not implemented yet."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict

import jwt
from fastapi import APIRouter, Depends, Request
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from quaymaster.accounts.service import Identity
from quaymaster.api.access import repo_access
from quaymaster.api.auth import ctx_of, current_identity
from quaymaster.api.errors import ApiError, not_found
from quaymaster.content import service as content
from quaymaster.secscan import service
from quaymaster.secscan.client import ScannerError, decode_psk

log = logging.getLogger(__name__)

router = APIRouter(tags=["secscan"])


def strip_vulnerabilities(layer: dict) -> dict:
    """vulnerabilities=false: the packages alone."""
    features = [{**f, "Vulnerabilities": []} for f in layer["Layer"]["Features"]]
    return {"Layer": {**layer["Layer"], "Features": features}}


@router.get("/repository/{namespace}/{name}/manifest/{digest}/security",
            summary="The security scan of a manifest (Quay's format)")
async def manifest_security(request: Request, namespace: str, name: str, digest: str,
                            vulnerabilities: bool = False, identity: Identity = Depends(current_identity)):
    ctx = ctx_of(request)
    if not service.enabled(ctx.settings):
        raise not_found("security scanning is not enabled")
    repo, _ = await repo_access(request, identity, namespace, name, "read")
    async with ctx.db.read() as session:
        manifest = await content.manifest_by_digest(session, repo.id, digest)
    if manifest is None:
        raise not_found(f"manifest {digest} is not in {repo.path}")
    info = await service.security_info(ctx, manifest)
    if info.unavailable:
        # Quay's DownstreamIssue: the scanner could not be asked; nothing of ours is wrong.
        raise ApiError(520, "the security scanner could not be reached or answered badly", "downstream_issue")
    data = None
    if info.layer is not None:
        data = info.layer if vulnerabilities else strip_vulnerabilities(info.layer)
    return {"status": info.status, "data": data}


# --- the notifier webhook -------------------------------------------------------------------

WEBHOOK_LEEWAY_S = 15
MAX_WEBHOOK_BYTES = 64 * 1024
_seen: OrderedDict[str, None] = OrderedDict()  # notification ids handled by this process
_tasks: set[asyncio.Task] = set()


def _verify_webhook_token(request: StarletteRequest, psk: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    try:
        claims = jwt.decode(token.strip(), decode_psk(psk), algorithms=["HS256"], leeway=WEBHOOK_LEEWAY_S,
                            options={"require": ["nbf", "iat", "exp"], "verify_aud": False})
    except (jwt.PyJWTError, ValueError):
        return False
    return claims["iat"] <= time.time() + WEBHOOK_LEEWAY_S  # a token from the future is refused


async def _process_notification(ctx, notification_id: str) -> int:
    """Page through one notification set, log what it says, then delete it from the scanner."""
    client = service.shared_client(ctx.settings)
    seen = 0
    next_page = None
    try:
        while True:
            page = await client.notification_page(notification_id, next_page)
            if page is None:
                return seen
            for item in page["notifications"]:
                vuln = item.get("vulnerability") if isinstance(item.get("vulnerability"), dict) else {}
                package = vuln.get("package") if isinstance(vuln.get("package"), dict) else {}
                log.info("scanner notification %s: %s %s in %s (%s, package %s)", notification_id,
                         item.get("reason"), vuln.get("name"), item.get("manifest"),
                         vuln.get("normalized_severity") or vuln.get("severity"), package.get("name"))
                seen += 1
            next_page = page["page"].get("next")
            if not next_page:
                break
        await client.delete_notification(notification_id)
    except ScannerError as exc:
        log.warning("scanner notification %s: %s", notification_id, exc)
    return seen


async def notification_webhook(request: StarletteRequest) -> Response:
    ctx = request.app.state.ctx
    settings = ctx.settings
    if not service.enabled(settings):
        return PlainTextResponse("Not Found", status_code=404)
    if settings.SECURITY_SCANNER_V4_PSK and not _verify_webhook_token(request, settings.SECURITY_SCANNER_V4_PSK):
        return PlainTextResponse("Unauthorized", status_code=401)
    raw = await request.body()
    if len(raw) > MAX_WEBHOOK_BYTES:
        return PlainTextResponse("Request too large", status_code=413)
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("notification_id"), str) or "callback" not in body:
        return JSONResponse({"error_message": "notification_id and callback are required"}, status_code=400)
    try:  # Clair's ids are UUIDs; anything else must not reach a URL path we request
        notification_id = str(uuid.UUID(body["notification_id"]))
    except ValueError:
        return JSONResponse({"error_message": "notification_id is not a UUID"}, status_code=400)
    if notification_id not in _seen:
        _seen[notification_id] = None
        if len(_seen) > 1000:
            _seen.popitem(last=False)
        task = asyncio.create_task(_process_notification(ctx, notification_id))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
    return PlainTextResponse("Okay")


async def drain() -> None:
    """Wait for notification handling started by this process (tests, shutdown)."""
    if _tasks:
        await asyncio.gather(*list(_tasks), return_exceptions=True)


routes = [Route("/secscan/notification", notification_webhook, methods=["POST"])]
