"""Between config.yaml keys and the editor's form fields, both ways; keys the form lacks are kept."""

from __future__ import annotations

import base64
import copy
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DB_DRIVERS = {"postgresql": "postgresql", "mysql": "mysql+pymysql", "sqlite": "sqlite"}
DB_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
STORAGE_DRIVERS = ("LocalStorage", "S3Storage")
S3_PARAMS = ("s3_bucket", "storage_path", "s3_access_key", "s3_secret_key", "s3_region", "host", "port",
             "endpoint_url")
LDAP_TEXT_KEYS = ("LDAP_URI", "LDAP_ADMIN_DN", "LDAP_ADMIN_PASSWD", "LDAP_UID_ATTR", "LDAP_EMAIL_ATTR",
                  "LDAP_USER_FILTER", "LDAP_SUPERUSER_FILTER")
TEXT_KEYS = ("REGISTRY_TITLE", "REGISTRY_TITLE_SHORT", "SERVER_HOSTNAME", "SECURITY_SCANNER_V4_ENDPOINT",
             "SECURITY_SCANNER_V4_PSK", "DEFAULT_TAG_EXPIRATION", *LDAP_TEXT_KEYS)
BOOL_KEYS = ("FEATURE_USER_CREATION", "FEATURE_ANONYMOUS_ACCESS", "FEATURE_SECURITY_SCANNER", "FEATURE_REPO_MIRROR",
             "REPO_MIRROR_TLS_VERIFY")
INT_KEYS = ("SECURITY_SCANNER_INDEXING_INTERVAL", "REPO_MIRROR_INTERVAL")
BOOL_DEFAULTS = {"FEATURE_USER_CREATION": True, "FEATURE_ANONYMOUS_ACCESS": True, "REPO_MIRROR_TLS_VERIFY": True}
INT_DEFAULTS = {"SECURITY_SCANNER_INDEXING_INTERVAL": 30, "REPO_MIRROR_INTERVAL": 30}
TLS_MODES = ("none", "quaymaster", "external")


def default_config() -> dict[str, Any]:
    """A new installation: SQLite and local storage beside the config dir, fresh shared secrets."""
    return {
        "SERVER_HOSTNAME": "localhost:8080",
        "PREFERRED_URL_SCHEME": "http",
        "SETUP_COMPLETE": True,
        "REGISTRY_TITLE": "Quaymaster",
        "REGISTRY_TITLE_SHORT": "Quaymaster",
        "DB_URI": "sqlite:///quaymaster.db",
        "DISTRIBUTED_STORAGE_CONFIG": {"default": ["LocalStorage", {"storage_path": "storage"}]},
        "DISTRIBUTED_STORAGE_PREFERENCE": ["default"],
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_SECRET_KEY": secrets.token_urlsafe(48),
        "SUPER_USERS": [],
        "FEATURE_USER_CREATION": True,
        "FEATURE_ANONYMOUS_ACCESS": True,
        "AUTHENTICATION_TYPE": "Database",
        "DEFAULT_TAG_EXPIRATION": "2w",
        "TAG_EXPIRATION_OPTIONS": ["0s", "1d", "1w", "2w", "4w"],
    }


def ensure_secrets(config: dict[str, Any]) -> dict[str, Any]:
    """Fill SECRET_KEY / DATABASE_SECRET_KEY when absent, so every node of a bundle shares them."""
    for key in ("SECRET_KEY", "DATABASE_SECRET_KEY"):
        if not config.get(key):
            config[key] = secrets.token_urlsafe(48)
    return config


