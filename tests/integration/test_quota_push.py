"""Storage quotas against a real `quaymaster registry`, pushed to with skopeo.

A superuser gives the organization a quota with a Warning limit at 50% and a Reject limit at
100%. skopeo's pushes below the Warning limit and across it succeed (the crossing is logged);
the push that would go over the Reject limit fails with Quay's "denied: Quota has been exceeded"
and leaves no tag behind; after the tag is deleted and `quaymaster gc` runs, the space is free
again and the same push succeeds. SQLite only: tests/api covers both databases.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support.clients import Skopeo
from support.images import ImageSpec, host_arch, write_oci_layout
from support.proc import CommandError
from support.servers import QuaymasterServer, quaymaster_server

from ._registry_http import Account

pytestmark = pytest.mark.integration

ADMIN = Account("admin", "admin-password")
LIMIT = 300 * 1024  # one 64 KiB layer is ~22% of it


@dataclass(frozen=True)
class Setup:
    server: QuaymasterServer
    api: httpx.Client


def _ok(response: httpx.Response, status: int = 200):
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else {}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data_dir = tmp_path_factory.mktemp("quaymaster-quota")
    config = {"FEATURE_USER_INITIALIZE": True, "FEATURE_QUOTA_MANAGEMENT": True, "SUPER_USERS": [ADMIN.name]}
    with quaymaster_server(data_dir, config=config) as server:
        first = _ok(httpx.post(f"{server.url}/api/v1/user/initialize", trust_env=False, timeout=30, json={
            "username": ADMIN.name, "password": ADMIN.password, "email": "admin@example.com", "access_token": True}))
        with httpx.Client(base_url=f"{server.url}/api/v1", trust_env=False, timeout=30,
                          headers={"Authorization": f"Bearer {first['access_token']}"}) as api:
            _ok(api.post("/organization/", json={"name": "acme", "email": "acme@example.com"}), 201)
            _ok(api.post("/organization/acme/quota", json={"limit_bytes": LIMIT}), 201)
            (quota,) = _ok(api.get("/organization/acme/quota"))
            for kind, percent in (("Warning", 50), ("Reject", 100)):
                _ok(api.post(f"/organization/acme/quota/{quota['id']}/limit",
                             json={"type": kind, "threshold_percent": percent}), 201)
            yield Setup(server, api)


def _usage(api: httpx.Client) -> int:
    return _ok(api.get("/organization/acme"))["quota_report"]["quota_bytes"]


def _logged(api: httpx.Client, kind: str, expected: int) -> list[dict]:
    """Entries of one kind in the organization's log (written within about half a second)."""
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in _ok(api.get("/organization/acme/logs"))["logs"] if e["kind"] == kind]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_skopeo_pushes_are_held_to_the_quota(tmp_path: Path, skopeo: Skopeo, setup: Setup) -> None:
    api, host = setup.api, setup.server.host
    arch = host_arch()
    one = write_oci_layout(tmp_path / "one", ImageSpec(arch, layers=1), seed="quota")
    # Same seed, more layers: shares the first image's layer, adds two of its own.
    two = write_oci_layout(tmp_path / "two", ImageSpec(arch, layers=3), seed="quota")
    three = write_oci_layout(tmp_path / "three", ImageSpec(arch, layers=2), seed="other")
    assert one.layer_digests[0] == two.layer_digests[0]

    skopeo.copy(one.ref, f"docker://{host}/acme/app:one", creds=ADMIN.creds)
    after_one = _usage(api)
    assert 0 < after_one < LIMIT // 2
    skopeo.copy(two.ref, f"docker://{host}/acme/app:two", creds=ADMIN.creds)
    after_two = _usage(api)
    assert LIMIT // 2 < after_two < LIMIT
    assert after_two - after_one < 3 * (64 * 1024 + 4096)  # the shared layer is counted once
    (warning,) = _logged(api, "quota_warning", 1)
    assert warning["metadata"]["threshold_percent"] == 50

    with pytest.raises(CommandError) as refused:
        skopeo.copy(three.ref, f"docker://{host}/acme/app:three", creds=ADMIN.creds)
    assert "Quota has been exceeded on namespace acme" in str(refused.value)
    assert "denied" in str(refused.value).lower()
    tags = _ok(api.get("/repository/acme/app/tag/"))["tags"]
    assert sorted(t["name"] for t in tags) == ["one", "two"]
    assert _usage(api) == after_two

    # Delete image two, let the time machine forget it, collect garbage: room for image three.
    skopeo.delete(f"docker://{host}/acme/app:two", creds=ADMIN.creds)
    _ok(api.put("/organization/acme", json={"tag_expiration_s": 0}))
    setup.server.cli("gc")
    assert _usage(api) == after_one
    skopeo.copy(three.ref, f"docker://{host}/acme/app:three", creds=ADMIN.creds)
    assert after_one < _usage(api) < LIMIT
    assert len(_logged(api, "quota_warning", 2)) == 2  # crossing the Warning limit again
