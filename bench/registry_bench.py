#!/usr/bin/env python3
"""Side-by-side benchmark: Quaymaster against Debian's docker-registry (distribution 2.8).

Both servers run on loopback, each in its own temporary directory, and are driven by the same
client.  Measured per server:

  * push MB/s of one big random layer (POST, one streamed PATCH, PUT ?digest=; and the
    monolithic POST + PUT-with-body variant), timed from the POST to the 201;
  * pull MB/s of that layer (GET /v2/<repo>/blobs/<digest>, streamed, sha256 checked, discarded);
  * manifest GET-by-tag requests/s with 8 concurrent keep-alive connections (wrk, or an asyncio
    httpx pool in separate processes when wrk is unavailable);
  * resident memory of the server process tree before and during the big push (and pull), plus
    server and client CPU use in every phase, to tell a slow server from a slow client.

Run `make bench` or `.venv/bin/python bench/registry_bench.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
QUAYMASTER_BIN = ROOT / ".venv" / "bin" / "quaymaster"
DOCKER_REGISTRY_BIN = Path("/usr/bin/docker-registry")

CHUNK = 1024 * 1024
MIB = 1024 * 1024
USER, PASSWORD, EMAIL = "bench", "benchpassword", "bench@example.com"
BIG_REPO, SMALL_REPO, TAG = "bench/big", "bench/small", "latest"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
STARTUP_TIMEOUT = 60.0
SAMPLE_INTERVAL = 0.05
CONNECTIONS, WRK_THREADS, WARMUP_SECONDS = 8, 2, 1.0
TRANSFER_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# --- process observation (/proc) -----------------------------------------------------------------

def tree_pids(root: int, limit: int = 1000) -> list[int]:
    """root and all its descendants, found through /proc/<pid>/task/<tid>/children."""
    pids, i = [root], 0
    while i < len(pids) and len(pids) < limit:
        pid = pids[i]
        i += 1
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    pids.extend(int(p) for p in fh.read().split() if int(p) not in pids)
            except OSError:
                pass
    return pids


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_rss(root: int) -> int:
    return sum(rss_bytes(p) for p in tree_pids(root))


def tree_cpu(root: int) -> float:
    return sum(cpu_seconds(p) for p in tree_pids(root))


def client_cpu() -> float:
    """CPU seconds of this process plus its finished children (curl, load generators)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class RssSampler(threading.Thread):
    """Samples the VmRSS of a process tree every SAMPLE_INTERVAL seconds until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = tree_rss(pid)
        self.samples = 1
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_INTERVAL):
            self.peak = max(self.peak, tree_rss(self.pid))
            self.samples += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self.peak = max(self.peak, tree_rss(self.pid))


@dataclass
class Observation:
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    wall: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def server_cpu_pct(self) -> float:
        return 100.0 * self.server_cpu / self.wall if self.wall else 0.0

    @property
    def client_cpu_pct(self) -> float:
        return 100.0 * self.client_cpu / self.wall if self.wall else 0.0


@contextlib.contextmanager
def observe(pid: int) -> Iterator[Observation]:
    obs = Observation(rss_before=tree_rss(pid))
    sampler = RssSampler(pid)
    sampler.start()
    s0, c0, t0 = tree_cpu(pid), client_cpu(), time.perf_counter()
    try:
        yield obs
    finally:
        obs.wall = time.perf_counter() - t0
        obs.server_cpu = tree_cpu(pid) - s0
        obs.client_cpu = client_cpu() - c0
        sampler.stop()
        obs.rss_peak = sampler.peak
        obs.rss_after = tree_rss(pid)


# --- servers -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    name = "?"

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"registry-bench-{self.name}-"))
        self.proc: subprocess.Popen | None = None
        self.log_path = self.tmp / "server.log"
        self.tokens: dict[str, str] = {}
        self.client: httpx.Client | None = None

    # subclasses: command(), ready_status, prepare(), after_start()
    ready_status = 200

    def prepare(self) -> None:
        pass

    def command(self) -> list[str]:
        raise NotImplementedError

    def after_start(self) -> None:
        pass

    def start(self) -> None:
        self.prepare()
        with open(self.log_path, "wb") as logfh:
            self.proc = subprocess.Popen(self.command(), cwd=self.tmp, stdin=subprocess.DEVNULL,
                                         stdout=logfh, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.client = httpx.Client(base_url=self.base, timeout=TRANSFER_TIMEOUT,
                                   follow_redirects=True, trust_env=False)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.client.get("/v2/", timeout=2).status_code == self.ready_status:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not answer /v2/ within {STARTUP_TIMEOUT:.0f}s:\n"
                                 f"{self.log_tail()}")
            time.sleep(0.1)
        self.after_start()
        log(f"{self.name} ready on {self.base} (pid {self.proc.pid}, dir {self.tmp})")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def token(self, repo: str) -> str | None:
        return self.tokens.get(repo)

    def headers(self, repo: str, **extra: str) -> dict[str, str]:
        out = dict(extra)
        tok = self.token(repo)
        if tok:
            out["Authorization"] = f"Bearer {tok}"
        return out

    def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            # The server runs in a session of its own that this script created: signal that group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=5)
        shutil.rmtree(self.tmp, ignore_errors=True)


class DockerRegistry(Server):
    name = "docker-registry"
    ready_status = 200

    def prepare(self) -> None:
        data = self.tmp / "data"
        data.mkdir()
        # Debian's packaged config minus auth, with the same in-memory blob descriptor cache.
        (self.tmp / "config.yml").write_text(
            "version: 0.1\n"
            "log:\n"
            "  level: error\n"
            "  accesslog:\n"
            "    disabled: true\n"
            "storage:\n"
            "  cache:\n"
            "    blobdescriptor: inmemory\n"
            "  filesystem:\n"
            f"    rootdirectory: {data}\n"
            "  delete:\n"
            "    enabled: true\n"
            "http:\n"
            f"  addr: 127.0.0.1:{self.port}\n"
        )

    def command(self) -> list[str]:
        return [str(DOCKER_REGISTRY_BIN), "serve", str(self.tmp / "config.yml")]


class Quaymaster(Server):
    name = "quaymaster"
    ready_status = 401

    def prepare(self) -> None:
        config_dir = self.tmp / "config"
        config_dir.mkdir()
        # JSON is YAML.  Absolute paths keep the database and blobs inside this temporary directory.
        config = {
            "SERVER_HOSTNAME": f"127.0.0.1:{self.port}",
            "PREFERRED_URL_SCHEME": "http",
            "DB_URI": f"sqlite:///{self.tmp / 'quaymaster.db'}",
            "DISTRIBUTED_STORAGE_CONFIG": {
                "default": ["LocalStorage", {"storage_path": str(self.tmp / "storage")}],
            },
            "DISTRIBUTED_STORAGE_PREFERENCE": ["default"],
        }
        (config_dir / "config.yaml").write_text(json.dumps(config, indent=2) + "\n")
        res = subprocess.run(
            [str(QUAYMASTER_BIN), "user", "create", USER, "--email", EMAIL, "--password-stdin",
             "--config-dir", str(config_dir)],
            input=PASSWORD + "\n", text=True, capture_output=True, cwd=self.tmp, timeout=120)
        if res.returncode != 0:
            raise BenchError(f"quaymaster user create failed ({res.returncode}):\n{res.stdout}{res.stderr}")

    def command(self) -> list[str]:
        return [str(QUAYMASTER_BIN), "registry", "--config-dir", str(self.tmp / "config"),
                "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
                "--log-level", "warning"]

    def after_start(self) -> None:
        assert self.client is not None
        for repo in (BIG_REPO, SMALL_REPO):
            r = self.client.get("/v2/auth", params={
                "service": f"127.0.0.1:{self.port}", "scope": f"repository:{repo}:pull,push",
            }, auth=(USER, PASSWORD))
            if r.status_code != 200:
                raise BenchError(f"token request for {repo} failed: {r.status_code} {r.text[:300]}")
            self.tokens[repo] = r.json()["token"]


# --- the test layer ------------------------------------------------------------------------------

class Layer:
    """A file of random bytes, written once.  refresh() rewrites its first 4 KiB so that every
    push uploads a digest neither server has seen (no "already stored" shortcut)."""

    HEAD = 4096

    def __init__(self, path: Path, size: int):
        self.path = path
        self.size = size
        with open(path, "wb") as fh:
            left = size
            while left > 0:
                n = min(CHUNK, left)
                fh.write(os.urandom(n))
                left -= n
        self.digest = ""
        self.refresh()

    def refresh(self) -> str:
        with open(self.path, "r+b") as fh:
            fh.write(os.urandom(min(self.HEAD, self.size)))
        h = hashlib.sha256()
        with open(self.path, "rb", buffering=0) as fh:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := fh.readinto(buf):
                h.update(view[:n])
        self.digest = "sha256:" + h.hexdigest()
        return self.digest

    def chunks(self) -> Iterator[bytes]:
        with open(self.path, "rb", buffering=0) as fh:
            while chunk := fh.read(CHUNK):
                yield chunk


# --- clients -------------------------------------------------------------------------------------

def with_digest(url: str, digest: str) -> str:
    """Add digest= to an upload URL that may already carry query parameters (_state)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.append(("digest", digest))
    return urlunsplit(parts._replace(query=urlencode(query)))


