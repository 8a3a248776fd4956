"""A throwaway OpenLDAP server (Debian's slapd) on a loopback port, with a small directory loaded.

The directory, under dc=example,dc=org (admin cn=admin,dc=example,dc=org):

    ou=people      alice (mail alice@example.org), bob (mail bob@example.org),
                   carol (mail carol@example.org, the administrator), Frank.Mueller (mail frank@example.org)
    ou=contractors dave (mail dave@example.org), found only through LDAP_SECONDARY_USER_RDNS
    ou=groups      registry-users (alice, carol, Frank.Mueller), registry-admins (carol)

Each user's password is `<uid>-ldap-pw` (USERS holds them). The memberof overlay keeps each
user's `memberOf` in step with the groups, so filters look like the ones Quay's docs use.
Configured with a slapd.conf (`-f`), an mdb database in a temp dir; `ldaps=` adds a TLS
listener with the certificate and key given. Stopped and deleted when the block ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .env import find_binary, missing_dependency
from .proc import CommandError, run
from .servers import LOOPBACK, free_port, tail

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-ldap-secret"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
USERS_GROUP = f"cn=registry-users,ou=groups,{SUFFIX}"
ADMINS_GROUP = f"cn=registry-admins,ou=groups,{SUFFIX}"

# uid -> (organizational unit, mail, groups)
_PEOPLE: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "alice": ("people", "alice@example.org", ("registry-users",)),
    "bob": ("people", "bob@example.org", ()),
    "carol": ("people", "carol@example.org", ("registry-users", "registry-admins")),
    "Frank.Mueller": ("people", "frank@example.org", ("registry-users",)),
    "dave": ("contractors", "dave@example.org", ()),
}
USERS = {uid: f"{uid}-ldap-pw" for uid in _PEOPLE}


def user_dn(uid: str) -> str:
    return f"uid={uid},ou={_PEOPLE[uid][0]},{SUFFIX}"


def _slapd_conf(base: Path, tls: tuple[Path, Path] | None) -> str:
    schemas = "\n".join(f"include {SCHEMA_DIR / name}.schema"
                        for name in ("core", "cosine", "inetorgperson", "nis"))
    tls_lines = f"TLSCertificateFile {tls[0]}\nTLSCertificateKeyFile {tls[1]}\n" if tls else ""
    return f"""{schemas}
modulepath {MODULE_DIR}
moduleload back_mdb
moduleload memberof
pidfile {base / 'slapd.pid'}
argsfile {base / 'slapd.args'}
loglevel none
{tls_lines}
database mdb
maxsize 33554432
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {base / 'data'}
index objectClass eq
index uid eq
index mail eq
# Passwords: checked by a bind, never read back. Everything else: readable once bound.
access to attrs=userPassword by anonymous auth by self write by * none
access to * by users read by * none
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint true
"""


def _directory_ldif() -> str:
    blocks = [
        f"dn: {SUFFIX}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example",
        *(f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}"
          for ou in ("people", "contractors", "groups")),
    ]
    for uid, (_, mail, _) in _PEOPLE.items():
        lines = [f"dn: {user_dn(uid)}", "objectClass: inetOrgPerson", f"uid: {uid}", f"cn: {uid}",
                 f"sn: {uid}", f"userPassword: {USERS[uid]}"]
        if mail:
            lines.append(f"mail: {mail}")
        blocks.append("\n".join(lines))
    for group in ("registry-users", "registry-admins"):
        members = [uid for uid, (_, _, groups) in _PEOPLE.items() if group in groups]
        blocks.append("\n".join([f"dn: cn={group},ou=groups,{SUFFIX}", "objectClass: groupOfNames",
                                 f"cn: {group}", *(f"member: {user_dn(uid)}" for uid in members)]))
    return "\n\n".join(blocks) + "\n"


@dataclass
class SlapdServer:
    """A running slapd; `uri` is ldap://127.0.0.1:<port>, `ldaps_uri` set when TLS was asked for."""

    base_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    ldaps_port: int | None = None
    ldapadd: str = "ldapadd"
    ldapmodify: str = "ldapmodify"
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))

    @property
    def uri(self) -> str:
        return f"ldap://{LOOPBACK}:{self.port}"

    @property
    def ldaps_uri(self) -> str | None:
        return f"ldaps://{LOOPBACK}:{self.ldaps_port}" if self.ldaps_port else None

    @property
    def log_path(self) -> Path:
        return self.base_dir / "slapd.log"

    def quay_config(self, **overrides: Any) -> dict[str, Any]:
        """The LDAP_* keys of a Quay config.yaml pointing at this server (no filters)."""
        return {
            "LDAP_URI": self.uri,
            "LDAP_ADMIN_DN": ADMIN_DN,
            "LDAP_ADMIN_PASSWD": ADMIN_PASSWORD,
            "LDAP_BASE_DN": ["dc=example", "dc=org"],
            "LDAP_USER_RDN": ["ou=people"],
            "LDAP_UID_ATTR": "uid",
            "LDAP_EMAIL_ATTR": "mail",
            **overrides,
        }

    def _client(self, tool: str, ldif: str) -> str:
        return run([tool, "-x", "-H", self.uri, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD],
                   input=ldif, timeout=30).stdout

    def add(self, ldif: str) -> str:
        """ldapadd the entries of an LDIF text as the administrator."""
        return self._client(self.ldapadd, ldif)

    def modify(self, ldif: str) -> str:
        """ldapmodify with an LDIF of changes as the administrator."""
        return self._client(self.ldapmodify, ldif)

    def set_mail(self, uid: str, mail: str) -> None:
        self.modify(f"dn: {user_dn(uid)}\nchangetype: modify\nreplace: mail\nmail: {mail}\n")


