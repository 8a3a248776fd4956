"""Download a layer to a private temp file, verifying the digest of the bytes as they arrive."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from quaymaster.oci.digest import new_hasher, parse_digest
from quaymaster.scanner.indexer.layer import LayerError

CHUNK = 1024 * 1024


def _headers(raw: dict) -> list[tuple[str, str]]:
    """Clair's `{"Name": ["v1", "v2"]}` as repeated headers, copied verbatim."""
    out = []
    for name, values in (raw or {}).items():
        for value in values if isinstance(values, list) else [values]:
            out.append((str(name), str(value)))
    return out


async def _refuse_public(host: str) -> None:
    """indexer.airgap: only loopback, private and link-local addresses may be fetched from."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise LayerError(f"cannot resolve {host}: {err}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_global:
            raise LayerError(f"airgap: refusing to fetch from public address {address} ({host})")


async def check_destination(uri: str, *, airgap: bool) -> None:
    """Only http(s) URLs; with airgap, only hosts that resolve to non-public addresses."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LayerError(f"refusing URI {uri[:200]!r}: only http and https are fetched")
    if airgap:
        await _refuse_public(parts.hostname)


async def fetch_layer(client: httpx.AsyncClient, layer: dict, workdir: Path, *, airgap: bool) -> Path:
    """Stream `layer.uri` into a file under `workdir`; a wrong digest or status is a LayerError."""
    uri = str(layer.get("uri") or "")
    await check_destination(uri, airgap=airgap)
    algorithm, expected = parse_digest(layer["hash"])
    hasher = new_hasher(algorithm)
    fd, name = tempfile.mkstemp(prefix="layer-", dir=workdir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            async with client.stream("GET", uri, headers=_headers(layer.get("headers") or {})) as resp:
                if resp.status_code != 200:
                    raise LayerError(f"layer {layer['hash']}: fetch answered {resp.status_code}")
                async for chunk in resp.aiter_raw(CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
        if hasher.hexdigest() != expected:
            raise LayerError(f"layer {layer['hash']}: digest mismatch (got {algorithm}:{hasher.hexdigest()})")
        return path
    except (httpx.HTTPError, httpx.InvalidURL) as err:
        path.unlink(missing_ok=True)
        raise LayerError(f"layer {layer['hash']}: fetch failed: {err}") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def private_workdir() -> Path:
    """A 0700 directory for layer spools, removed by the caller."""
    return Path(tempfile.mkdtemp(prefix="quaymaster-scanner-"))
