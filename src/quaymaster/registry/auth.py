"""Docker token auth: the /v2/auth token service and bearer-token checks on /v2 routes."""

import base64
import binascii
import logging
import re
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse

from quaymaster.accounts import credentials, orgs, permissions
from quaymaster.accounts.models import User
from quaymaster.accounts import service as accounts
from quaymaster.accounts.permissions import PUSH
from quaymaster.accounts.service import ANONYMOUS, Identity
from quaymaster.accounts.tokens import ANONYMOUS_SUBJECT, TOKEN_LIFETIME_S, TokenClaims, TokenError
from quaymaster.content import service as content
from quaymaster.context import AppContext
from quaymaster.oci.errors import OCIError
from quaymaster.oci.reference import split_repository
from quaymaster.registry.errors import RegistryError

log = logging.getLogger(__name__)

_SCOPE_RE = re.compile(r"^repository:([^:]+):([a-z*,]*)$")
ACTION_ORDER = ("pull", "push", "*")


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def challenge(ctx: AppContext, scope: str | None = None, error: str | None = None) -> dict[str, str]:
    s = ctx.settings
    value = f'Bearer realm="{s.base_url}/v2/auth",service="{s.SERVER_HOSTNAME}"'
    if scope:
        value += f',scope="{scope}"'
    if error:
        value += f',error="{error}"'
    return {"WWW-Authenticate": value}


def unauthorized(ctx: AppContext, message: str, scope: str | None = None) -> RegistryError:
    return RegistryError("UNAUTHORIZED", message, headers=challenge(ctx, scope))


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


async def _authenticate(ctx: AppContext, request: Request) -> Identity | None:
    """Identity for the Basic credentials, ANONYMOUS if none were sent, None if they are wrong."""
    creds = _basic_credentials(request)
    if creds is None:
        return ANONYMOUS
    username, password = creds
    try:
        async with ctx.db.write() as session:
            identity = await credentials.from_basic(session, ctx.settings, ctx.cipher, username, password)
    except accounts.LoginThrottled as exc:
        raise RegistryError("TOO_MANY_REQUESTS", str(exc), status=429,
                            headers={"Retry-After": str(exc.retry_after)}) from None
    except accounts.AuthUnavailable:
        raise unauthorized(ctx, "authentication service unavailable; try again later") from None
    if identity is None and ctx.settings.ACTION_LOG_AUDIT_LOGIN_FAILURES:
        ctx.audit.record("login_failure", ip=client_ip(request),
                         metadata={"type": "v2auth", "username": username[:255]})
    return identity


def _parse_scopes(ctx: AppContext, request: Request) -> list[tuple[str, set[str]]]:
    """repository scopes as (ns/name, actions); an optional SERVER_HOSTNAME/ prefix is dropped."""
    out = []
    for raw in request.query_params.getlist("scope"):
        for scope in raw.split(" "):
            if not scope or scope.startswith("registry:"):
                continue  # registry:catalog:* needs no grant: the catalog filters by visibility
            m = _SCOPE_RE.match(scope)
            if not m:
                raise RegistryError("INVALID_REQUEST", f"unable to parse scope {scope!r}")
            name = m.group(1).removeprefix(ctx.settings.SERVER_HOSTNAME + "/")
            out.append((name, {a for a in m.group(2).split(",") if a}))
    return out


async def _grant(ctx: AppContext, identity: Identity, name: str, wanted: set[str],
                 request: Request) -> list[str]:
    """The subset of `wanted` this identity gets on `name`; push may create the repository."""
    try:
        namespace, repo_name = split_repository(name)
    except OCIError:
        return []
    flags = {"anonymous_access": ctx.settings.FEATURE_ANONYMOUS_ACCESS}
    async with ctx.db.read() as session:
        repo = await content.get_repository(session, namespace, repo_name)
        if repo is not None:
            role = await permissions.repo_role(session, identity, repo.target, **flags)
    if repo is None:
        if identity.anonymous:
            return []
        if "push" in wanted:
            repo = await _create_on_push(ctx, identity, namespace, repo_name, request)
        if repo is None:
            # Whoever could create it may pull a repository that does not exist yet, so the
            # client gets a truthful 404 NAME_UNKNOWN instead of a 401 that reads like a bad password.
            return ["pull"] if "pull" in wanted and await _may_create(ctx, identity, namespace) else []
        role = "admin" if identity.kind == "user" else "write"
    rank = permissions.ROLE_RANK.get(role or "", 0)
    granted = []
    if "pull" in wanted and rank >= 1:
        granted.append("pull")
    # Granted whatever the repository state: the push itself then fails with a clear 403
    # ("repository is read-only") instead of an opaque 401.
    if "push" in wanted and rank >= 2:
        granted.append("push")
    if "*" in wanted and rank >= 3:
        granted.append("*")
    return granted


