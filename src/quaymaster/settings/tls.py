"""Trust for outbound TLS: the system CAs plus the config dir's extra_ca_certs/, in one bundle.

Python's ssl module, httpx, requests and boto3 each read a different environment variable for a
CA file and each *replaces* the system CAs with it. So at start we write one combined file
(system bundle + any bundles those variables already named + extra_ca_certs/*) and point all
three variables at it, for this process and the workers it starts.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import ssl
import tempfile
from collections.abc import Iterable, MutableMapping
from pathlib import Path

from cryptography import x509

from quaymaster.settings.bundle import EXTRA_CA_DIR

log = logging.getLogger(__name__)

CA_ENV_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE")
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # SUSE
    "/etc/ssl/cert.pem",
)


def system_ca_bundle() -> Path | None:
    """The distribution's CA file, else OpenSSL's compiled-in one, else certifi's."""
    candidates = [*_SYSTEM_BUNDLES, ssl.get_default_verify_paths().openssl_cafile]
    try:
        import certifi

        candidates.append(certifi.where())
    except ImportError:  # pragma: no cover - httpx depends on certifi
        pass
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def read_extra_ca_certs(config_dir: Path | str) -> list[bytes]:
    """PEM certificates from config_dir/extra_ca_certs/ (files that hold none are skipped)."""
    folder = Path(config_dir) / EXTRA_CA_DIR
    if not folder.is_dir():
        return []
    certs = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and not entry.name.startswith("."):
            data = entry.read_bytes()
            if _has_certificate(data):
                certs.append(data)
            else:
                log.warning("%s holds no PEM certificate; ignored", entry)
    return certs


def build_ca_bundle(extra: Iterable[bytes], dest: Path, environ: MutableMapping[str, str] = os.environ) -> Path:
    """Write system CAs + bundles named by CA_ENV_VARS + extra certs to dest."""
    sources: list[Path] = []
    system = system_ca_bundle()
    if system:
        sources.append(system)
    for var in CA_ENV_VARS:
        value = environ.get(var)
        if value and Path(value).is_file() and all(
                Path(value).resolve() != known.resolve() for known in [dest, *sources]):
            sources.append(Path(value))
    parts = [s.read_bytes() for s in sources] + list(extra)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(b"\n".join(p.rstrip(b"\n") for p in parts) + b"\n")
    tmp.chmod(0o644)
    os.replace(tmp, dest)
    return dest


def install_ca_bundle(config_dir: Path | str, environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """When extra_ca_certs/ holds certificates, build the combined bundle and point the env at it."""
    extra = read_extra_ca_certs(config_dir)
    if not extra:
        return None
    folder = Path(tempfile.mkdtemp(prefix="quaymaster-ca-"))
    atexit.register(shutil.rmtree, folder, True)
    path = build_ca_bundle(extra, folder / "ca-bundle.pem", environ)
    for var in CA_ENV_VARS:
        environ[var] = str(path)
    log.info("trusting %d extra CA certificate file(s) from %s for outbound TLS", len(extra), config_dir)
    return path


def client_ssl_context(extra: Iterable[bytes] = ()) -> ssl.SSLContext:
    """A verifying client context: system CAs, bundles from the environment, and `extra` PEMs."""
    system = system_ca_bundle()
    ctx = ssl.create_default_context(cafile=str(system) if system else None)
    for var in CA_ENV_VARS:
        value = os.environ.get(var)
        if value and Path(value).is_file():
            ctx.load_verify_locations(cafile=value)
    for pem in extra:
        if _has_certificate(pem):
            ctx.load_verify_locations(cadata=pem.decode("ascii", "replace"))
    return ctx


def _has_certificate(data: bytes) -> bool:
    try:
        return bool(x509.load_pem_x509_certificates(data))
    except ValueError:
        return False
