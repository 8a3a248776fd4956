"""The config editor: one server-rendered page plus a small JSON API, behind HTTP basic auth.

It edits a config bundle held in memory (loaded from --config-dir, or defaults), runs the
validators against the real services, and hands the result out as quay-config.tar.gz. It never
writes to the config dir: the download is the product, as with Quay's editor.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from quaymaster.configeditor import form as fields
from quaymaster.settings.bundle import (
    BUNDLE_FILENAME,
    BundleError,
    ConfigBundle,
    build_tarball,
    check_file_name,
)
from quaymaster.settings.validators import ValidationIssue, validate_bundle

USERNAME = "quayconfig"
REALM = "Quaymaster config editor"
MAX_CERT_BYTES = 1024 * 1024
MAX_JSON_BYTES = 4 * 1024 * 1024

_templates = Environment(loader=PackageLoader("quaymaster.configeditor", "templates"),
                         autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


@dataclass
class EditorState:
    bundle: ConfigBundle
    config_dir: Path | None
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    db_type: str | None = None  # the database type last chosen in the form


class BasicAuth:
    """Every request needs user `quayconfig` and the editor's password (compared in constant time)."""

    def __init__(self, app: ASGIApp, password: str):
        self.app = app
        self.expected = (USERNAME.encode(), password.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._authorized(scope):
            response = Response("authentication required\n", status_code=401, media_type="text/plain",
                                headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, encoded = header.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        # Both compared every time, so timing tells nothing about which half was wrong.
        user_ok = hmac.compare_digest(user, self.expected[0])
        password_ok = hmac.compare_digest(password, self.expected[1])
        return bool(sep) and user_ok and password_ok


def create_editor_app(password: str, bundle: ConfigBundle, config_dir: Path | None = None) -> ASGIApp:
    if not password:
        raise ValueError("the config editor needs a password")
    state = EditorState(bundle=bundle, config_dir=config_dir)
    routes = [
        Route("/", page, methods=["GET", "POST"]),
        Route("/api/v1/config", get_config, methods=["GET"]),
        Route("/api/v1/config/validate", api_validate, methods=["POST"]),
        Route("/api/v1/config/download", api_download, methods=["POST"]),
        Route("/api/v1/config/certs/{name:path}", put_cert, methods=["PUT"]),
        Route("/api/v1/config/certs/{name:path}", delete_cert, methods=["DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.editor = state
    return BasicAuth(app, password)


def _state(request: Request) -> EditorState:
    return request.app.state.editor


async def _validate(state: EditorState) -> list[ValidationIssue]:
    return await validate_bundle(state.bundle, state.config_dir)


def _download(bundle: ConfigBundle) -> Response:
    return Response(build_tarball(bundle), media_type="application/gzip",
                    headers={"Content-Disposition": f'attachment; filename="{BUNDLE_FILENAME}"'})


# --- the page ------------------------------------------------------------------------------------

async def page(request: Request) -> Response:
    state = _state(request)
    issues: list[ValidationIssue] | None = None
    notice = ""
    if request.method == "POST":
        form = await request.form(max_part_size=MAX_CERT_BYTES)
        if not hmac.compare_digest(str(form.get("csrf", "")), state.csrf_token):
            return Response("stale or forged form; reload the page\n", status_code=403, media_type="text/plain")
        text = {k: v for k, v in form.items() if isinstance(v, str)}
        state.bundle.config = fields.apply_form(state.bundle.config, text)
        state.db_type = text.get("db_type") or state.db_type
        upload_error = await _take_uploads(state, form, text.get("tls_mode", "none"))
        action = text.get("action", "validate")
        if action == "download":
            return _download(state.bundle)
        if action == "generate_psk":
            state.bundle.config["SECURITY_SCANNER_V4_PSK"] = fields.generate_psk()
            notice = "Generated a new pre-shared key; give the same key to the scanner."
        else:
            issues = await _validate(state)
        if upload_error:
            issues = (issues or []) + [upload_error]
    return _render(state, issues, notice)


async def _take_uploads(state: EditorState, form: Any, tls_mode: str) -> ValidationIssue | None:
    if tls_mode != "quaymaster":
        # No TLS here: certificates left in the bundle would only confuse the next reader.
        for name in ("ssl.cert", "ssl.key"):
            state.bundle.files.pop(name, None)
        return None
    for field_name, name in (("ssl_cert", "ssl.cert"), ("ssl_key", "ssl.key")):
        upload = form.get(field_name)
        if isinstance(upload, UploadFile) and upload.filename:
            data = await upload.read(MAX_CERT_BYTES + 1)
            if len(data) > MAX_CERT_BYTES:
                return ValidationIssue(name, "the uploaded file is too large for a certificate")
            if data:
                state.bundle.files[name] = data
    return None


@dataclass
class Problem:
    """One message for one or more keys (BUILDLOGS_REDIS and USER_EVENTS_REDIS often share one),
    and the form field it is shown beside (None: no field sets those keys)."""

    keys: list[str]
    message: str
    field: str | None


def group_issues(issues: list[ValidationIssue], values: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for issue in issues:
        where = fields.field_for_issue(issue.key, issue.message, values)
        same = next((p for p in problems if p.field == where and p.message == issue.message), None)
        if same is not None:
            if issue.key not in same.keys:
                same.keys.append(issue.key)
        else:
            problems.append(Problem([issue.key], issue.message, where))
    return problems


def _render(state: EditorState, issues: list[ValidationIssue] | None, notice: str = "") -> HTMLResponse:
    template = _templates.get_template("editor.html")
    values = fields.form_values(state.bundle.config, state.bundle.files, state.db_type)
    problems = None if issues is None else group_issues(issues, values)

    def errors_at(name: str) -> list[Problem]:
        return [p for p in problems or [] if p.field == name]

    html = template.render(v=values, problems=problems, notice=notice, errors_at=errors_at,
                           csrf=state.csrf_token, config_dir=state.config_dir,
                           extra_ca=[n for n in sorted(state.bundle.files) if n.startswith("extra_ca_certs/")])
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


# --- the JSON API ----------------------------------------------------------------------------------

async def get_config(request: Request) -> JSONResponse:
    state = _state(request)
    return JSONResponse({"config": state.bundle.config, "certs": sorted(state.bundle.files)})


async def _config_from_body(request: Request) -> dict[str, Any] | JSONResponse:
    """The {"config": {...}} body; JSON only, which also keeps other sites' forms out."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return JSONResponse({"error": "send application/json"}, status_code=415)
    body = await _read_limited(request, MAX_JSON_BYTES)
    if body is None:
        return JSONResponse({"error": "body too large"}, status_code=413)
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return JSONResponse({"error": "body is not valid JSON"}, status_code=400)
    config = data.get("config", _state(request).bundle.config) if isinstance(data, dict) else None
    if not isinstance(config, dict):
        return JSONResponse({"error": "expected {\"config\": {...}}"}, status_code=400)
    return config


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it grows past limit."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def api_validate(request: Request) -> JSONResponse:
    config = await _config_from_body(request)
    if isinstance(config, JSONResponse):
        return config
    state = _state(request)
    state.bundle.config = config
    issues = await _validate(state)
    return JSONResponse({"issues": [i.as_dict() for i in issues]})


async def api_download(request: Request) -> Response:
    config = await _config_from_body(request)
    if isinstance(config, JSONResponse):
        return config
    state = _state(request)
    state.bundle.config = config
    return _download(state.bundle)


async def put_cert(request: Request) -> JSONResponse:
    state = _state(request)
    try:
        name = check_file_name(request.path_params["name"])
    except BundleError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    data = await _read_limited(request, MAX_CERT_BYTES)
    if data is None:
        return JSONResponse({"error": "too large for a certificate"}, status_code=413)
    state.bundle.files[name] = data
    return JSONResponse({"certs": sorted(state.bundle.files)})


async def delete_cert(request: Request) -> JSONResponse:
    state = _state(request)
    if state.bundle.files.pop(request.path_params["name"], None) is None:
        return JSONResponse({"error": "no such certificate"}, status_code=404)
    return JSONResponse({"certs": sorted(state.bundle.files)})