def _wait_until_answering(server: SlapdServer, ldapwhoami: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"slapd exited with {server.process.returncode}\n"
                               f"--- slapd log ---\n{tail(server.log_path)}")
        try:
            run([ldapwhoami, "-x", "-H", server.uri, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD], timeout=5)
            return
        except CommandError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"slapd did not answer on {server.uri} within {timeout}s: {exc}\n"
                                   f"--- slapd log ---\n{tail(server.log_path)}") from None
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def slapd_server(*, ldaps: tuple[bytes, bytes] | None = None, timeout: float = 20.0) -> Iterator[SlapdServer]:
    """Run slapd with the directory above; ldaps=(cert_pem, key_pem) adds an ldaps:// listener."""
    hint = "install the Debian packages 'slapd' and 'ldap-utils'"
    slapd = find_binary("slapd", ["/usr/sbin/slapd"], hint=hint)
    tools = {name: find_binary(name, [f"/usr/bin/{name}"], hint=hint)
             for name in ("ldapadd", "ldapmodify", "ldapwhoami")}
    if not (MODULE_DIR / "back_mdb.la").exists() and not (MODULE_DIR / "back_mdb.so").exists():
        missing_dependency(f"slapd's mdb backend not found in {MODULE_DIR}; {hint}")
    base = Path(tempfile.mkdtemp(prefix="quaymaster-slapd-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        (base / "data").mkdir(mode=0o700)
        tls = None
        if ldaps:
            tls = (base / "server.crt", base / "server.key")
            tls[0].write_bytes(ldaps[0])
            tls[1].write_bytes(ldaps[1])
            os.chmod(tls[1], 0o600)
        conf = base / "slapd.conf"
        conf.write_text(_slapd_conf(base, tls))
        run([slapd, "-T", "test", "-u", "-f", str(conf), "-Q"], timeout=30)  # slaptest -u: a bad config fails here, clearly
        port = free_port()
        ldaps_port = free_port() if ldaps else None
        urls = f"ldap://{LOOPBACK}:{port}/" + (f" ldaps://{LOOPBACK}:{ldaps_port}/" if ldaps_port else "")
        with (base / "slapd.log").open("ab") as log:
            # -d 0: stay in the foreground (so this Popen is the server) with no debug output.
            process = subprocess.Popen([slapd, "-f", str(conf), "-h", urls, "-d", "0"],
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = SlapdServer(base_dir=base, port=port, process=process, ldaps_port=ldaps_port,
                             ldapadd=tools["ldapadd"], ldapmodify=tools["ldapmodify"])
        _wait_until_answering(server, tools["ldapwhoami"], timeout)
        server.add(_directory_ldif())
        yield server
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(base, ignore_errors=True)
