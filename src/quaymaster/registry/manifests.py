"""Manifests by tag or digest (GET/HEAD/PUT/DELETE) and the OCI 1.1 referrers API."""

import json

from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response

from quaymaster.accounts.permissions import PULL, PUSH
from quaymaster.content import imageconfig, quota
from quaymaster.content import service as content
from quaymaster.content.service import PulledManifest
from quaymaster.events import publish_quietly
from quaymaster.oci import mediatypes as mt
from quaymaster.oci.digest import compute_digest, parse_digest
from quaymaster.oci.errors import OCIError
from quaymaster.oci.manifest import parse_manifest
from quaymaster.oci.reference import is_reference_digest, is_valid_tag, validate_tag
from quaymaster.registry.auth import bearer, client_ip, scope_for, unauthorized
from quaymaster.registry.common import context, endpoint, parse_name, require
from quaymaster.registry.errors import RegistryError


def _manifest_response(request: Request, manifest: PulledManifest) -> Response:
    headers = {"Docker-Content-Digest": manifest.digest, "Content-Length": str(len(manifest.manifest_bytes))}
    body = b"" if request.method == "HEAD" else manifest.manifest_bytes
    return Response(body, headers=headers, media_type=manifest.media_type)


@endpoint
async def get_manifest(request: Request) -> Response:
    # The hot path: token check from cache, then one query for the manifest.
    ctx = context(request)
    name = request.path_params["name"]
    reference = request.path_params["reference"]
    namespace, repo_name = parse_name(name)
    caller = await bearer(ctx, request)
    if not caller.can(name, PULL):
        raise unauthorized(ctx, "access to the requested resource is not authorized", scope_for(name, PULL))
    by_digest = is_reference_digest(reference)
    if by_digest:
        try:
            parse_digest(reference)
        except OCIError as err:
            raise RegistryError("DIGEST_INVALID", err.message, {"digest": reference}) from None
    elif not is_valid_tag(reference):
        raise RegistryError("MANIFEST_UNKNOWN", f"{reference!r} is not a valid tag", {"tag": reference})
    manifest = await content.pull_manifest(ctx.db, namespace, repo_name, reference, by_digest)
    if manifest is None:
        async with ctx.db.read() as session:
            repo = await content.get_repository(session, namespace, repo_name)
            if repo is None:
                raise RegistryError("NAME_UNKNOWN", f"repository {name} is not known to the registry",
                                    {"name": name})
            if not by_digest:
                await content.manifest_by_tag(session, repo.id, reference)  # raises TAG_EXPIRED
        raise RegistryError("MANIFEST_UNKNOWN", f"manifest {reference} is not known",
                            {"reference": reference})
    if request.method == "GET":
        ctx.audit.record("pull_repo", account_id=manifest.namespace_id, performer_id=caller.user_id,
                         repository_id=manifest.repository_id, ip=client_ip(request),
                         metadata={"namespace": namespace, "repo": repo_name,
                                   ("manifest_digest" if by_digest else "tag"): reference})
    return _manifest_response(request, manifest)


