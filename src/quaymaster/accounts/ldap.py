"""LDAP sign-in (AUTHENTICATION_TYPE: LDAP) with Quay's LDAP_* keys.

A login binds as LDAP_ADMIN_DN, looks the name up under LDAP_USER_RDN (then each of
LDAP_SECONDARY_USER_RDNS) below LDAP_BASE_DN with `(&(<LDAP_UID_ATTR>=name)LDAP_USER_FILTER)`
(a name with an @ may also match LDAP_EMAIL_ATTR, as Quay's sign-in allows), then binds as the
entry found with the password given. LDAP_SUPERUSER_FILTER, checked against that entry, makes the
user a superuser on top of SUPER_USERS. Local accounts are linked to entries by `credentials.py`.

ldap3 is synchronous, so every directory call runs in a worker thread. Connections are opened per
call (no pool). Passwords are never logged. ldap:// is used as written (no StartTLS); ldaps://
verifies the server against the system CAs (which the registry extends with extra_ca_certs/)
plus `ldap.crt` in the config directory, as Quay does; LDAP_ALLOW_INSECURE_FALLBACK lets a
certificate that fails verification through, with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ldap3 import AUTO_BIND_NONE, BASE, NONE, SIMPLE, SUBTREE, Connection, Server, Tls
from ldap3.utils.conv import escape_filter_chars

from quaymaster.accounts.service import AuthUnavailable
from quaymaster.settings import Settings

log = logging.getLogger(__name__)

SERVICE = "ldap"  # FederatedLogin.service, as in Quay
CONFIG_DIR_ENV = "QUAYMASTER_CONFIG_DIR"  # set by `quaymaster registry`; ldap.crt lives there
CA_FILE_NAME = "ldap.crt"
SUPERUSER_CACHE_S = 60.0  # how long a superuser answer holds for sessions and tokens
ERROR_CACHE_S = 10.0  # an unreachable directory is asked again after this long
UNAVAILABLE = "authentication service unavailable; try again later"


@dataclass(frozen=True)
class LdapUser:
    """A directory entry a name resolved to."""

    dn: str
    uid: str  # as the directory spells it
    email: str | None
    superuser: bool = False


@dataclass(frozen=True)
class LdapConfig:
    """The LDAP_* keys, checked and put in the shape the client needs."""

    uri: str
    host: str
    port: int | None
    use_ssl: bool
    admin_dn: str
    admin_password: str
    user_bases: tuple[str, ...]
    uid_attr: str
    email_attr: str
    user_filter: str | None
    superuser_filter: str | None
    allow_insecure_fallback: bool
    timeout: float
    network_timeout: float
    follow_referrals: bool
    ca_file: str | None

    @classmethod
    def from_settings(cls, s: Settings) -> LdapConfig:
        missing = [k for k in ("LDAP_URI", "LDAP_ADMIN_DN", "LDAP_ADMIN_PASSWD", "LDAP_BASE_DN")
                   if not getattr(s, k)]
        if missing:
            raise ValueError(f"{', '.join(missing)} must be set when AUTHENTICATION_TYPE is LDAP")
        parts = urlsplit(s.LDAP_URI.strip())
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ValueError(f"LDAP_URI {s.LDAP_URI!r} must be ldap://host[:port] or ldaps://host[:port]")
        base_dn = list(s.LDAP_BASE_DN or [])
        primary = ",".join(s.LDAP_USER_RDN or [])
        rdns = [primary, *(r for r in s.LDAP_SECONDARY_USER_RDNS if r)]
        bases = tuple(dict.fromkeys(",".join([*(r.split(",") if r else []), *base_dn]) for r in rdns))
        return cls(
            uri=s.LDAP_URI.strip(), host=parts.hostname, port=parts.port, use_ssl=parts.scheme == "ldaps",
            admin_dn=s.LDAP_ADMIN_DN, admin_password=s.LDAP_ADMIN_PASSWD, user_bases=bases,
            uid_attr=s.LDAP_UID_ATTR or "uid", email_attr=s.LDAP_EMAIL_ATTR or "mail",
            user_filter=_wrap_filter(s.LDAP_USER_FILTER), superuser_filter=_wrap_filter(s.LDAP_SUPERUSER_FILTER),
            allow_insecure_fallback=s.LDAP_ALLOW_INSECURE_FALLBACK, timeout=s.LDAP_TIMEOUT,
            network_timeout=s.LDAP_NETWORK_TIMEOUT, follow_referrals=s.LDAP_FOLLOW_REFERRALS,
            ca_file=_config_dir_ca_file(),
        )


def _wrap_filter(value: str | None) -> str | None:
    """Quay's filters come with or without their outer parentheses; give them one pair."""
    value = (value or "").strip()
    if not value:
        return None
    return value if value.startswith("(") and value.endswith(")") else f"({value})"