def generate_psk() -> str:
    """A Clair pre-shared key: 32 random bytes, base64 (what Clair's `psk` expects)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def form_values(config: Mapping[str, Any], files: Mapping[str, bytes], db_type: str | None = None) -> dict[str, Any]:
    """What each form field shows for this config; `db_type` is the database type last chosen in
    the form, shown while DB_URI is empty (a half-filled section keeps the choice)."""
    values: dict[str, Any] = {key: _text(config.get(key)) for key in TEXT_KEYS}
    values.update({key: bool(config.get(key, BOOL_DEFAULTS.get(key, False))) for key in BOOL_KEYS})
    values.update({key: _text(config.get(key, INT_DEFAULTS[key])) for key in INT_KEYS})
    values["LDAP_UID_ATTR"] = values["LDAP_UID_ATTR"] or "uid"
    values["LDAP_EMAIL_ATTR"] = values["LDAP_EMAIL_ATTR"] or "mail"
    values["AUTHENTICATION_TYPE"] = str(config.get("AUTHENTICATION_TYPE") or "Database")
    values["LDAP_BASE_DN"] = ",".join(config.get("LDAP_BASE_DN") or [])
    values["LDAP_USER_RDN"] = ",".join(config.get("LDAP_USER_RDN") or [])
    values["SUPER_USERS"] = ", ".join(config.get("SUPER_USERS") or [])
    values["TAG_EXPIRATION_OPTIONS"] = ", ".join(map(str, config.get("TAG_EXPIRATION_OPTIONS") or []))
    if config.get("PREFERRED_URL_SCHEME") == "https":
        values["tls_mode"] = "external" if config.get("EXTERNAL_TLS_TERMINATION") else "quaymaster"
    else:
        values["tls_mode"] = "none"
    values["has_ssl_cert"] = "ssl.cert" in files
    values["has_ssl_key"] = "ssl.key" in files
    values.update(_db_values(str(config.get("DB_URI") or "")))
    if not config.get("DB_URI") and db_type in DB_DRIVERS:
        values["db_type"] = db_type
    redis = config.get("BUILDLOGS_REDIS") or config.get("USER_EVENTS_REDIS") or {}
    redis = redis if isinstance(redis, dict) else {}
    values.update(redis_host=_text(redis.get("host")), redis_port=_text(redis.get("port", 6379)),
                  redis_password=_text(redis.get("password")), redis_ssl=bool(redis.get("ssl")))
    name, driver, params = _edited_location(config)
    values["storage_location"] = name
    values["storage_driver"] = driver if driver in STORAGE_DRIVERS else "LocalStorage"
    values["local_storage_path"] = _text(params.get("storage_path")) if driver == "LocalStorage" else ""
    for param in S3_PARAMS:
        values[f"s3_{param}" if not param.startswith("s3_") else param] = \
            _text(params.get(param)) if driver == "S3Storage" else ""
    return values


def apply_form(config: Mapping[str, Any], form: Mapping[str, str]) -> dict[str, Any]:
    """A new config: `config` with the form's fields written over it (other keys untouched)."""
    out = copy.deepcopy(dict(config))
    ldap = (form.get("AUTHENTICATION_TYPE") or "Database") == "LDAP"
    for key in TEXT_KEYS:
        if ldap or key not in LDAP_TEXT_KEYS:  # LDAP fields are left alone unless LDAP is chosen
            _set_text(out, key, form.get(key))
    for key in BOOL_KEYS:
        out[key] = form.get(key) in ("on", "true", "1", "yes")
    for key in INT_KEYS:
        raw = (form.get(key) or "").strip()
        if raw:
            out[key] = int(raw) if raw.isdigit() else raw  # the validator names a non-number
        else:
            out.pop(key, None)
    out["SUPER_USERS"] = _split(form.get("SUPER_USERS"))
    options = _split(form.get("TAG_EXPIRATION_OPTIONS"))
    if options:
        out["TAG_EXPIRATION_OPTIONS"] = options
    out["AUTHENTICATION_TYPE"] = form.get("AUTHENTICATION_TYPE") or "Database"
    for key in ("LDAP_BASE_DN", "LDAP_USER_RDN") if ldap else ():
        parts = [p.strip() for p in (form.get(key) or "").split(",") if p.strip()]
        if parts:
            out[key] = parts
        else:
            out.pop(key, None)
    tls_mode = form.get("tls_mode") or "none"
    out["PREFERRED_URL_SCHEME"] = "http" if tls_mode == "none" else "https"
    if tls_mode == "external":
        out["EXTERNAL_TLS_TERMINATION"] = True
    else:
        out.pop("EXTERNAL_TLS_TERMINATION", None)
    _apply_database(out, form)
    _apply_redis(out, form)
    _apply_storage(out, form)
    return out


def _db_values(uri: str) -> dict[str, Any]:
    values = {"db_type": "postgresql", "db_host": "", "db_port": "", "db_name": "", "db_user": "",
              "db_password": "", "sqlite_path": ""}
    if uri.startswith("sqlite"):
        values.update(db_type="sqlite", sqlite_path=uri.split(":///", 1)[1] if ":///" in uri else "")
        return values
    try:
        url = make_url(uri)
    except ArgumentError:
        return values
    values["db_type"] = "mysql" if url.drivername.startswith("mysql") else "postgresql"
    values.update(db_host=url.host or "", db_port=_text(url.port), db_name=url.database or "",
                  db_user=url.username or "", db_password=url.password or "")
    return values


def _apply_database(out: dict[str, Any], form: Mapping[str, str]) -> None:
    db_type = form.get("db_type") or "postgresql"
    if db_type == "sqlite":
        path = (form.get("sqlite_path") or "").strip()
        if path:
            out["DB_URI"] = f"sqlite:///{path}"
        else:
            out.pop("DB_URI", None)  # reported as required, rather than silently keeping another database
        return
    host = (form.get("db_host") or "").strip()
    if not host:
        out.pop("DB_URI", None)  # reported as required
        return
    port = (form.get("db_port") or "").strip()
    url = URL.create(DB_DRIVERS.get(db_type, "postgresql"), username=(form.get("db_user") or None),
                     password=(form.get("db_password") or None), host=host,
                     port=int(port) if port.isdigit() else DB_DEFAULT_PORTS.get(db_type),
                     database=(form.get("db_name") or "").strip() or None)
    out["DB_URI"] = url.render_as_string(hide_password=False)