async def _may_create(ctx: AppContext, identity: Identity, namespace: str) -> bool:
    async with ctx.db.read() as session:
        ns = await accounts.get_namespace(session, namespace)
        return ns is not None and await permissions.can_create_in(session, identity, ns)


async def _create_namespace(ctx: AppContext, session, identity: Identity, namespace: str, request: Request):
    """CREATE_NAMESPACE_ON_PUSH: a push to a missing namespace creates an organization the pusher owns."""
    pusher = await session.get(User, identity.user_id)
    try:
        org = await orgs.create_org(session, namespace, None, pusher)
    except accounts.AccountError:
        return None
    ctx.audit.record("org_create", account_id=org.id, performer_id=identity.user_id, ip=client_ip(request),
                     metadata={"namespace": namespace, "via": "push"})
    return org


async def _create_on_push(ctx: AppContext, identity: Identity, namespace: str, name: str,
                          request: Request) -> content.RepoRef | None:
    """Quay creates the repository when a push scope is granted for a missing one."""
    try:
        async with ctx.db.write() as session:
            ns = await accounts.get_namespace(session, namespace)
            if ns is None and ctx.settings.CREATE_NAMESPACE_ON_PUSH and identity.kind == "user":
                ns = await _create_namespace(ctx, session, identity, namespace, request)
            if ns is None or not await permissions.can_create_in(session, identity, ns):
                return None
            repo = await content.get_repository(session, namespace, name)
            if repo is not None:
                return repo
            visibility = "private" if ctx.settings.CREATE_PRIVATE_REPO_ON_PUSH else "public"
            repo = await content.create_repository(session, ns, name, visibility, creator_id=identity.user_id)
    except IntegrityError:
        # A concurrent token request (clients copy layers in parallel) created it first.
        async with ctx.db.read() as session:
            return await content.get_repository(session, namespace, name)
    ctx.audit.record("create_repo", account_id=ns.id, performer_id=identity.user_id,
                     repository_id=repo.id, ip=client_ip(request),
                     metadata={"repo": name, "namespace": namespace, "visibility": visibility, "via": "push"})
    return repo


async def token_endpoint(request: Request) -> JSONResponse:
    ctx: AppContext = request.app.state.ctx
    try:
        identity = await _authenticate(ctx, request)
        if identity is None:
            raise unauthorized(ctx, "invalid username or password")
        scopes = _parse_scopes(ctx, request)
        if identity.anonymous and not scopes:
            raise unauthorized(ctx, "credentials are required")
        if identity.anonymous and not ctx.settings.FEATURE_ANONYMOUS_ACCESS:
            raise unauthorized(ctx, "anonymous access is disabled; log in first")
        access = []
        for name, wanted in scopes:
            granted = await _grant(ctx, identity, name, wanted, request)
            access.append({"type": "repository", "name": name,
                           "actions": [a for a in ACTION_ORDER if a in granted]})
    except RegistryError as err:
        return err.response()
    if not identity.anonymous and not scopes and ctx.settings.ACTION_LOG_AUDIT_LOGINS:
        ctx.audit.record("login_success", account_id=identity.user_id, performer_id=identity.user_id,
                         ip=client_ip(request), metadata={"type": "v2auth", "kind": identity.kind})
    subject = ANONYMOUS_SUBJECT if identity.anonymous else identity.username
    context = {"version": 2, "kind": identity.kind, "user": None if identity.anonymous else identity.username,
               "entity_kind": identity.kind, "entity_reference": identity.user_id}
    token = ctx.keys.issue(subject, access, context)
    return JSONResponse({"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME_S})


@dataclass(frozen=True)
class Caller:
    """The verified bearer of a request on /v2."""

    claims: TokenClaims | None

    @property
    def user_id(self) -> int | None:
        if self.claims is None:
            return None
        ref = self.claims.context.get("entity_reference")
        return ref if isinstance(ref, int) else None

    @property
    def username(self) -> str | None:
        return None if self.claims is None or self.claims.subject == ANONYMOUS_SUBJECT else self.claims.subject

    def can(self, repository: str, action: str) -> bool:
        """`*` (admin) implies pull and push, as in Quay."""
        if self.claims is None:
            return False
        granted = self.claims.actions_for(repository)
        return action in granted or "*" in granted


async def bearer(ctx: AppContext, request: Request) -> Caller:
    """The caller of a /v2 route; only bearer tokens are accepted there, as in Quay."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return Caller(None)
    try:
        return Caller(await ctx.keys.verify(token.strip()))
    except TokenError as exc:
        raise unauthorized(ctx, str(exc)) from None


def scope_for(name: str, action: str) -> str:
    return f"repository:{name}:{'pull,push' if action == PUSH else action}"
