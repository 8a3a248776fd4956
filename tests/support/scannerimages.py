"""Deterministic layers for the scanner tests, built with tarfile/gzip only, and a blob server."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "scanner"

URLLIB3_METADATA = b"""Metadata-Version: 2.1
Name: urllib3
Version: 1.24.1
Summary: HTTP library with thread-safe connection pooling, file post, and more.
Home-page: https://urllib3.readthedocs.io/
Author: Andrey Petrov
Author-email: andrey.petrov@shazow.net
License: MIT
Keywords: urllib httplib threadsafe filepost http https ssl pooling
Platform: UNKNOWN
Classifier: Programming Language :: Python :: 3
Requires-Python: >=2.6, !=3.0.*, !=3.1.*, !=3.2.*, !=3.3.*, <4
Provides-Extra: secure

urllib3
=======

urllib3 is a powerful, sanity-friendly HTTP client for Python.
"""

PYYAML_METADATA = b"""Metadata-Version: 2.1
Name: PyYAML
Version: 5.3
Summary: YAML parser and emitter for Python
Home-page: https://github.com/yaml/pyyaml
Author: Kirill Simonov
Author-email: xi@resolvent.net
License: MIT
Platform: Any
Classifier: Programming Language :: Python :: 3

YAML is a data serialization format designed for human readability.
"""

# Synthetic apk database in the real `lib/apk/db/installed` format.
APK_INSTALLED = b"""C:Q1synthetic0000000000000000000000=
P:musl
V:1.1.24-r2
A:x86_64
S:377419
I:614400
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Timo Teras <timo.teras@iki.fi>
t:1584000000
c:0000000000000000000000000000000000000000

C:Q1synthetic0000000000000000000000=
P:libssl1.1
V:1.1.1d-r3
A:x86_64
T:SSL shared libraries
L:OpenSSL
o:openssl

C:Q1synthetic0000000000000000000000=
P:busybox
V:1.31.1-r9
A:x86_64
T:Size optimized toolbox of many common UNIX utilities
o:busybox

"""

SITE = "usr/local/lib/python3.11/site-packages"


@dataclass
class Layer:
    blob: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.blob).hexdigest()


def build_layer(files: dict[str, bytes | None | tuple[str, str]], *, compression: str = "gzip") -> Layer:
    """files: path -> bytes (regular file), None (directory), ("symlink", target)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            content = files[path]
            info = tarfile.TarInfo(path)
            info.mtime = 0
            info.uid = info.gid = 0
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    data = raw.getvalue()
    if compression == "gzip":
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
            gz.write(data)
        data = out.getvalue()
    elif compression == "zstd":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    return Layer(data)


def debian_layer() -> Layer:
    return build_layer({
        "etc/": None,
        "etc/os-release": ("symlink", "../usr/lib/os-release"),
        "usr/lib/os-release": (DATA / "os-release" / "debian-12").read_bytes(),
        "var/lib/dpkg/": None,
        "var/lib/dpkg/info/": None,
        "var/lib/dpkg/status": (DATA / "dpkg" / "bookworm.status").read_bytes(),
    })


def python_layer() -> Layer:
    return build_layer({
        f"{SITE}/urllib3-1.24.1.dist-info/METADATA": URLLIB3_METADATA,
        f"{SITE}/urllib3-1.24.1.dist-info/INSTALLER": b"pip\n",
        f"{SITE}/pyyaml-5.3.dist-info/METADATA": PYYAML_METADATA,
        f"{SITE}/pyyaml-5.3.dist-info/INSTALLER": b"pip\n",
        f"{SITE}/urllib3/__init__.py": b"__version__ = '1.24.1'\n",
    })


def alpine_layer() -> Layer:
    return build_layer({
        "etc/os-release": (DATA / "os-release" / "alpine-3.11").read_bytes(),
        "lib/apk/db/installed": APK_INSTALLED,
    })


def status_without(package: str) -> bytes:
    """bookworm.status minus one stanza, as dpkg --purge would leave it."""
    stanzas = (DATA / "dpkg" / "bookworm.status").read_text().strip().split("\n\n")
    kept = [s for s in stanzas if f"Package: {package}\n" not in s + "\n"]
    return ("\n\n".join(kept) + "\n").encode()


@dataclass
class BlobServer:
    url: str
    blobs: dict[str, bytes]
    requests: list[dict]


@contextmanager
def blob_server(blobs: dict[str, bytes], *, token: str | None = None,
                corrupt: bool = False) -> Iterator[BlobServer]:
    """Serves /blobs/<digest> on loopback; 401 without `Authorization: Bearer <token>` when set;
    with corrupt=True it serves different bytes than the digest names."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            seen.append({"path": self.path, "headers": dict(self.headers)})
            if self.path.startswith(("/redirect/", "/redirect-to/")):
                self.send_response(307)
                target = self.path.removeprefix("/redirect-to/") if self.path.startswith("/redirect-to/") \
                    else "/blobs/" + self.path.removeprefix("/redirect/")
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if token and self.headers.get("Authorization") != f"Bearer {token}":
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            blob = blobs.get(self.path.removeprefix("/blobs/"))
            if blob is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if corrupt:
                blob = blob[:-1] + bytes([blob[-1] ^ 0xFF])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield BlobServer(f"http://127.0.0.1:{server.server_address[1]}", blobs, seen)
    finally:
        server.shutdown()
        server.server_close()
