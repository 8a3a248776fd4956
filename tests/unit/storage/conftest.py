"""Every storage driver behind one fixture, so the contract suite runs against each of them."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.s3server import S3Server, shared_s3_server

from quaymaster.storage.base import BlobStore
from quaymaster.storage.local import LocalStorage


@pytest.fixture(scope="session")
def s3_endpoint(request) -> S3Server:
    """One S3 server (Swift + s3api on loopback) for the session; tests use their own prefixes."""
    return shared_s3_server(request)


@dataclass
class Driver:
    """A store under test and a way to look at its upload data behind its back."""

    kind: str
    store: BlobStore
    upload_leftovers: Callable[[], list[str]]
    server: S3Server | None = None
    prefix: str = ""

    def s3_store(self, **extra: Any) -> BlobStore:
        """Another S3Storage location over the same bucket and prefix, with extra parameters."""
        from quaymaster.storage.s3 import S3Store

        return S3Store.from_config("default", "S3Storage", self.server.storage_params(self.prefix, **extra))


def _local(tmp_path: Path) -> Driver:
    root = tmp_path / "local"
    return Driver("local", LocalStorage("default", str(root)),
                  lambda: sorted(p.name for p in (root / "uploads").iterdir()))


def _s3(server: S3Server) -> Driver:
    from quaymaster.storage.s3 import S3Store

    prefix = f"/contract/{uuid.uuid4().hex}/"  # slashes as Quay configs write storage_path
    store = S3Store.from_config("default", "S3Storage", server.storage_params(prefix))
    key_prefix = prefix.strip("/")
    return Driver("s3", store, lambda: server.keys(f"{key_prefix}/uploads/"), server, key_prefix)


@pytest.fixture(params=["local", "s3"])
def driver(request, tmp_path) -> Driver:
    if request.param == "local":
        return _local(tmp_path)
    return _s3(request.getfixturevalue("s3_endpoint"))


@pytest.fixture
def s3_driver(s3_endpoint) -> Driver:
    return _s3(s3_endpoint)
