"""Running skopeo for one mirror sync: private auth files, extra CAs, proxies, timeouts, and
error text scrubbed of credentials.

Credentials never appear on a command line (other users of the machine can read those): they go
into auth files created with mode 0600 inside a private temporary directory (0700) that is
removed when the sync ends, whatever happens. Arguments are lists; no shell is involved.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SKOPEO = "skopeo"
MAX_ERROR_CHARS = 2000
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy",
               "all_proxy")
_LOGRUS_RE = re.compile(r'level=(?:fatal|error)\s+msg="((?:[^"\\]|\\.)*)"')
_DROPPED_VARS = (*_PROXY_VARS, "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG")


class SkopeoError(Exception):
    """A skopeo run failed; the message is safe to log and show (credentials scrubbed)."""


class SkopeoMissing(SkopeoError):
    pass


def find_skopeo() -> str:
    found = shutil.which(SKOPEO)
    if found is None:
        raise SkopeoMissing("skopeo is not installed on this machine (not found on PATH); "
                            "install the skopeo package where the mirror worker runs")
    return found


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret, and the base64 forms an auth header or file would hold, with ***."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
        encoded = base64.b64encode(secret.encode()).decode()
        text = text.replace(encoded, "***")
    return text


def tidy_error(stderr: str) -> str:
    """skopeo logs through logrus (`time=... level=fatal msg="..."`): keep the messages only."""
    found = [m.group(1).replace('\\"', '"') for m in _LOGRUS_RE.finditer(stderr)]
    return "; ".join(found) if found else stderr.strip()


def _auth_entry(username: str, password: str) -> dict:
    return {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@dataclass
class Skopeo:
    """skopeo in a private work directory; `secrets` are scrubbed from every error message."""

    binary: str
    workdir: Path
    timeout_s: int
    env: dict[str, str]
    secrets: list[str] = field(default_factory=list, repr=False)
    insecure_policy: bool = False
    cert_dir: Path | None = None

    def authfile(self, name: str, registry: str, username: str | None, password: str | None) -> Path:
        """An auth file for one registry; an empty one (anonymous) when there are no credentials."""
        auths = {registry: _auth_entry(username or "", password or "")} if username or password else {}
        path = self.workdir / f"{name}-auth.json"
        _write_private(path, json.dumps({"auths": auths}).encode())
        if password:
            self.secrets += [password, f"{username or ''}:{password}"]
        return path

    def _global_args(self) -> list[str]:
        args = ["--tmpdir", str(self.workdir / "tmp"), "--command-timeout", f"{self.timeout_s}s"]
        if self.insecure_policy:
            args.append("--insecure-policy")
        return args

    async def run(self, *args: str) -> str:
        """Run `skopeo ARGS` with the timeout; stdout, or SkopeoError with scrubbed stderr."""
        process = await asyncio.create_subprocess_exec(
            self.binary, *self._global_args(), *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env,
            start_new_session=True)  # its own group, so a timeout kills whatever it started
        try:
            out, err = await asyncio.wait_for(process.communicate(), self.timeout_s + 10)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.shield(process.wait())
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise SkopeoError(f"skopeo {args[0]} did not finish within {self.timeout_s}s") from None
        if process.returncode != 0:
            message = scrub(tidy_error(err.decode("utf-8", "replace")), self.secrets)
            message = " ".join(message.split())  # one line for logs and the UI
            if len(message) > MAX_ERROR_CHARS:
                message = "…" + message[-MAX_ERROR_CHARS:]
            raise SkopeoError(message or f"skopeo {args[0]} exited with status {process.returncode}")
        return out.decode("utf-8", "replace")

    def _cert_args(self, flag: str) -> list[str]:
        return [flag, str(self.cert_dir)] if self.cert_dir is not None else []

    async def list_tags(self, ref: str, authfile: Path, verify_tls: bool) -> list[str]:
        out = await self.run("list-tags", "--authfile", str(authfile), f"--tls-verify={str(verify_tls).lower()}",
                             *self._cert_args("--cert-dir"), f"docker://{ref}")
        try:
            tags = json.loads(out).get("Tags") or []
        except (ValueError, AttributeError):
            raise SkopeoError("skopeo list-tags printed something that is not its JSON answer") from None
        return [t for t in tags if isinstance(t, str)]

    async def inspect_raw(self, ref: str, authfile: Path, verify_tls: bool) -> bytes:
        out = await self.run("inspect", "--raw", "--authfile", str(authfile),
                             f"--tls-verify={str(verify_tls).lower()}", *self._cert_args("--cert-dir"),
                             f"docker://{ref}")
        return out.encode()

    async def copy(self, src: str, dest: str, *, src_authfile: Path, dest_authfile: Path, src_verify: bool,
                   dest_verify: bool, all_images: bool) -> None:
        args = ["copy", "--remove-signatures", "--src-authfile", str(src_authfile), "--dest-authfile",
                str(dest_authfile), f"--src-tls-verify={str(src_verify).lower()}",
                f"--dest-tls-verify={str(dest_verify).lower()}",
                *self._cert_args("--src-cert-dir"), *self._cert_args("--dest-cert-dir")]
        if all_images:
            args.append("--all")
        await self.run(*args, f"docker://{src}", f"docker://{dest}")


def subprocess_env(proxy: dict[str, str], workdir: Path, extra_no_proxy: Iterable[str] = ()) -> dict[str, str]:
    """This process's environment without its proxies and container auth settings, plus the
    mirror's own proxies. The destination (this registry) is never reached through them."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_VARS}
    env.update({"HOME": str(workdir / "home"), "TMPDIR": str(workdir / "tmp")})
    if proxy.get("http_proxy"):
        env["HTTP_PROXY"] = env["http_proxy"] = proxy["http_proxy"]
    if proxy.get("https_proxy"):
        env["HTTPS_PROXY"] = env["https_proxy"] = proxy["https_proxy"]
    no_proxy = [p.strip() for p in (proxy.get("no_proxy") or "").split(",") if p.strip()]
    no_proxy += [h for h in extra_no_proxy if h]
    if no_proxy and (proxy.get("http_proxy") or proxy.get("https_proxy")):
        env["NO_PROXY"] = env["no_proxy"] = ",".join(dict.fromkeys(no_proxy))
    return env


@contextlib.contextmanager
def workspace(extra_ca_certs: Iterable[bytes] = ()) -> Iterator[tuple[Path, Path | None]]:
    """A private temporary directory (mode 0700) with tmp/ and home/, and certs/*.crt holding the
    extra CA certificates if any; removed afterwards. Yields (directory, cert dir or None)."""
    workdir = Path(tempfile.mkdtemp(prefix="quaymaster-mirror-"))
    try:
        os.chmod(workdir, 0o700)
        for sub in ("tmp", "home"):
            (workdir / sub).mkdir(mode=0o700)
        cert_dir = None
        certs = [c for c in extra_ca_certs if c]
        if certs:
            cert_dir = workdir / "certs"
            cert_dir.mkdir(mode=0o700)
            for number, pem in enumerate(certs):
                (cert_dir / f"extra-{number}.crt").write_bytes(pem)
        yield workdir, cert_dir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
