"""Checks a config bundle before it goes live: formats first, then the real services it names.

Every check returns a list of ValidationIssue(key, message); an empty list means it passed. The
key is the config key (or bundle file) to fix, so the editor can show the message beside it and
`quaymaster config validate` can print `KEY: message`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import re
import secrets
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from quaymaster.settings.bundle import EXTRA_CA_DIR, ConfigBundle
from quaymaster.settings.loader import _resolve_paths
from quaymaster.settings.model import Settings
from quaymaster.settings.units import parse_duration

DEFAULT_TIMEOUT = 10.0
REQUIRED_KEYS = ("SERVER_HOSTNAME", "DB_URI", "DISTRIBUTED_STORAGE_CONFIG", "DISTRIBUTED_STORAGE_PREFERENCE",
                 "SECRET_KEY", "DATABASE_SECRET_KEY")
REDIS_KEYS = ("BUILDLOGS_REDIS", "USER_EVENTS_REDIS")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class ValidationIssue:
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "message": self.message}


# --- formats -----------------------------------------------------------------------------------

def check_fields(config: dict[str, Any]) -> list[ValidationIssue]:
    """Required keys, types and formats: everything that needs no network."""
    issues = [ValidationIssue(key, _missing_message(key)) for key in REQUIRED_KEYS if _blank(config.get(key))]
    try:
        Settings.model_validate(config)
    except ValidationError as exc:
        for err in exc.errors():
            issue = _pydantic_issue(err)
            if not any(i.key == issue.key for i in issues):
                issues.append(issue)
        # Whole-model checks (storage locations) run only once every field parsed: run them alone.
        storage = {k: config[k] for k in ("DISTRIBUTED_STORAGE_CONFIG", "DISTRIBUTED_STORAGE_PREFERENCE") if k in config}
        if storage and not any(i.key.startswith("DISTRIBUTED_STORAGE") for i in issues):
            try:
                Settings.model_validate(storage)
            except ValidationError as storage_exc:
                issues += [_pydantic_issue(err) for err in storage_exc.errors()]
    hostname = config.get("SERVER_HOSTNAME")
    if isinstance(hostname, str) and hostname and not any(i.key == "SERVER_HOSTNAME" for i in issues):
        problem = hostname_problem(hostname)
        if problem:
            issues.append(ValidationIssue("SERVER_HOSTNAME", problem))
    issues += _time_machine(config) + _scanner_fields(config) + _ldap_fields(config)
    return issues


def hostname_problem(value: str) -> str | None:
    """Why `value` is not host[:port] (a DNS name or an IP address), or None when it is."""
    host, port = split_host_port(value)
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"{value!r}: the port must be a number from 1 to 65535"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not host or len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        return f"{value!r} is not a hostname such as registry.example.com or registry.example.com:8443"
    return None


def split_host_port(value: str) -> tuple[str, str | None]:
    """'h:1' -> ('h', '1'); '[::1]:8443' -> ('::1', '8443'); bare IPv6 stays whole."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, port
    return value, None


def _time_machine(config: dict[str, Any]) -> list[ValidationIssue]:
    default = config.get("DEFAULT_TAG_EXPIRATION")
    options = config.get("TAG_EXPIRATION_OPTIONS", Settings.model_fields["TAG_EXPIRATION_OPTIONS"].get_default(
        call_default_factory=True))
    if default is None or not isinstance(options, list):
        return []
    try:
        wanted = parse_duration(default)
        allowed = {parse_duration(o) for o in options}
    except (ValueError, TypeError):
        return []  # the format check already named the key
    if wanted not in allowed:
        return [ValidationIssue("DEFAULT_TAG_EXPIRATION",
                                f"{default!r} must be one of TAG_EXPIRATION_OPTIONS ({', '.join(map(str, options))})")]
    return []


def _scanner_fields(config: dict[str, Any]) -> list[ValidationIssue]:
    issues = []
    endpoint = config.get("SECURITY_SCANNER_V4_ENDPOINT")
    psk = config.get("SECURITY_SCANNER_V4_PSK")
    if endpoint:
        parts = urlsplit(str(endpoint))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            issues.append(ValidationIssue("SECURITY_SCANNER_V4_ENDPOINT",
                                          f"{endpoint!r} is not a URL such as http://clair.example.com:8081"))
    elif config.get("FEATURE_SECURITY_SCANNER"):
        issues.append(ValidationIssue("SECURITY_SCANNER_V4_ENDPOINT", "required when FEATURE_SECURITY_SCANNER is on"))
    if psk:
        try:
            base64.b64decode(str(psk), validate=True)
        except (binascii.Error, ValueError):
            issues.append(ValidationIssue("SECURITY_SCANNER_V4_PSK", "must be base64 (use the generate button)"))
    elif config.get("FEATURE_SECURITY_SCANNER"):
        issues.append(ValidationIssue("SECURITY_SCANNER_V4_PSK", "required when FEATURE_SECURITY_SCANNER is on"))
    return issues


