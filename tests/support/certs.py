"""Throwaway certificate authorities and server certificates, made with `cryptography` (or, as an
administrator would, with the openssl command line)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Issued:
    cert_pem: bytes
    key_pem: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class TestCA:
    """A CA whose certificate tests install as trusted, and which issues server certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str = "Quaymaster Test CA"):
        self.key = _key()
        now = datetime.now(UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, *names: str, not_before: datetime | None = None, not_after: datetime | None = None,
              san: bool = True) -> Issued:
        """A server certificate for DNS names and IP addresses (the first is also the common name)."""
        key = _key()
        now = datetime.now(UTC)
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(minutes=5))
            .not_valid_after(not_after or now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass
class OpenSSLFiles:
    """What an administrator has after following the TLS chapter of Quay's deployment guide."""

    root_ca_pem: Path  # the CA clients install (certs.d/<host>/ca.crt)
    root_ca_key: Path
    ssl_cert: Path  # uploaded to the config editor as ssl.cert
    ssl_key: Path  # uploaded as ssl.key


def openssl_ca_and_server_cert(directory: Path, *names: str, openssl: str = "openssl") -> OpenSSLFiles:
    """A root CA and a server certificate for `names` made with the openssl command line, the way
    an administrator does by hand: genrsa + req -x509 for the CA, then a server key and CSR signed
    by the CA with a subjectAltName listing every name (IP addresses as IP entries)."""
    from .proc import run

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = OpenSSLFiles(directory / "rootCA.pem", directory / "rootCA.key", directory / "ssl.cert",
                         directory / "ssl.key")
    alt = []
    for name in names:
        try:
            ipaddress.ip_address(name)
            alt.append(f"IP.{len(alt) + 1} = {name}")
        except ValueError:
            alt.append(f"DNS.{len(alt) + 1} = {name}")
    extensions = directory / "openssl.cnf"
    extensions.write_text(
        "[req]\nreq_extensions = v3_req\ndistinguished_name = req_distinguished_name\n"
        "[req_distinguished_name]\n"
        "[v3_req]\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\nsubjectAltName = @alt_names\n"
        "[alt_names]\n" + "\n".join(alt) + "\n")
    csr = directory / "ssl.csr"
    steps = [
        ["genrsa", "-out", files.root_ca_key, "2048"],
        ["req", "-x509", "-new", "-nodes", "-key", files.root_ca_key, "-sha256", "-days", "2",
         "-subj", "/CN=Quaymaster Test Root CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", files.root_ca_pem],
        ["genrsa", "-out", files.ssl_key, "2048"],
        ["req", "-new", "-key", files.ssl_key, "-subj", f"/CN={names[0]}", "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", files.root_ca_pem, "-CAkey", files.root_ca_key, "-CAcreateserial",
         "-out", files.ssl_cert, "-days", "2", "-sha256", "-extensions", "v3_req", "-extfile", extensions],
    ]
    for step in steps:
        run([openssl, *map(str, step)], timeout=60)
    return files