def absolute(location: str, request_url: str) -> str:
    """Location may be relative (Quaymaster) or absolute (docker-registry)."""
    return urljoin(request_url, location)


def start_upload(server: Server, repo: str) -> str:
    assert server.client is not None
    url = f"{server.base}/v2/{repo}/blobs/uploads/"
    r = server.client.post(url, headers=server.headers(repo, **{"Content-Length": "0"}))
    if r.status_code != 202:
        raise BenchError(f"{server.name}: POST upload -> {r.status_code} {r.text[:300]}")
    return absolute(r.headers["Location"], url)


def curl_send(server: Server, repo: str, method: str, url: str, path: Path) -> tuple[int, dict[str, str]]:
    cmd = ["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-D", "-", "-w", "\n%{http_code}",
           "-X", method, "-T", str(path), "-H", "Content-Type: application/octet-stream",
           "-H", "Expect:"]
    for k, v in server.headers(repo).items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(url)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise BenchError(f"curl {method} failed ({res.returncode}): {res.stderr.strip()}")
    head, _, code = res.stdout.rpartition("\n")
    headers: dict[str, str] = {}
    for line in head.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return int(code.strip()), headers


def httpx_send(server: Server, repo: str, method: str, url: str, layer: Layer) -> tuple[int, dict[str, str]]:
    assert server.client is not None
    headers = server.headers(repo, **{"Content-Type": "application/octet-stream",
                                      "Content-Length": str(layer.size)})
    r = server.client.request(method, url, content=layer.chunks(), headers=headers)
    return r.status_code, {k.lower(): v for k, v in r.headers.items()}


