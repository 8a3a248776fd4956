"""A real S3-compatible server for tests: OpenStack Swift with its s3api middleware, from Debian.

Why Swift: it is a production object store whose s3api layer implements what our S3 driver
relies on the way AWS does — multipart uploads with the 5 MiB minimum part size enforced,
UploadPartCopy with byte ranges, ListMultipartUploads with real initiation times, and SigV4
signatures checked on every request, presigned URLs included (a tampered URL gets 403).

Four processes run on loopback ports (proxy, account, container, object servers) with a
one-replica ring and their data in a temp dir; `s3_server()` starts them, creates a bucket,
yields the endpoint and credentials, and stops them. Missing Debian packages skip the test
locally and fail it in CI (`CI=true`).
"""

from __future__ import annotations

import functools
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .env import missing_dependency
from .proc import run
from .servers import LOOPBACK, free_port, tail, wait_for_http

DEBIAN_PACKAGES = ("swift-proxy", "swift-account", "swift-container", "swift-object")
SYSTEM_PYTHON = "/usr/bin/python3"
SERVERS = ("account", "container", "object")
ACCESS_KEY = "quaymaster:tester"  # tempauth account "quaymaster", user "tester"
SECRET_KEY = "quaymaster-secret"
REGION = "us-east-1"

_RING_SCRIPT = """
import sys
from swift.common.ring import RingBuilder
swift_dir, ip = sys.argv[1], sys.argv[2]
for name, port in zip(("account", "container", "object"), sys.argv[3:6]):
    builder = RingBuilder(6, 1, 1)
    builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": ip, "port": int(port),
                     "device": "d1", "weight": 1.0})
    builder.rebalance()
    builder.get_ring().save(f"{swift_dir}/{name}.ring.gz")
"""

_BACKEND_CONF = """\
[DEFAULT]
bind_ip = {ip}
bind_port = {port}
workers = 0
user = {user}
devices = {devices}
mount_check = false
disable_fallocate = true
swift_dir = {swift_dir}
log_name = {name}

[pipeline:main]
pipeline = {name}-server

[app:{name}-server]
use = egg:swift#{name}
"""

_PROXY_CONF = """\
[DEFAULT]
bind_ip = {ip}
bind_port = {port}
workers = 0
user = {user}
swift_dir = {swift_dir}
log_name = proxy

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:s3api]
use = egg:swift#s3api
location = {region}
max_upload_part_num = 10000

[filter:tempauth]
use = egg:swift#tempauth
user_quaymaster_tester = {secret} .admin

# tempauth needs the cache middleware in the pipeline but S3 signatures never touch it:
# point it at a privileged port nothing listens on, so it fails fast and harmlessly.
[filter:cache]
use = egg:swift#memcache
memcache_servers = {ip}:1

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo
"""


@dataclass
class S3Server:
    """A running S3 endpoint with one bucket; `config()` builds an S3Storage location for it."""

    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str
    base_dir: Path
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def storage_params(self, storage_path: str, **extra: Any) -> dict[str, Any]:
        """Parameters of an `S3Storage` DISTRIBUTED_STORAGE_CONFIG entry for this server."""
        return {
            "s3_bucket": self.bucket,
            "storage_path": storage_path,
            "s3_access_key": self.access_key,
            "s3_secret_key": self.secret_key,
            "s3_region": self.region,
            "endpoint_url": self.endpoint_url,
            **extra,
        }

    @functools.cached_property
    def client(self):
        """A plain boto3 client, for tests that look at the bucket behind the driver's back."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"),
        )

    def keys(self, prefix: str) -> list[str]:
        """Every object key under prefix (paginated)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def _find_swift() -> dict[str, str]:
    binaries = {name: f"/usr/bin/swift-{name}-server" for name in (*SERVERS, "proxy")}
    missing = [path for path in binaries.values() if not os.access(path, os.X_OK)]
    if missing or not os.access(SYSTEM_PYTHON, os.X_OK):
        missing_dependency(
            f"S3 test server not installed ({', '.join(missing) or SYSTEM_PYTHON} missing); "
            f"install the Debian packages {' '.join(DEBIAN_PACKAGES)}"
        )
    return binaries


def _clean_env() -> dict[str, str]:
    """Debian's Swift runs on the system Python: keep our virtualenv out of its way."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"swift server exited with {process.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"swift server on port {port} did not listen in time:\n{tail(log)}")
        time.sleep(0.05)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def s3_server(bucket: str = "quaymaster-test", timeout: float = 60.0) -> Iterator[S3Server]:
    """Start Swift + s3api on free loopback ports with a fresh data dir; stop and remove it after."""
    binaries = _find_swift()
    try:
        import boto3  # noqa: F401
    except ImportError:
        missing_dependency("boto3 is not installed; run `make install-test`")
    base = Path(tempfile.mkdtemp(prefix="quaymaster-s3-"))
    swift_dir, devices, logs = base / "etc", base / "srv", base / "log"
    for d in (swift_dir, devices / "d1", logs):
        d.mkdir(parents=True)
    ports = {name: free_port() for name in (*SERVERS, "proxy")}
    common = {"ip": LOOPBACK, "user": getpass.getuser(), "swift_dir": swift_dir}
    (swift_dir / "swift.conf").write_text(
        "[swift-hash]\nswift_hash_path_suffix = quaymaster-tests\n"
        "[storage-policy:0]\nname = Policy-0\ndefault = yes\n"
    )
    env = _clean_env()
    for name in SERVERS:
        (swift_dir / f"{name}.conf").write_text(
            _BACKEND_CONF.format(name=name, port=ports[name], devices=devices, **common))
    (swift_dir / "proxy.conf").write_text(_PROXY_CONF.format(
        port=ports["proxy"], region=REGION, secret=SECRET_KEY, **common))

    server = S3Server(f"http://{LOOPBACK}:{ports['proxy']}", ACCESS_KEY, SECRET_KEY, bucket, REGION, base)

    def start(name: str) -> None:
        with (logs / f"{name}.log").open("ab") as fh:
            server._processes.append(subprocess.Popen(
                [binaries[name], str(swift_dir / f"{name}.conf")], stdout=fh, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, cwd=base))

    try:
        # The storage servers need no ring to start, so they boot while the rings are built.
        for name in SERVERS:
            start(name)
        run([SYSTEM_PYTHON, "-c", _RING_SCRIPT, swift_dir, LOOPBACK, *(str(ports[n]) for n in SERVERS)],
            env=env, timeout=timeout)
        start("proxy")
        deadline = time.monotonic() + timeout
        for name, process in zip((*SERVERS, "proxy"), server._processes):
            _wait_for_port(ports[name], process, logs / f"{name}.log", deadline)
        wait_for_http(f"{server.endpoint_url}/healthcheck", max(deadline - time.monotonic(), 1),
                      statuses=(200,), process=server._processes[-1], log_path=logs / "proxy.log")
        server.client.create_bucket(Bucket=bucket)
        yield server
    finally:
        _stop(server._processes)
        shutil.rmtree(base, ignore_errors=True)


_SHARED = pytest.StashKey[S3Server]()


def shared_s3_server(request: pytest.FixtureRequest) -> S3Server:
    """One server for the whole pytest session, whichever suite asks first; stopped at the end."""
    stash = request.config.stash
    if _SHARED not in stash:
        context = s3_server()
        stash[_SHARED] = context.__enter__()
        request.config.add_cleanup(lambda: context.__exit__(None, None, None))
    return stash[_SHARED]