async def _read_body(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise RegistryError("SIZE_INVALID", f"manifest exceeds the {limit}-byte limit",
                                {"max_allowed": limit}, status=413)
    return bytes(body)


@endpoint
async def put_manifest(request: Request) -> Response:
    ctx, caller, repo = await require(request, PUSH)
    reference = request.path_params["reference"]
    by_digest = is_reference_digest(reference)
    if by_digest:
        try:
            algorithm, _ = parse_digest(reference)
        except OCIError as err:
            raise RegistryError("DIGEST_INVALID", err.message, {"digest": reference}) from None
    else:
        algorithm = "sha256"
        try:
            validate_tag(reference)
        except OCIError as err:
            raise RegistryError("TAG_INVALID", err.message, {"tag": reference}) from None
    raw = await _read_body(request, ctx.settings.max_manifest_bytes)
    parsed = parse_manifest(raw, request.headers.get("content-type"), ctx.settings.max_manifest_bytes,
                            algorithm)
    if by_digest and parsed.digest != reference:
        raise RegistryError("DIGEST_INVALID", "the manifest body does not match the digest in the URL",
                            {"expected": reference, "actual": parsed.digest})
    config = await imageconfig.config_for_push(ctx.db, ctx.storage, repo, parsed)  # labels, read before locking
    try:
        async with ctx.db.write() as session:
            await content.lock_repository(session, repo.id)
            quota_check = await quota.guard_manifest(session, ctx.settings, repo, parsed.blob_digests)
            manifest = await content.store_manifest(session, repo, parsed, config)
            if by_digest:
                keep = None if parsed.subject else ctx.settings.PUSH_TEMP_TAG_EXPIRATION_SEC
                await content.hold_untagged(session, repo.id, manifest.id, keep)
            else:
                await content.set_tag(session, repo.id, reference, manifest.id)
    except IntegrityError:
        # Garbage collection deleted a blob this manifest names between our check and our link
        # (possible only for a blob no upload of this push claimed): push it again.
        raise RegistryError("MANIFEST_BLOB_UNKNOWN", "a blob of this manifest was just garbage collected; "
                            "push the image again") from None
    ctx.audit.record("push_repo", account_id=repo.namespace_id, performer_id=caller.user_id,
                     repository_id=repo.id, ip=client_ip(request),
                     metadata={"namespace": repo.namespace, "repo": repo.name,
                               "tag": None if by_digest else reference, "manifest_digest": parsed.digest})
    quota.record_warnings(ctx.audit, quota_check, repo, performer_id=caller.user_id, ip=client_ip(request))
    await publish_quietly(ctx.events, "manifests", {
        "namespace": repo.namespace, "repository": repo.name, "repository_id": repo.id,
        "digest": parsed.digest, "tag": None if by_digest else reference})
    headers = {"Location": f"/v2/{repo.path}/manifests/{parsed.digest}",
               "Docker-Content-Digest": parsed.digest, "Content-Length": "0"}
    if parsed.subject:
        headers["OCI-Subject"] = parsed.subject.digest
    return Response(status_code=201, headers=headers)


@endpoint
async def delete_manifest(request: Request) -> Response:
    ctx, caller, repo = await require(request, PUSH)
    reference = request.path_params["reference"]
    async with ctx.db.write() as session:
        await content.lock_repository(session, repo.id)
        if is_reference_digest(reference):
            try:
                parse_digest(reference)
            except OCIError as err:
                raise RegistryError("DIGEST_INVALID", err.message, {"digest": reference}) from None
            tags = await content.delete_manifest(session, repo.id, reference)
        else:
            tag = await content.delete_tag(session, repo.id, reference)
            if tag is None:
                raise RegistryError("MANIFEST_UNKNOWN", f"tag {reference!r} is not known",
                                    {"tag": reference})
            tags = [reference]
    for tag_name in tags:
        ctx.audit.record("delete_tag", account_id=repo.namespace_id, performer_id=caller.user_id,
                         repository_id=repo.id, ip=client_ip(request),
                         metadata={"namespace": repo.namespace, "repo": repo.name, "tag": tag_name})
    return Response(status_code=202, headers={"Content-Length": "0"})


@endpoint
async def get_referrers(request: Request) -> Response:
    ctx = context(request)
    if not ctx.settings.FEATURE_REFERRERS_API:
        raise RegistryError("UNSUPPORTED", "the referrers API is disabled", status=404)
    ctx, _, repo = await require(request, PULL)
    digest = request.path_params["digest"]
    try:
        parse_digest(digest)
    except OCIError as err:
        raise RegistryError("DIGEST_INVALID", err.message, {"digest": digest}) from None
    artifact_type = request.query_params.get("artifactType") or None
    async with ctx.db.read() as session:
        found = await content.referrers(session, repo.id, digest, artifact_type)
    manifests = []
    for m in found:
        desc = {"mediaType": m.media_type, "digest": m.digest, "size": len(m.manifest_bytes)}
        if m.artifact_type:
            desc["artifactType"] = m.artifact_type
        if m.annotations:
            desc["annotations"] = m.annotations
        manifests.append(desc)
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}).encode()
    headers = {"Docker-Content-Digest": compute_digest(body)}
    if artifact_type:
        headers["OCI-Filters-Applied"] = "artifactType"
    return Response(body, media_type=mt.OCI_INDEX, headers=headers)