def _config_dir_ca_file() -> str | None:
    folder = os.environ.get(CONFIG_DIR_ENV)
    if folder and (Path(folder) / CA_FILE_NAME).is_file():
        return str(Path(folder) / CA_FILE_NAME)
    return None


class _ContextTls(Tls):
    """ldap3's Tls, wrapping with an ssl.SSLContext of ours so Python checks the certificate and
    the host name (IP addresses included) the standard way."""

    def __init__(self, context: ssl.SSLContext, server_hostname: str):
        super().__init__(validate=context.verify_mode)
        self._context = context
        self._server_hostname = server_hostname

    def wrap_socket(self, connection, do_handshake=False):
        connection.socket = self._context.wrap_socket(
            connection.socket, server_side=False, do_handshake_on_connect=do_handshake,
            server_hostname=self._server_hostname)


def _ssl_context(config: LdapConfig, verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()  # system CAs; SSL_CERT_FILE carries extra_ca_certs/
    if config.ca_file:
        context.load_verify_locations(cafile=config.ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _is_certificate_problem(exc: Exception) -> bool:
    text = str(exc).lower()
    return "certificate" in text or "hostname" in text


class LdapAuthenticator:
    """Looks users up and checks their passwords against one directory."""

    def __init__(self, config: LdapConfig):
        self.config = config
        self._insecure = False  # set once a certificate failed and the fallback is allowed
        self._superusers: dict[str, tuple[bool, float]] = {}
        self._contexts: dict[bool, ssl.SSLContext] = {}  # built once: loading the CAs costs milliseconds

    # --- connections (worker threads) -------------------------------------------------------

    def _server(self) -> Server:
        c = self.config
        tls = None
        if c.use_ssl:
            verify = not self._insecure
            if verify not in self._contexts:
                self._contexts[verify] = _ssl_context(c, verify)
            tls = _ContextTls(self._contexts[verify], c.host)
        return Server(c.host, port=c.port, use_ssl=c.use_ssl, tls=tls, get_info=NONE,
                      connect_timeout=c.network_timeout)

    def _bind(self, dn: str, password: str) -> tuple[Connection | None, str]:
        """A bound connection, or (None, the server's reason) when the bind was refused.

        Raises AuthUnavailable when the directory cannot be reached at all."""
        c = self.config
        for attempt in (1, 2):
            conn = Connection(self._server(), user=dn, password=password, authentication=SIMPLE,
                              auto_bind=AUTO_BIND_NONE, read_only=True, raise_exceptions=False,
                              receive_timeout=max(1, math.ceil(c.timeout)), auto_referrals=c.follow_referrals,
                              return_empty_attributes=False)
            try:
                conn.open()
                if conn.bind():
                    return conn, "success"
                reason = str(conn.result.get("description") or conn.result.get("result"))
                conn.unbind()
                return None, reason
            except Exception as exc:  # noqa: BLE001 - ldap3 lets socket and struct errors through too
                _close(conn)
                if (attempt == 1 and c.use_ssl and c.allow_insecure_fallback and not self._insecure
                        and _is_certificate_problem(exc)):
                    log.warning("LDAP server %s failed certificate verification (%s); continuing without "
                                "verification because LDAP_ALLOW_INSECURE_FALLBACK is set", c.uri, exc)
                    self._insecure = True
                    continue
                log.error("LDAP server %s unreachable: %s: %s", c.uri, type(exc).__name__, exc)
                raise AuthUnavailable(UNAVAILABLE) from None
        raise AuthUnavailable(UNAVAILABLE)  # pragma: no cover - the loop always returns or raises

    def _admin(self) -> Connection:
        conn, reason = self._bind(self.config.admin_dn, self.config.admin_password)
        if conn is None:
            log.error("LDAP bind as LDAP_ADMIN_DN %r refused (%s): check LDAP_ADMIN_DN and LDAP_ADMIN_PASSWD",
                      self.config.admin_dn, reason)
            raise AuthUnavailable(UNAVAILABLE)
        return conn

    def _search(self, conn: Connection, base: str, scope: str, ldap_filter: str) -> list[dict]:
        c = self.config
        try:
            conn.search(base, ldap_filter, search_scope=scope, attributes=[c.uid_attr, c.email_attr],
                        size_limit=2, time_limit=max(1, int(c.timeout)))
        except Exception as exc:  # noqa: BLE001 - a refusal, never a crash
            log.error("LDAP search under %r with %r failed: %s: %s", base, ldap_filter, type(exc).__name__, exc)
            raise AuthUnavailable(UNAVAILABLE) from None
        code = conn.result.get("result")
        if code not in (0, 4, 32):  # success, sizeLimitExceeded (>1 match), noSuchObject (no such base)
            log.error("LDAP search under %r failed: %s", base, conn.result.get("description"))
            raise AuthUnavailable(UNAVAILABLE)
        return [e for e in (conn.response or []) if e.get("type") == "searchResEntry" and e.get("dn")]

    def _name_filter(self, name: str) -> str:
        c = self.config
        value = escape_filter_chars(name)
        clause = f"({c.uid_attr}={value})"
        if "@" in name:
            clause = f"(|{clause}({c.email_attr}={value}))"
        return f"(&{clause}{c.user_filter})" if c.user_filter else clause

    def _entry(self, raw: dict, name: str) -> LdapUser | None:
        attrs = raw.get("attributes") or {}
        uids = _values(attrs.get(self.config.uid_attr))
        if not uids:
            log.warning("LDAP entry %s has no %s attribute; it cannot sign in", raw["dn"], self.config.uid_attr)
            return None
        uid = next((u for u in uids if u.lower() == name.lower()), uids[0])
        emails = _values(attrs.get(self.config.email_attr))
        return LdapUser(dn=raw["dn"], uid=uid, email=emails[0] if emails else None)

    def _lookup_sync(self, name: str) -> LdapUser | None:
        conn = self._admin()
        try:
            for base in self.config.user_bases:
                found = self._search(conn, base, SUBTREE, self._name_filter(name))
                if len(found) > 1:
                    log.warning("LDAP: %d entries under %r match %r; refusing an ambiguous sign-in",
                                len(found), base, name)
                    return None
                if found:
                    user = self._entry(found[0], name)
                    if user is None:
                        return None
                    if self.config.superuser_filter:
                        match = self._search(conn, user.dn, BASE, self.config.superuser_filter)
                        user = LdapUser(user.dn, user.uid, user.email, superuser=bool(match))
                    return user
            return None
        finally:
            _close(conn)

    def _check_password_sync(self, dn: str, password: str) -> bool:
        conn, reason = self._bind(dn, password)
        if conn is None:
            if reason not in ("invalidCredentials", "49"):
                log.info("LDAP bind as %s refused: %s", dn, reason)
            return False
        _close(conn)
        return True

    # --- the async side ---------------------------------------------------------------------

    async def lookup(self, name: str) -> LdapUser | None:
        """The entry `name` signs in as (with its superuser flag), or None."""
        if not name or len(name) > 255:
            return None
        user = await asyncio.to_thread(self._lookup_sync, name)
        if user is not None:
            self._superusers[user.uid.lower()] = (user.superuser, time.monotonic() + SUPERUSER_CACHE_S)
        return user

    async def check_password(self, user: LdapUser, password: str) -> bool:
        """Whether the directory accepts a bind as this entry with this password."""
        if not password:  # an empty password would be an anonymous bind, which "succeeds"
            return False
        return await asyncio.to_thread(self._check_password_sync, user.dn, password)

    async def authenticate(self, name: str, password: str) -> LdapUser | None:
        """The entry for these credentials, or None. Raises AuthUnavailable if the directory is down."""
        if not password:
            return None
        user = await self.lookup(name)
        if user is None or not await self.check_password(user, password):
            return None
        return user

    async def is_superuser(self, uid: str) -> bool:
        """LDAP_SUPERUSER_FILTER for the entry with this uid, cached a minute; False if unreachable."""
        if not self.config.superuser_filter:
            return False
        key = uid.lower()
        cached = self._superusers.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        try:
            user = await self.lookup(uid)
        except AuthUnavailable:
            self._superusers[key] = (False, time.monotonic() + ERROR_CACHE_S)
            return False
        if user is None:
            self._superusers[key] = (False, time.monotonic() + SUPERUSER_CACHE_S)
            return False
        return user.superuser


def _values(value) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in items if v not in (None, "", b"")]


def _close(conn: Connection) -> None:
    # Closing a broken connection must not hide the error that broke it.
    with contextlib.suppress(Exception):
        conn.unbind()


_authenticators: dict[LdapConfig, LdapAuthenticator] = {}


def authenticator(settings: Settings) -> LdapAuthenticator:
    """The authenticator for these settings (one per distinct LDAP config in this process).

    Raises AuthUnavailable, after logging what to fix, when the LDAP keys are incomplete."""
    try:
        config = LdapConfig.from_settings(settings)
    except ValueError as exc:
        log.error("LDAP sign-in is not configured: %s", exc)
        raise AuthUnavailable(UNAVAILABLE) from None
    found = _authenticators.get(config)
    if found is None:
        if len(_authenticators) > 16:
            _authenticators.clear()
        found = _authenticators[config] = LdapAuthenticator(config)
    return found