def _apply_redis(out: dict[str, Any], form: Mapping[str, str]) -> None:
    host = (form.get("redis_host") or "").strip()
    if not host:
        for key in ("BUILDLOGS_REDIS", "USER_EVENTS_REDIS"):
            out.pop(key, None)
        return
    port = (form.get("redis_port") or "").strip() or "6379"
    for key in ("BUILDLOGS_REDIS", "USER_EVENTS_REDIS"):
        entry = dict(out.get(key) or {}) if isinstance(out.get(key), dict) else {}
        entry.update(host=host, port=int(port) if port.isdigit() else port)
        if form.get("redis_password"):
            entry["password"] = form["redis_password"]
        else:
            entry.pop("password", None)
        if form.get("redis_ssl") in ("on", "true", "1"):
            entry["ssl"] = True
        else:
            entry.pop("ssl", None)
        out[key] = entry


def _edited_location(config: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """The location the form edits: the preferred one (others are kept as they are)."""
    locations = config.get("DISTRIBUTED_STORAGE_CONFIG") or {}
    preference = config.get("DISTRIBUTED_STORAGE_PREFERENCE") or []
    name = preference[0] if preference and preference[0] in locations else next(iter(locations), "default")
    entry = locations.get(name) if isinstance(locations, dict) else None
    if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], dict):
        return name, str(entry[0]), dict(entry[1])
    return name, "LocalStorage", {}


def _apply_storage(out: dict[str, Any], form: Mapping[str, str]) -> None:
    name, old_driver, old_params = _edited_location(out)
    driver = form.get("storage_driver") or "LocalStorage"
    params = dict(old_params) if driver == old_driver else {}
    if driver == "LocalStorage":
        params = {k: v for k, v in params.items() if k not in S3_PARAMS}
        _set_text(params, "storage_path", form.get("local_storage_path"))
    else:
        for param in S3_PARAMS:
            field_name = param if param.startswith("s3_") else f"s3_{param}"
            _set_text(params, param, form.get(field_name))
        if isinstance(params.get("port"), str) and params["port"].isdigit():
            params["port"] = int(params["port"])
    locations = dict(out.get("DISTRIBUTED_STORAGE_CONFIG") or {})
    locations[name] = [driver, params]
    out["DISTRIBUTED_STORAGE_CONFIG"] = locations
    if not out.get("DISTRIBUTED_STORAGE_PREFERENCE"):
        out["DISTRIBUTED_STORAGE_PREFERENCE"] = [name]


def _set_text(target: dict[str, Any], key: str, value: str | None) -> None:
    value = (value or "").strip()
    if value:
        target[key] = value
    else:
        target.pop(key, None)


def _split(value: str | None) -> list[str]:
    return [part for part in (value or "").replace(",", " ").split() if part]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# --- where each validation issue is shown ----------------------------------------------------------

# Config keys shown by a form field of the same name.
_OWN_FIELD_KEYS = frozenset((*TEXT_KEYS, *BOOL_KEYS, *INT_KEYS, "SUPER_USERS", "TAG_EXPIRATION_OPTIONS",
                             "AUTHENTICATION_TYPE", "LDAP_BASE_DN", "LDAP_USER_RDN"))
_REDIS_PART_FIELDS = {"host": "redis_host", "port": "redis_port", "password": "redis_password", "ssl": "redis_ssl",
                      "db": "redis_host"}


def field_for_issue(key: str, message: str, values: Mapping[str, Any]) -> str | None:
    """The form field a validation issue belongs beside (`values` is what form_values gave), or
    None when no field of the form sets that key (the summary at the top still lists it)."""
    root, _, part = key.partition(".")
    if root in _OWN_FIELD_KEYS:
        return root
    if root == "DB_URI":
        if values.get("db_type") == "sqlite":
            return "sqlite_path"
        return "db_password" if "password authentication" in message else "db_host"
    if root in ("BUILDLOGS_REDIS", "USER_EVENTS_REDIS"):
        if part:
            return _REDIS_PART_FIELDS.get(part.split(".")[0], "redis_host")
        return "redis_password" if "password" in message else "redis_host"
    if root == "DISTRIBUTED_STORAGE_CONFIG" and part == values.get("storage_location") \
            and values.get("storage_driver") == "LocalStorage":
        return "local_storage_path"
    if root in ("DISTRIBUTED_STORAGE_CONFIG", "DISTRIBUTED_STORAGE_PREFERENCE"):
        return "storage_driver"
    if key == "ssl.cert":
        return "ssl_cert"
    if key == "ssl.key":
        return "ssl_key"
    if root in ("PREFERRED_URL_SCHEME", "EXTERNAL_TLS_TERMINATION"):
        return "tls_mode"
    if key.startswith("extra_ca_certs"):
        return "extra_ca_certs"
    return None
