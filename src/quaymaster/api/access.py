"""Resolving a repository or namespace for an API call, with Quay's 401/403/404 rules.

A repository the caller may not read answers 404 exactly like a missing one; one the caller may
read but not change answers 403."""

from fastapi import Request

from quaymaster.accounts import orgs, permissions
from quaymaster.accounts import service as users
from quaymaster.accounts.models import User
from quaymaster.accounts.service import Identity
from quaymaster.api.auth import ctx_of
from quaymaster.api.errors import forbidden, not_found
from quaymaster.content import service as content
from quaymaster.content.service import RepoRef

ROLE_FOR = {"read": "pull", "write": "push", "admin": "admin"}


async def repo_access(request: Request, identity: Identity, namespace: str, name: str,
                      need: str = "read") -> tuple[RepoRef, str]:
    """The repository and the caller's role on it, if the role is at least `need`."""
    ctx = ctx_of(request)
    flags = {"anonymous_access": ctx.settings.FEATURE_ANONYMOUS_ACCESS,
             "superuser_full_access": ctx.settings.FEATURE_SUPERUSERS_FULL_ACCESS}
    async with ctx.db.read() as session:
        repo = await content.get_repository(session, namespace, name)
        role = await permissions.repo_role(session, identity, repo.target, **flags) if repo else None
    if repo is None or role is None:
        raise not_found(f"repository {namespace}/{name} not found")
    if permissions.ROLE_RANK[role] < permissions.ROLE_RANK[need]:
        raise forbidden(f"requires {need} permission on {namespace}/{name}")
    if need != "read":
        scope = "repo:admin" if need == "admin" else "repo:write"
        if not identity.has_scope(scope) and not identity.has_scope("repo:admin"):
            raise forbidden(f"this token lacks the {scope} scope")
    return repo, role


async def org_access(request: Request, identity: Identity, name: str, *, admin: bool = True) -> User:
    """The organization, if the caller administers it (or, with admin=False, is a member)."""
    ctx = ctx_of(request)
    async with ctx.db.read() as session:
        org = await orgs.get_org(session, name)
        if org is None:
            raise not_found(f"organization {name} not found")
        allowed = (await permissions.is_org_admin(session, identity, org) if admin
                   else await permissions.is_org_member(session, identity, org))
    if not allowed:
        if admin and not identity.anonymous:
            async with ctx.db.read() as session:
                member = await permissions.is_org_member(session, identity, org)
            if member:
                raise forbidden(f"requires admin rights on organization {name}")
        raise not_found(f"organization {name} not found") if identity.anonymous else forbidden(
            f"requires membership of organization {name}")
    return org


async def namespace_for_create(request: Request, identity: Identity, name: str) -> User:
    """The user or organization namespace, if the caller may create repositories in it."""
    ctx = ctx_of(request)
    async with ctx.db.read() as session:
        ns = await users.get_namespace(session, name)
        if ns is None or ns.robot:
            raise not_found(f"namespace {name} not found")
        if not await permissions.can_create_in(session, identity, ns):
            raise forbidden(f"you may not create repositories in {name}")
    return ns
