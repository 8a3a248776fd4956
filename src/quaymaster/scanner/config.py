"""Clair's YAML config keys, read once into typed objects; unknown keys are kept, not dropped."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

MODES = ("combo", "indexer", "matcher", "notifier")
DEFAULT_LISTEN = "127.0.0.1:8081"
DEFAULT_DATA_DIR = Path("quaymaster-scanner-data")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


# The updaters with public feed addresses (clair.cvss needs a `url`: NVD has no single file).
DEFAULT_UPDATER_SETS = ("osv", "debian", "alpine")


class ConfigError(ValueError):
    """A config value we cannot use; the CLI prints it on one line and exits 2."""


def parse_duration(value: Any, key: str) -> float:
    """Go-style durations ("6h", "30m", "1h30m", "90s") or plain seconds, as Clair accepts."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ConfigError(f"{key}: not a duration: {value!r}")
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds < 0:
        raise ConfigError(f"{key}: duration must not be negative")
    return seconds


def parse_hostport(value: str, key: str) -> tuple[str, int]:
    """`host:port`, `:port` (all interfaces, as in Go) or `[v6]:port`."""
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def connstring_to_url(connstring: str, key: str) -> str:
    """A SQLAlchemy async URL from a libpq URL, libpq key=value string, or `sqlite:///path`."""
    text = (connstring or "").strip()
    if not text:
        raise ConfigError(f"{key}: empty connstring")
    if text.startswith("sqlite:"):
        path = text.removeprefix("sqlite:").removeprefix("//")
        if not path or path == "/":
            raise ConfigError(f"{key}: sqlite connstring needs a path (sqlite:///path/to/file.db)")
        return "sqlite+aiosqlite://" + path if path.startswith("/") else "sqlite+aiosqlite:///" + path
    for prefix in ("postgresql://", "postgres://"):
        if text.startswith(prefix):
            return "postgresql+asyncpg://" + text[len(prefix):]
    if "=" in text:
        pairs: dict[str, str] = {}
        for token in re.findall(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", text):
            name, raw = token
            pairs[name] = raw[1:-1].replace("\\'", "'") if raw.startswith("'") else raw
        user = quote(pairs.pop("user", ""), safe="")
        password = quote(pairs.pop("password", ""), safe="")
        host = pairs.pop("host", "localhost")
        port = pairs.pop("port", "5432")
        dbname = quote(pairs.pop("dbname", ""), safe="")
        sslmode = pairs.pop("sslmode", "")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        if host.startswith("/"):  # a unix socket directory
            url = f"postgresql+asyncpg://{auth}/{dbname}?host={quote(host)}&port={port}"
        else:
            url = f"postgresql+asyncpg://{auth}{host}:{port}/{dbname}"
        if sslmode and sslmode != "disable":
            url += ("&" if "?" in url else "?") + f"ssl={sslmode}"
        return url
    raise ConfigError(f"{key}: not a PostgreSQL or sqlite connstring: {connstring!r}")


def _section(raw: dict, name: str) -> dict:
    value = raw.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a mapping")
    return value


def _bool(section: dict, key: str, where: str, default: bool = False) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


@dataclass
class WebhookConfig:
    target: str
    callback: str
    headers: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ScannerConfig:
    http_listen_addr: tuple[str, int]
    introspection_addr: tuple[str, int] | None
    log_level: str
    indexer_url: str
    indexer_airgap: bool
    matcher_url: str
    matcher_period: float
    matcher_disable_updaters: bool
    matcher_indexer_addr: str
    matcher_cache_age: float
    update_retention: int
    updater_sets: list[str]
    updater_config: dict[str, dict[str, Any]]
    notifier_url: str
    notifier_poll_interval: float
    notifier_delivery_interval: float
    webhook: WebhookConfig | None
    psk_key: bytes | None
    psk_issuers: list[str]
    raw: dict[str, Any]
    data_dir: Path | None = None

    @property
    def updaters_configured(self) -> bool:
        return bool(self.updater_sets)


def _default_sqlite(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'scanner.db').resolve()}"


