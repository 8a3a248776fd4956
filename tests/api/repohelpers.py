"""Helpers for the repository, tag, manifest and permission API tests: pushing images over /v2,
creating repositories and organizations, reading the action log and registry grants."""

import json
import os

import jwt
from protocol.v2client import V2Client, digest_of
from sqlalchemy import select, update

from quaymaster.accounts import orgs
from quaymaster.accounts import service as users
from quaymaster.accounts.models import User
from quaymaster.auditlog import service as auditlog
from quaymaster.content import service as content
from quaymaster.content.models import Tag
from quaymaster.oci import mediatypes as mt

API = "/api/v1"


async def push(http, repo: str, tag: str | None = "latest", *, user: str = "alice", labels: dict | None = None,
               history: list | None = None, layers: int = 1) -> str:
    """Push an OCI image whose config carries `labels` and `history`; returns the manifest digest."""
    client = V2Client(http)
    headers = await client.auth(repo, user=user)
    config = {"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex(),
              "config": {"Labels": labels or {}}, "rootfs": {"type": "layers", "diff_ids": []}}
    if history is not None:
        config["history"] = history
    config_bytes = json.dumps(config).encode()
    descs = []
    for _ in range(layers):
        blob = os.urandom(512)
        descs.append({"mediaType": mt.OCI_LAYER_GZIP, "digest": await client.upload(repo, blob, headers),
                      "size": len(blob)})
    body = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": await client.upload(repo, config_bytes, headers),
                       "size": len(config_bytes)},
            "layers": descs}
    raw = json.dumps(body).encode()
    digest = digest_of(raw)
    r = await http.put(f"/v2/{repo}/manifests/{tag or digest}", content=raw,
                       headers={**headers, "Content-Type": mt.OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return digest


async def push_index(http, repo: str, tag: str, children: list[str], user: str = "alice") -> str:
    """An OCI index over manifests already in the repository."""
    client = V2Client(http)
    headers = await client.auth(repo, user=user)
    manifests = []
    for child in children:
        r = await http.get(f"/v2/{repo}/manifests/{child}", headers=headers)
        manifests.append({"mediaType": mt.OCI_MANIFEST, "digest": child, "size": len(r.content),
                          "platform": {"architecture": "amd64", "os": "linux"}})
    raw = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}).encode()
    r = await http.put(f"/v2/{repo}/manifests/{tag}", content=raw, headers={**headers, "Content-Type": mt.OCI_INDEX})
    assert r.status_code == 201, r.text
    return digest_of(raw)


async def pull_status(http, repo: str, reference: str, user: str = "alice") -> int:
    headers = await V2Client(http).auth(repo, "pull", user=user)
    return (await http.get(f"/v2/{repo}/manifests/{reference}", headers=headers)).status_code


async def create_repo(http, headers: dict, name: str, visibility: str = "private", namespace: str | None = None):
    body = {"repository": name, "visibility": visibility, "description": ""}
    if namespace:
        body["namespace"] = namespace
    return await http.post(f"{API}/repository", json=body, headers=headers)


async def make_repo(ctx, path: str, visibility: str = "private") -> int:
    namespace, name = path.split("/")
    async with ctx.db.write() as session:
        ns = await users.get_namespace(session, namespace)
        return (await content.create_repository(session, ns, name, visibility)).id


async def make_org(ctx, name: str, owner: str = "alice", teams: dict[str, tuple[str, list[str]]] | None = None):
    """An organization owned by `owner`, with teams {name: (role, [members])}."""
    async with ctx.db.write() as session:
        org = await orgs.create_org(session, name, None, await users.get_user(session, owner))
        for team_name, (role, members) in (teams or {}).items():
            team, _ = await orgs.upsert_team(session, org, team_name, role)
            for member in members:
                await orgs.add_team_member(session, org, team, await users.get_namespace(session, member))


async def registry_actions(http, user: str, repo: str, password: str | None = None) -> list[str]:
    """What /v2/auth grants `user` on `repo` when asking for pull and push."""
    r = await http.get("/v2/auth", params={"service": "registry.test", "scope": f"repository:{repo}:pull,push"},
                       auth=(user, password or f"{user}-password"))
    assert r.status_code == 200, r.text
    claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
    return claims["access"][0]["actions"]


async def log_kinds(ctx, repo_id: int | None = None, skip: tuple[str, ...] = ("pull_repo", "push_repo")) -> list[str]:
    """Action log kinds, oldest first, without registry traffic (flushes the buffered writer first)."""
    await ctx.audit.flush()
    async with ctx.db.read() as session:
        entries = await auditlog.entries(session, repository_id=repo_id, limit=1000)
    return [e.kind for e in reversed(entries) if e.kind not in skip]


async def log_entries(ctx, kind: str) -> list:
    """Action log entries of one kind, oldest first."""
    await ctx.audit.flush()
    async with ctx.db.read() as session:
        return [e for e in reversed(await auditlog.entries(session, limit=1000)) if e.kind == kind]


async def repo_id(ctx, path: str) -> int:
    namespace, name = path.split("/")
    async with ctx.db.read() as session:
        return (await content.get_repository(session, namespace, name)).id


async def shift_tag_end(ctx, path: str, tag: str, end_ms: int) -> None:
    """Move the end of the newest row of `tag` (time travel for history and expiration tests)."""
    rid = await repo_id(ctx, path)
    async with ctx.db.write() as session:
        tag_id = await session.scalar(select(Tag.id).where(Tag.repository_id == rid, Tag.name == tag)
                                      .order_by(Tag.lifetime_start_ms.desc(), Tag.id.desc()).limit(1))
        await session.execute(update(Tag).where(Tag.id == tag_id).values(lifetime_end_ms=end_ms))


async def set_window(ctx, namespace: str, seconds: int) -> None:
    """The namespace's time-machine window (removed_tag_expiration_s)."""
    async with ctx.db.write() as session:
        await session.execute(update(User).where(User.username == namespace).values(removed_tag_expiration_s=seconds))