class _Connection:
    """Just enough HTTP/1.1 over a plain socket for the big transfers: one request per connection,
    the request body sent with sendfile(2), the response body read with recv_into into one buffer.
    It keeps the client's own CPU cost close to the unavoidable (the copy and the sha256)."""

    MAX_HEAD = 64 * 1024

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise BenchError(f"socket client: unsupported URL {url!r}")
        self.netloc = parts.netloc
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=600)
        self.rest = b""

    def __enter__(self) -> "_Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send_head(self, method: str, headers: dict[str, str]) -> None:
        lines = [f"{method} {self.target} HTTP/1.1", f"Host: {self.netloc}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def read_head(self) -> tuple[int, dict[str, str]]:
        data = b""
        while b"\r\n\r\n" not in data:
            more = self.sock.recv(65536)
            if not more or len(data) > self.MAX_HEAD:
                raise BenchError("socket client: connection closed before the response head")
            data += more
        head, _, self.rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise BenchError("socket client: chunked responses are not supported; use --client curl")
        return status, headers

    def small_body(self, headers: dict[str, str]) -> bytes:
        want = min(int(headers.get("content-length", "0") or 0), self.MAX_HEAD)
        data = self.rest
        while len(data) < want:
            more = self.sock.recv(want - len(data))
            if not more:
                break
            data += more
        return data[:want]


def socket_send(server: Server, repo: str, method: str, url: str, layer: Layer) -> tuple[int, dict[str, str]]:
    with _Connection(url) as conn:
        conn.send_head(method, server.headers(repo, **{"Content-Type": "application/octet-stream",
                                                       "Content-Length": str(layer.size)}))
        with open(layer.path, "rb") as fh, contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sock.sendfile(fh)  # an early error answer closes the socket: read it below
        status, headers = conn.read_head()
        conn.small_body(headers)
        return status, headers


def socket_get(server: Server, repo: str, url: str, h: "hashlib._Hash") -> int:
    """GET url (following up to 3 redirects), hashing the body into h; returns its length."""
    for _ in range(4):
        with _Connection(url) as conn:
            same_host = urlsplit(url).netloc == urlsplit(server.base).netloc
            conn.send_head("GET", server.headers(repo) if same_host else {})
            status, headers = conn.read_head()
            if status in (301, 302, 303, 307, 308) and "location" in headers:
                url = urljoin(url, headers["location"])
                continue
            if status != 200:
                body = conn.small_body(headers)
                raise BenchError(f"{server.name}: GET blob -> {status} {body[:300]!r}")
            length = int(headers["content-length"])
            h.update(conn.rest)
            count = len(conn.rest)
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while count < length:
                n = conn.sock.recv_into(buf, min(CHUNK, length - count))
                if not n:
                    break
                h.update(view[:n])
                count += n
            return count
    raise BenchError(f"{server.name}: too many redirects for {url}")


def push_layer(server: Server, repo: str, layer: Layer, client: str, mode: str) -> float:
    """Push the layer; returns the seconds from the POST to the 201."""
    assert server.client is not None
    senders: dict[str, Callable[[str, str], tuple[int, dict[str, str]]]] = {
        "curl": lambda m, u: curl_send(server, repo, m, u, layer.path),
        "httpx": lambda m, u: httpx_send(server, repo, m, u, layer),
        "socket": lambda m, u: socket_send(server, repo, m, u, layer),
    }
    send = senders[client]
    t0 = time.perf_counter()
    location = start_upload(server, repo)
    if mode == "patch":
        status, headers = send("PATCH", location)
        if status != 202:
            raise BenchError(f"{server.name}: PATCH -> {status}")
        location = absolute(headers["location"], location)
        r = server.client.put(with_digest(location, layer.digest),
                              headers=server.headers(repo, **{"Content-Length": "0"}))
        status = r.status_code
        detail = r.text[:300]
    else:  # monolithic: the whole body on the closing PUT
        status, _ = send("PUT", with_digest(location, layer.digest))
        detail = ""
    elapsed = time.perf_counter() - t0
    if status != 201:
        raise BenchError(f"{server.name}: closing PUT ({mode}) -> {status} {detail}")
    return elapsed


def _verify(server: Server, layer_size: int, digest: str, count: int, hexdigest: str) -> None:
    if count != layer_size or "sha256:" + hexdigest != digest:
        raise BenchError(f"{server.name}: pulled {count} bytes with sha256:{hexdigest}, "
                         f"expected {layer_size} bytes with {digest}")


def pull_layer(server: Server, repo: str, digest: str, size: int, client: str) -> float:
    """GET the blob, hash it while reading, discard it; returns seconds to the last byte."""
    assert server.client is not None
    url = f"{server.base}/v2/{repo}/blobs/{digest}"
    h = hashlib.sha256()
    count = 0
    if client == "socket":
        t0 = time.perf_counter()
        count = socket_get(server, repo, url, h)
        elapsed = time.perf_counter() - t0
    elif client == "curl":
        cmd = ["curl", "-sS", "--fail", "-L", "--noproxy", "*"]
        for k, v in server.headers(repo).items():
            cmd += ["-H", f"{k}: {v}"]
        cmd.append(url)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        try:
            assert proc.stdout is not None
            with contextlib.suppress(OSError):
                fcntl.fcntl(proc.stdout.fileno(), 1031, CHUNK)  # F_SETPIPE_SZ
            while n := proc.stdout.readinto(buf):
                h.update(view[:n])
                count += n
            rc = proc.wait(timeout=60)
            elapsed = time.perf_counter() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if rc != 0:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise BenchError(f"{server.name}: curl GET blob failed ({rc}): {err.strip()}")
    else:
        t0 = time.perf_counter()
        with server.client.stream("GET", url, headers=server.headers(repo)) as r:
            if r.status_code != 200:
                r.read()
                raise BenchError(f"{server.name}: GET blob -> {r.status_code} {r.text[:300]}")
            for chunk in r.iter_raw():
                h.update(chunk)
                count += len(chunk)
        elapsed = time.perf_counter() - t0
    _verify(server, size, digest, count, h.hexdigest())
    return elapsed


def pull_unverified(server: Server, repo: str, digest: str, size: int) -> float:
    """`curl -o /dev/null`: the blob GET with no hashing, to show what the server alone can do."""
    cmd = ["curl", "-sS", "--fail", "-L", "--noproxy", "*", "-o", "/dev/null", "-w", "%{size_download}"]
    for k, v in server.headers(repo).items():
        cmd += ["-H", f"{k}: {v}"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd + [f"{server.base}/v2/{repo}/blobs/{digest}"], capture_output=True,
                         text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0 or res.stdout.strip() != str(size):
        raise BenchError(f"{server.name}: curl GET blob failed ({res.returncode}): {res.stderr.strip()}")
    return elapsed


# --- the small image for manifest GETs -----------------------------------------------------------

def small_image() -> tuple[bytes, bytes, bytes]:
    """(config, layer, manifest): a real one-file tar.gz layer and a matching OCI config."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = b"hello from the registry benchmark\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    layer = gzip.compress(tar_bytes, mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]},
        "history": [{"created_by": "registry benchmark"}],
    }, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                   "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": "sha256:" + hashlib.sha256(layer).hexdigest(),
                    "size": len(layer)}],
    }, separators=(",", ":")).encode()
    return config, layer, manifest


def push_small_image(server: Server) -> str:
    assert server.client is not None
    config, layer, manifest = small_image()
    for blob in (config, layer):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        location = start_upload(server, SMALL_REPO)
        r = server.client.put(with_digest(location, digest), content=blob, headers=server.headers(
            SMALL_REPO, **{"Content-Type": "application/octet-stream"}))
        if r.status_code != 201:
            raise BenchError(f"{server.name}: small blob PUT -> {r.status_code} {r.text[:300]}")
    url = f"/v2/{SMALL_REPO}/manifests/{TAG}"
    r = server.client.put(url, content=manifest,
                          headers=server.headers(SMALL_REPO, **{"Content-Type": OCI_MANIFEST}))
    if r.status_code != 201:
        raise BenchError(f"{server.name}: manifest PUT -> {r.status_code} {r.text[:300]}")
    r = server.client.get(url, headers=server.headers(SMALL_REPO, Accept=OCI_MANIFEST))
    if r.status_code != 200 or r.content != manifest:
        raise BenchError(f"{server.name}: manifest GET after push -> {r.status_code}")
    return f"{server.base}{url}"


# --- manifest load generators --------------------------------------------------------------------

def ensure_wrk(allow_install: bool) -> str | None:
    path = shutil.which("wrk")
    if path or not allow_install:
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log("wrk is missing and this is not root: using the httpx load generator")
        return None
    log("installing wrk with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"]
    for attempt in range(2):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if res.returncode == 0:
            break
        if attempt == 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
    return shutil.which("wrk")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


@dataclass
class LoadResult:
    rps: float
    requests: int
    errors: int
    seconds: float
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")


def run_wrk(wrk: str, url: str, headers: dict[str, str], duration: float) -> LoadResult:
    cmd = [wrk, "-t", str(WRK_THREADS), "-c", str(CONNECTIONS), "-d", f"{max(1, round(duration))}s",
           "--timeout", "10s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(url)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    out = res.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if res.returncode != 0 or not m or not n:
        raise BenchError(f"wrk failed ({res.returncode}):\n{out}{res.stderr}")
    errors = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    return LoadResult(rps=float(m.group(1)), requests=int(n.group(1)), errors=errors,
                      seconds=_ms(n.group(2) + n.group(3)) / 1e3,
                      p50_ms=_ms(lat.get("50", "")), p99_ms=_ms(lat.get("99", "")))


async def _httpx_load(url: str, headers: dict[str, str], conns: int, duration: float) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
    ok = errors = 0
    latencies: list[float] = []
    async with httpx.AsyncClient(limits=limits, timeout=10.0, trust_env=False) as client:
        start = time.perf_counter()
        deadline = start + duration

        async def worker() -> None:
            nonlocal ok, errors
            while (t := time.perf_counter()) < deadline:
                try:
                    r = await client.get(url, headers=headers)
                    good = r.status_code == 200
                except httpx.HTTPError:
                    good = False
                latencies.append(time.perf_counter() - t)
                if good:
                    ok += 1
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(conns)))
        elapsed = time.perf_counter() - start
    return {"ok": ok, "errors": errors, "seconds": elapsed, "latencies": latencies}


def loadgen_worker(spec: str) -> None:
    """Entry point of a load generator process: prints one JSON line."""
    args = json.loads(spec)
    res = asyncio.run(_httpx_load(args["url"], args["headers"], args["conns"], args["duration"]))
    lat = sorted(res.pop("latencies"))
    res["p50_ms"] = lat[len(lat) // 2] * 1e3 if lat else float("nan")
    res["p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3 if lat else float("nan")
    print(json.dumps(res), flush=True)


def run_httpx_load(url: str, headers: dict[str, str], duration: float) -> LoadResult:
    procs = []
    per_proc = CONNECTIONS // WRK_THREADS
    for _ in range(WRK_THREADS):
        spec = json.dumps({"url": url, "headers": headers, "conns": per_proc, "duration": duration})
        procs.append(subprocess.Popen([sys.executable, __file__, "--loadgen-worker", spec],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=duration + 60)
            if p.returncode != 0:
                raise BenchError(f"load generator failed ({p.returncode}): {err.strip()[-500:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    ok = sum(r["ok"] for r in results)
    seconds = max(r["seconds"] for r in results)
    return LoadResult(rps=ok / seconds, requests=ok, errors=sum(r["errors"] for r in results),
                      seconds=seconds, p50_ms=max(r["p50_ms"] for r in results),
                      p99_ms=max(r["p99_ms"] for r in results))


# --- orchestration -------------------------------------------------------------------------------

@dataclass
class ServerResults:
    push_patch: list[float] = field(default_factory=list)       # MB/s per run
    push_put: list[float] = field(default_factory=list)
    pull: list[float] = field(default_factory=list)
    pull_unverified: list[float] = field(default_factory=list)
    manifest_rps: list[float] = field(default_factory=list)
    manifest_p99_ms: list[float] = field(default_factory=list)
    manifest_errors: int = 0
    push_obs: list[Observation] = field(default_factory=list)
    pull_obs: list[Observation] = field(default_factory=list)
    manifest_obs: list[Observation] = field(default_factory=list)


def mbps(size: int, seconds: float) -> float:
    return size / MIB / seconds


def calibrate(servers: list[Server], layer: Layer, clients: list[str]) -> tuple[str, str, dict]:
    """One push and pull with every client against every server; pick the faster client for each
    operation (by the sum over both servers) and use it for both servers."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for client in clients:
        table[client] = {}
        for server in servers:
            layer.refresh()
            os.sync()
            push = mbps(layer.size, push_layer(server, BIG_REPO, layer, client, "patch"))
            os.sync()
            pull = mbps(layer.size, pull_layer(server, BIG_REPO, layer.digest, layer.size, client))
            table[client][server.name] = {"push_mbps": round(push, 1), "pull_mbps": round(pull, 1)}
            log(f"calibration {client:5s} {server.name:15s} push {push:7.1f} MB/s  pull {pull:7.1f} MB/s")
    best_push = max(clients, key=lambda c: sum(v["push_mbps"] for v in table[c].values()))
    best_pull = max(clients, key=lambda c: sum(v["pull_mbps"] for v in table[c].values()))
    return best_push, best_pull, table


def bench_server(server: Server, layer: Layer, res: ServerResults, push_client: str,
                 pull_client: str, monolithic: bool, manifest_url: str, loadgen: str,
                 wrk: str | None, duration: float) -> None:
    layer.refresh()
    os.sync()
    with observe(server.pid) as obs:
        seconds = push_layer(server, BIG_REPO, layer, push_client, "patch")
    res.push_patch.append(mbps(layer.size, seconds))
    res.push_obs.append(obs)
    pushed = layer.digest
    log(f"{server.name:15s} push (PATCH)  {res.push_patch[-1]:8.1f} MB/s  "
        f"RSS {obs.rss_before / MIB:.0f} -> peak {obs.rss_peak / MIB:.0f} MiB, "
        f"server CPU {obs.server_cpu_pct:.0f}%, client CPU {obs.client_cpu_pct:.0f}%")

    os.sync()
    with observe(server.pid) as obs:
        seconds = pull_layer(server, BIG_REPO, pushed, layer.size, pull_client)
    res.pull.append(mbps(layer.size, seconds))
    res.pull_obs.append(obs)
    log(f"{server.name:15s} pull          {res.pull[-1]:8.1f} MB/s  "
        f"server CPU {obs.server_cpu_pct:.0f}%, client CPU {obs.client_cpu_pct:.0f}%")

    if shutil.which("curl"):
        res.pull_unverified.append(mbps(layer.size, pull_unverified(server, BIG_REPO, pushed, layer.size)))
        log(f"{server.name:15s} pull, no hash {res.pull_unverified[-1]:8.1f} MB/s (curl -o /dev/null)")

    if monolithic:
        layer.refresh()
        os.sync()
        seconds = push_layer(server, BIG_REPO, layer, push_client, "put")
        res.push_put.append(mbps(layer.size, seconds))
        log(f"{server.name:15s} push (PUT)    {res.push_put[-1]:8.1f} MB/s")

    headers = server.headers(SMALL_REPO, Accept=OCI_MANIFEST)
    run = (lambda d: run_wrk(wrk, manifest_url, headers, d)) if loadgen == "wrk" and wrk else \
        (lambda d: run_httpx_load(manifest_url, headers, d))
    run(WARMUP_SECONDS)
    with observe(server.pid) as obs:
        load = run(duration)
    res.manifest_rps.append(load.rps)
    res.manifest_p99_ms.append(load.p99_ms)
    res.manifest_errors += load.errors
    res.manifest_obs.append(obs)
    log(f"{server.name:15s} manifest GET  {load.rps:8.0f} req/s  p99 {load.p99_ms:.2f} ms  "
        f"errors {load.errors}  server CPU {obs.server_cpu_pct:.0f}%, client CPU {obs.client_cpu_pct:.0f}%")


# --- report --------------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(v: float, digits: int = 1) -> str:
    return "n/a" if v != v else f"{v:,.{digits}f}"


def build_rows(qm: ServerResults, dr: ServerResults, size_mb: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(metric: str, q: float, d: float, goal: str = "", check: Callable[[float], bool] | None = None,
            digits: int = 1, ratio: bool = True) -> None:
        r = q / d if ratio and d and d == d and q == q else float("nan")
        status = "" if check is None or r != r else ("ok" if check(r) else "MISS")
        rows.append({"metric": metric, "quaymaster": q, "docker-registry": d, "ratio": r,
                     "goal": goal, "status": status, "digits": digits})

    add(f"push {size_mb} MB: POST+PATCH+PUT (MB/s)", median(qm.push_patch), median(dr.push_patch),
        ">= 0.9x", lambda r: r >= 0.9)
    if qm.push_put and dr.push_put:
        add(f"push {size_mb} MB: POST+PUT body (MB/s)", median(qm.push_put), median(dr.push_put),
            ">= 0.9x", lambda r: r >= 0.9)
    add(f"pull {size_mb} MB, sha256 checked (MB/s)", median(qm.pull), median(dr.pull),
        ">= 1.0x", lambda r: r >= 1.0)
    if qm.pull_unverified and dr.pull_unverified:
        add(f"pull {size_mb} MB, no hash, curl (MB/s)", median(qm.pull_unverified),
            median(dr.pull_unverified), "info")
    add(f"manifest GET by tag, {CONNECTIONS} conns (req/s)", median(qm.manifest_rps),
        median(dr.manifest_rps), ">= 1.0x", lambda r: r >= 1.0, digits=0)
    add("manifest GET p99 latency (ms)", median(qm.manifest_p99_ms), median(dr.manifest_p99_ms),
        "info", digits=2)

    def rss(results: ServerResults) -> tuple[float, float, float]:
        before = min(o.rss_before for o in results.push_obs) / MIB
        peak = max(o.rss_peak for o in results.push_obs) / MIB
        growth = max(o.rss_peak - o.rss_before for o in results.push_obs) / MIB
        return before, peak, growth

    qb, qp, qg = rss(qm)
    db, dp, dg = rss(dr)
    flat_limit = max(32.0, size_mb * 0.10)
    add("RSS before push (MiB)", qb, db, "info", digits=0)
    add("peak RSS during push (MiB)", qp, dp, "info", digits=0)
    rows.append({"metric": "RSS growth during push (MiB)", "quaymaster": qg, "docker-registry": dg,
                 "ratio": float("nan"), "goal": f"flat (< {flat_limit:.0f})",
                 "status": "ok" if qg < flat_limit else "MISS", "digits": 0})
    qpull = max(o.rss_peak - o.rss_before for o in qm.pull_obs) / MIB
    dpull = max(o.rss_peak - o.rss_before for o in dr.pull_obs) / MIB
    rows.append({"metric": "RSS growth during pull (MiB)", "quaymaster": qpull, "docker-registry": dpull,
                 "ratio": float("nan"), "goal": f"flat (< {flat_limit:.0f})",
                 "status": "ok" if qpull < flat_limit else "MISS", "digits": 0})

    for label, attr in (("push", "push_obs"), ("pull", "pull_obs"), ("manifest GETs", "manifest_obs")):
        q = median([o.server_cpu_pct for o in getattr(qm, attr)])
        d = median([o.server_cpu_pct for o in getattr(dr, attr)])
        add(f"server CPU during {label} (% of 1 core)", q, d, "info", digits=0, ratio=False)
    for label, attr in (("push", "push_obs"), ("pull", "pull_obs"), ("manifest GETs", "manifest_obs")):
        q = median([o.client_cpu_pct for o in getattr(qm, attr)])
        d = median([o.client_cpu_pct for o in getattr(dr, attr)])
        add(f"client CPU during {label} (% of 1 core)", q, d, "info", digits=0, ratio=False)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ["metric", "quaymaster", "docker-registry", "ratio", "goal"]
    body = []
    for r in rows:
        ratio = "" if r["ratio"] != r["ratio"] else f"{r['ratio']:.2f}x"
        goal = f"{r['goal']} {r['status']}".strip()
        body.append([r["metric"], fmt(r["quaymaster"], r["digits"]), fmt(r["docker-registry"], r["digits"]),
                     ratio, goal])
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    align = ["<", ">", ">", ">", "<"]

    def line(cells: list[str]) -> str:
        return " | ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths))

    print(line(head))
    print("-+-".join("-" * w for w in widths))
    for cells in body:
        print(line(cells))


def version_of(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (res.stdout or res.stderr).strip().splitlines()
    return text[0] if text else "?"


def no_nan(value: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [no_nan(v) for v in value]
    return value


def main() -> int:
    ap = argparse.ArgumentParser(description="Benchmark Quaymaster against Debian's docker-registry.")
    ap.add_argument("--size-mb", type=int, default=200, help="big layer size in MiB (default 200)")
    ap.add_argument("--duration", type=float, default=10.0,
                    help="seconds of manifest GET load per run, after a 1 s warm-up (default 10)")
    ap.add_argument("--runs", type=int, default=3, help="runs per server; throughput is the median (default 3)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    ap.add_argument("--client", choices=["auto", "httpx", "curl", "socket"], default="auto",
                    help="transfer client for the big push/pull; auto tries each once against both "
                         "servers and keeps the fastest (per operation) for both")
    ap.add_argument("--loadgen", choices=["auto", "wrk", "httpx"], default="auto",
                    help="manifest load generator; auto prefers wrk (installed with apt-get when root)")
    ap.add_argument("--skip-monolithic", action="store_true", help="skip the POST + PUT-with-body push")
    ap.add_argument("--loadgen-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.loadgen_worker:
        loadgen_worker(args.loadgen_worker)
        return 0
    if args.size_mb < 1 or args.runs < 1 or args.duration < 1:
        ap.error("--size-mb, --runs and --duration must be at least 1")
    for binary in (QUAYMASTER_BIN, DOCKER_REGISTRY_BIN):
        if not binary.exists():
            ap.error(f"{binary} not found")

    # Ctrl-C and SIGTERM unwind through the finally block below, which stops the servers.  SIGINT
    # is set explicitly: a shell without job control starts background commands with it ignored.
    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)

    wrk = ensure_wrk(args.loadgen in ("auto", "wrk")) if args.loadgen != "httpx" else None
    if args.loadgen == "wrk" and not wrk:
        ap.error("wrk is not available")
    loadgen = "wrk" if wrk else "httpx"
    if args.client == "auto":
        clients = ["httpx", "curl", "socket"] if shutil.which("curl") else ["httpx", "socket"]
    else:
        clients = [args.client]

    workdir = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    servers: list[Server] = []
    try:
        log(f"writing a {args.size_mb} MiB random layer to {workdir}")
        layer = Layer(workdir / "layer.bin", args.size_mb * MIB)
        for cls in (Quaymaster, DockerRegistry):
            server = cls()
            servers.append(server)
            server.start()
        qm, dr = servers

        if len(clients) > 1:
            push_client, pull_client, calibration = calibrate(servers, layer, clients)
        else:
            push_client = pull_client = clients[0]
            calibration = {}
        log(f"push client: {push_client}, pull client: {pull_client}, manifest load: {loadgen}")

        urls = {s.name: push_small_image(s) for s in servers}
        results = {s.name: ServerResults() for s in servers}
        for run in range(args.runs):
            log(f"run {run + 1}/{args.runs}")
            order = servers if run % 2 == 0 else servers[::-1]  # alternate who goes first
            for server in order:
                bench_server(server, layer, results[server.name], push_client, pull_client,
                             not args.skip_monolithic, urls[server.name], loadgen, wrk, args.duration)

        rows = build_rows(results[qm.name], results[dr.name], args.size_mb)
        env = {
            "cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "quaymaster": version_of([str(QUAYMASTER_BIN), "--version"]),
            "docker-registry": version_of([str(DOCKER_REGISTRY_BIN), "--version"]),
            "httpx": httpx.__version__, "curl": version_of(["curl", "--version"]),
            "wrk": version_of([wrk, "-v"]) if wrk else None,
        }
        print()
        print(f"Quaymaster vs docker-registry on 127.0.0.1: layer {args.size_mb} MiB, "
              f"{args.runs} run(s) (median), manifest load {args.duration:g}s x {CONNECTIONS} conns "
              f"via {loadgen}; push client {push_client}, pull client {pull_client}; "
              f"{env['cpus']} CPUs")
        print()
        print_table(rows)
        errors = {name: r.manifest_errors for name, r in results.items() if r.manifest_errors}
        if errors:
            print(f"\nWARNING: non-200 manifest responses or socket errors: {errors}")
        if args.json:
            per_run = {name: {
                "push_patch_mbps": r.push_patch, "push_put_mbps": r.push_put, "pull_mbps": r.pull,
                "manifest_rps": r.manifest_rps, "manifest_p99_ms": r.manifest_p99_ms,
                "manifest_errors": r.manifest_errors,
                "push": [o.__dict__ for o in r.push_obs], "pull": [o.__dict__ for o in r.pull_obs],
                "manifest": [o.__dict__ for o in r.manifest_obs],
            } for name, r in results.items()}
            doc = {
                "options": {"size_mb": args.size_mb, "duration": args.duration, "runs": args.runs,
                            "connections": CONNECTIONS, "loadgen": loadgen,
                            "push_client": push_client, "pull_client": pull_client},
                "environment": env, "calibration": calibration,
                "summary": [{k: v for k, v in row.items() if k != "digits"} for row in rows],
                "runs": per_run,
            }
            Path(args.json).write_text(json.dumps(no_nan(doc), indent=2, default=str) + "\n")
            log(f"wrote {args.json}")
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except BenchError as err:
        log(f"error: {err}")
        for server in servers:
            tail = server.log_tail()
            if tail:
                log(f"--- {server.name} log ---\n{tail}")
        return 1
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