def parse_config(raw: dict[str, Any] | None, *, data_dir: Path | None = None) -> ScannerConfig:
    """Turn a loaded YAML mapping into a ScannerConfig, or raise ConfigError naming the key."""
    raw = dict(raw or {})
    if not isinstance(raw, dict):
        raise ConfigError("config: expected a mapping at the top level")
    indexer, matcher, notifier = _section(raw, "indexer"), _section(raw, "matcher"), _section(raw, "notifier")
    updaters, auth = _section(raw, "updaters"), _section(raw, "auth")
    if "keyserver" in auth:
        raise ConfigError("auth.keyserver: no longer supported; use auth.psk")

    default_conn = _default_sqlite(data_dir) if data_dir else None
    indexer_conn = indexer.get("connstring") or default_conn
    if not indexer_conn:
        raise ConfigError("indexer.connstring: required")
    matcher_conn = matcher.get("connstring") or indexer_conn
    notifier_conn = notifier.get("connstring") or matcher_conn

    listen = parse_hostport(raw.get("http_listen_addr") or DEFAULT_LISTEN, "http_listen_addr")
    introspection = raw.get("introspection_addr")
    log_level = str(raw.get("log_level") or "info").lower()
    if log_level not in {"debug", "info", "warn", "warning", "error", "debug-color"}:
        raise ConfigError(f"log_level: unknown level {log_level!r}")

    sets = updaters.get("sets")
    if sets is None:  # as in Clair: absent means the default set; [] means none
        sets = list(DEFAULT_UPDATER_SETS)
    if isinstance(sets, str) or not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
        raise ConfigError("updaters.sets: expected a list of updater names")
    from quaymaster.scanner.feeds.registry import KNOWN_UPDATERS

    unknown = [s for s in sets if s not in KNOWN_UPDATERS]
    if unknown:
        raise ConfigError(f"updaters.sets: unknown updater(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(KNOWN_UPDATERS))})")
    updater_config = updaters.get("config") or {}
    if not isinstance(updater_config, dict):
        raise ConfigError("updaters.config: expected a mapping of updater name to settings")

    webhook = None
    hook = notifier.get("webhook")
    if hook:
        if not isinstance(hook, dict) or not hook.get("target"):
            raise ConfigError("notifier.webhook.target: required when notifier.webhook is set")
        headers = hook.get("headers") or {}
        if not isinstance(headers, dict):
            raise ConfigError("notifier.webhook.headers: expected a mapping")
        webhook = WebhookConfig(
            target=str(hook["target"]),
            callback=str(hook.get("callback") or ""),
            headers={k: [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in headers.items()},
        )

    psk_key: bytes | None = None
    issuers: list[str] = []
    psk = auth.get("psk")
    if psk:
        if not isinstance(psk, dict) or not psk.get("key"):
            raise ConfigError("auth.psk.key: required when auth.psk is set")
        try:
            psk_key = base64.b64decode(str(psk["key"]), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("auth.psk.key: not valid base64") from None
        if not psk_key:
            raise ConfigError("auth.psk.key: decodes to an empty key")
        iss = psk.get("iss") or []
        issuers = [iss] if isinstance(iss, str) else [str(i) for i in iss]

    # Clair keeps 10; we store each operation's rows in full (no cross-operation dedupe), so keep
    # the two the notifier diffs unless told otherwise.
    retention = matcher.get("update_retention", 2)
    if not isinstance(retention, int) or isinstance(retention, bool) or retention < 2:
        raise ConfigError("matcher.update_retention: expected an integer >= 2")

    return ScannerConfig(
        http_listen_addr=listen,
        introspection_addr=parse_hostport(introspection, "introspection_addr") if introspection else None,
        log_level="warning" if log_level == "warn" else log_level.removesuffix("-color"),
        indexer_url=connstring_to_url(indexer_conn, "indexer.connstring"),
        indexer_airgap=_bool(indexer, "airgap", "indexer"),
        matcher_url=connstring_to_url(matcher_conn, "matcher.connstring"),
        matcher_period=parse_duration(matcher.get("period", "6h"), "matcher.period"),
        matcher_disable_updaters=_bool(matcher, "disable_updaters", "matcher"),
        matcher_indexer_addr=str(matcher.get("indexer_addr") or ""),
        matcher_cache_age=parse_duration(matcher.get("cache_age", 0), "matcher.cache_age"),
        update_retention=retention,
        updater_sets=list(sets),
        updater_config={str(k): (v or {}) for k, v in updater_config.items()},
        notifier_url=connstring_to_url(notifier_conn, "notifier.connstring"),
        notifier_poll_interval=parse_duration(notifier.get("poll_interval", "6h"), "notifier.poll_interval"),
        notifier_delivery_interval=parse_duration(notifier.get("delivery_interval", "1h"),
                                                  "notifier.delivery_interval"),
        webhook=webhook,
        psk_key=psk_key,
        psk_issuers=issuers,
        raw=raw,
        data_dir=data_dir,
    )


def load_config(path: Path | None) -> ScannerConfig:
    """Read FILE (YAML or JSON), or, with none, the embedded default under ./quaymaster-scanner-data/."""
    if path is None:
        data_dir = DEFAULT_DATA_DIR.resolve()
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return parse_config({}, data_dir=data_dir)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return parse_config(raw)