def _ldap_fields(config: dict[str, Any]) -> list[ValidationIssue]:
    if config.get("AUTHENTICATION_TYPE") != "LDAP":
        return []
    issues = [ValidationIssue(key, "required when AUTHENTICATION_TYPE is LDAP")
              for key in ("LDAP_URI", "LDAP_BASE_DN", "LDAP_ADMIN_DN", "LDAP_ADMIN_PASSWD") if _blank(config.get(key))]
    uri = config.get("LDAP_URI")
    if uri and urlsplit(str(uri)).scheme not in ("ldap", "ldaps"):
        issues.append(ValidationIssue("LDAP_URI", f"{uri!r} must start with ldap:// or ldaps://"))
    return issues


def _pydantic_issue(err: dict[str, Any]) -> ValidationIssue:
    msg = str(err["msg"]).removeprefix("Value error, ")
    loc = [str(p) for p in err["loc"]]
    if not loc and ": " in msg:  # model-level checks already start with the key
        key, _, rest = msg.partition(": ")
        return ValidationIssue(key, rest)
    # Union members show up as extra path parts ("str", "int", "function-after[...]"): drop them.
    loc = [p for p in loc if not (p in ("str", "int", "bool", "list", "dict", "RedisConfig") or "[" in p)]
    return ValidationIssue(".".join(loc) or "config", msg)


def _missing_message(key: str) -> str:
    if key in ("SECRET_KEY", "DATABASE_SECRET_KEY"):
        return "missing: every node must share the same value; the config editor generates one"
    return "required"


def _blank(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


# --- TLS files -----------------------------------------------------------------------------------

def check_tls(config: dict[str, Any], files: dict[str, bytes], now: datetime | None = None) -> list[ValidationIssue]:
    """ssl.cert/ssl.key: both there, the key matches, valid now and for SERVER_HOSTNAME."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    issues: list[ValidationIssue] = []
    for name, data in sorted(files.items()):
        if name.startswith(EXTRA_CA_DIR + "/") and not _pem_certs(data):
            issues.append(ValidationIssue(name, "holds no PEM certificate"))
    cert_pem, key_pem = files.get("ssl.cert"), files.get("ssl.key")
    https_here = config.get("PREFERRED_URL_SCHEME") == "https" and not config.get("EXTERNAL_TLS_TERMINATION")
    if cert_pem is None and key_pem is None:
        if https_here:
            issues.append(ValidationIssue("ssl.cert", "PREFERRED_URL_SCHEME is https, so ssl.cert and ssl.key are "
                                          "needed (or set EXTERNAL_TLS_TERMINATION when a load balancer ends TLS)"))
        return issues
    if cert_pem is None or key_pem is None:
        missing = "ssl.cert" if cert_pem is None else "ssl.key"
        return issues + [ValidationIssue(missing, "missing: ssl.cert and ssl.key go together")]
    certs = _pem_certs(cert_pem)
    if not certs:
        return issues + [ValidationIssue("ssl.cert", "not a PEM certificate")]
    leaf = certs[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return issues + [ValidationIssue("ssl.key", "not an unencrypted PEM private key")]
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        issues.append(ValidationIssue("ssl.key", "does not match the certificate in ssl.cert"))
    now = now or datetime.now(UTC)
    if now < leaf.not_valid_before_utc:
        issues.append(ValidationIssue("ssl.cert", f"not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"))
    if now > leaf.not_valid_after_utc:
        issues.append(ValidationIssue("ssl.cert", f"expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"))
    hostname = config.get("SERVER_HOSTNAME")
    if isinstance(hostname, str) and hostname:
        host = split_host_port(hostname)[0]
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            issues.append(ValidationIssue("ssl.cert", "has no subjectAltName; clients ignore the common name, "
                                          f"so it is not valid for {host}"))
            return issues
        names = san.get_values_for_type(x509.DNSName)
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        if not cert_matches_host(host, names, ips):
            listed = ", ".join(names + ips) or "none"
            issues.append(ValidationIssue("ssl.cert", f"not valid for SERVER_HOSTNAME {host} (names: {listed})"))
    return issues


def cert_matches_host(host: str, dns_names: list[str], ips: list[str]) -> bool:
    """RFC 6125 matching: exact names, or a '*' standing for the whole leftmost label."""
    try:
        return str(ipaddress.ip_address(host)) in {str(ipaddress.ip_address(i)) for i in ips}
    except ValueError:
        pass
    host = host.rstrip(".").lower()
    for name in dns_names:
        name = name.rstrip(".").lower()
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:] and host.split(".", 1)[0]:
            return True
    return False


def _pem_certs(data: bytes) -> list:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


# --- services ------------------------------------------------------------------------------------

async def check_database(config: dict[str, Any]) -> list[ValidationIssue]:
    """Connect, read the schema revision; on PostgreSQL make sure pg_trgm is there or can be made."""
    uri = config.get("DB_URI")
    if not isinstance(uri, str) or not uri:
        return []
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if scheme == "sqlite":
        return await asyncio.to_thread(_check_sqlite, uri)
    if scheme not in ("postgresql", "postgres"):
        return []  # the format check names unsupported databases
    return await _check_postgres(uri, dict(config.get("DB_CONNECTION_ARGS") or {}))


def _check_sqlite(uri: str) -> list[ValidationIssue]:
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if path in ("", ":memory:"):
        return []
    db_file = Path(path)
    if not db_file.exists():
        parent = db_file.parent
        if not parent.is_dir():
            return [ValidationIssue("DB_URI", f"directory {parent} does not exist")]
        import os

        if not os.access(parent, os.W_OK):
            return [ValidationIssue("DB_URI", f"directory {parent} is not writable (the database file is made there)")]
        return []  # created, and migrated, on first start
    try:
        conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=5)
        try:
            revision = _sqlite_revision(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [ValidationIssue("DB_URI", f"cannot read {db_file}: {exc}")]
    return _revision_issue(revision)


def _sqlite_revision(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='alembic_version'").fetchone()
    if row is None:
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


async def _check_postgres(uri: str, args: dict[str, Any]) -> list[ValidationIssue]:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import text

    from quaymaster.db.engine import Database

    args.setdefault("connect_timeout", 5)
    db = Database(uri, args)
    try:
        async with db.engine.connect() as conn:
            revision = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
            await conn.rollback()
            issues = _revision_issue(revision)
            # Inside a transaction that is rolled back: proves pg_trgm exists or may be created,
            # without changing the database.
            try:
                await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
            except Exception as exc:  # noqa: BLE001 - any failure is the answer
                issues.append(ValidationIssue("DB_URI", "the pg_trgm extension is missing and cannot be created "
                                              f"({_describe(exc)}); ask the database administrator to run "
                                              "CREATE EXTENSION pg_trgm"))
            finally:
                await conn.rollback()
            return issues
    except Exception as exc:  # noqa: BLE001
        return [ValidationIssue("DB_URI", f"cannot connect: {_describe(exc)}")]
    finally:
        await db.dispose()


def _revision_issue(revision: str | None) -> list[ValidationIssue]:
    if revision is None:
        return []  # an empty database: the registry migrates it on first start
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from quaymaster.db.migrate import alembic_config

    try:
        known = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except (CommandError, KeyError, ValueError):
        known = None
    if known is None:
        return [ValidationIssue("DB_URI", f"the database is at schema revision {revision}, which this Quaymaster "
                                "does not know (was it migrated by a newer version?)")]
    return []


async def check_redis(config: dict[str, Any], extra_ca: list[bytes] | None = None) -> list[ValidationIssue]:
    """BUILDLOGS_REDIS and USER_EVENTS_REDIS each answer PING with the given password."""
    import redis.asyncio as aioredis
    from redis import exceptions as rexc
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    issues = []
    for key in REDIS_KEYS:
        entry = config.get(key)
        if not isinstance(entry, dict) or not entry.get("host"):
            continue  # absent (in-process events) or already reported by the format check
        host, port = str(entry["host"]), entry.get("port", 6379)
        options: dict[str, Any] = {}
        if entry.get("ssl"):
            options = {"ssl": True, "ssl_cert_reqs": "required"}
            if extra_ca:
                options["ssl_ca_data"] = b"\n".join(extra_ca).decode("ascii", "replace")
        client = aioredis.Redis(host=host, port=int(port), password=entry.get("password") or None,
                                db=int(entry.get("db", 0) or 0), socket_connect_timeout=5, socket_timeout=5,
                                retry=Retry(NoBackoff(), 0), **options)  # one try, one clear answer
        try:
            await client.ping()
        except rexc.AuthenticationError:
            if entry.get("password"):
                issues.append(ValidationIssue(key, f"{host}:{port} refused the password"))
            else:
                issues.append(ValidationIssue(key, f"{host}:{port} requires a password"))
        except rexc.ResponseError as exc:
            if "NOAUTH" in str(exc):
                issues.append(ValidationIssue(key, f"{host}:{port} requires a password"))
            else:
                issues.append(ValidationIssue(key, f"{host}:{port} answered PING with an error: {exc}"))
        except Exception as exc:  # noqa: BLE001
            issues.append(ValidationIssue(key, f"cannot reach Redis at {host}:{port}: {_describe(exc)}"))
        finally:
            await client.aclose()
    return issues


async def check_storage(config: dict[str, Any]) -> list[ValidationIssue]:
    """Write, read back and delete a small test object in every storage location."""
    from quaymaster.storage import build_storage

    locations = config.get("DISTRIBUTED_STORAGE_CONFIG")
    if not isinstance(locations, dict):
        return []
    issues = []
    for name, entry in locations.items():
        key = f"DISTRIBUTED_STORAGE_CONFIG.{name}"
        try:
            one = Settings.model_validate({"DISTRIBUTED_STORAGE_CONFIG": {name: entry},
                                           "DISTRIBUTED_STORAGE_PREFERENCE": [name]})
        except ValidationError:
            continue  # the format check reports it
        try:
            store = build_storage(one).stores[name]
        except Exception as exc:  # noqa: BLE001
            issues.append(ValidationIssue(key, f"cannot open storage: {_describe(exc)}"))
            continue
        payload = b"quaymaster storage check " + secrets.token_hex(16).encode()
        digest = "sha256:" + hashlib.sha256(payload).hexdigest()
        step = "write"
        try:
            await store.put(digest, payload)
            step = "read"
            read = b"".join([chunk async for chunk in store.stream(digest)])
            if read != payload:
                raise ValueError("read back different bytes than were written")
            step = "delete"
            await store.delete(digest)
        except Exception as exc:  # noqa: BLE001
            issues.append(ValidationIssue(key, f"{step} of a test object failed: {_describe(exc)}"))
            if step != "write":
                try:
                    await store.delete(digest)
                except Exception:  # noqa: BLE001 - best effort cleanup
                    pass
    return issues


async def check_scanner(config: dict[str, Any], extra_ca: list[bytes] | None = None) -> list[ValidationIssue]:
    """SECURITY_SCANNER_V4_ENDPOINT answers HTTP at all (any status)."""
    import httpx

    from quaymaster.settings.tls import client_ssl_context

    endpoint = config.get("SECURITY_SCANNER_V4_ENDPOINT")
    if not endpoint:
        return []
    parts = urlsplit(str(endpoint))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return []  # the format check reports it
    try:
        async with httpx.AsyncClient(verify=client_ssl_context(extra_ca or []), timeout=5.0) as client:
            await client.get(str(endpoint))
    except Exception as exc:  # noqa: BLE001
        return [ValidationIssue("SECURITY_SCANNER_V4_ENDPOINT", f"no HTTP answer from {endpoint}: {_describe(exc)}")]
    return []


# --- everything ----------------------------------------------------------------------------------

async def validate_bundle(bundle: ConfigBundle, config_dir: Path | str | None = None,
                          timeout: float = DEFAULT_TIMEOUT) -> list[ValidationIssue]:
    """Every check; relative paths resolve as the registry would resolve them from config_dir."""
    config = bundle.config
    issues = check_fields(config) + check_tls(config, bundle.files)
    resolved = _resolve_paths(config, Path(config_dir) if config_dir else Path.cwd() / "config")
    extra = bundle.extra_ca_certs
    checks: list[tuple[str, Callable[[], Awaitable[list[ValidationIssue]]]]] = [
        ("DB_URI", lambda: check_database(resolved)),
        ("BUILDLOGS_REDIS", lambda: check_redis(resolved, extra)),
        ("DISTRIBUTED_STORAGE_CONFIG", lambda: check_storage(resolved)),
        ("SECURITY_SCANNER_V4_ENDPOINT", lambda: check_scanner(resolved, extra)),
    ]

    async def bounded(key: str, check: Callable[[], Awaitable[list[ValidationIssue]]]) -> list[ValidationIssue]:
        try:
            return await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            return [ValidationIssue(key, f"no answer within {timeout:g}s")]

    for found in await asyncio.gather(*(bounded(k, c) for k, c in checks)):
        issues += found
    return issues


def _describe(exc: BaseException) -> str:
    """The most specific one-line message in an exception chain (driver errors hide under wrappers)."""
    seen = exc
    for _ in range(5):
        inner = getattr(seen, "orig", None) or seen.__cause__
        if inner is None or inner is seen:
            break
        seen = inner
    text = str(seen).strip().splitlines()[0] if str(seen).strip() else ""
    if isinstance(seen, (ConnectionRefusedError,)) or "Connect call failed" in text:
        return "connection refused"
    if isinstance(seen, (asyncio.TimeoutError, TimeoutError)):
        return "timed out"
    return text or seen.__class__.__name__
