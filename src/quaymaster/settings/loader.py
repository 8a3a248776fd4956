"""Finding, creating and loading config.yaml; first run writes the embedded default."""

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from quaymaster.settings.model import ConfigError, Settings, settings_from_dict

log = logging.getLogger(__name__)

DEFAULT_CONFIG_DIR = Path("quaymaster-data") / "config"
CONFIG_FILE = "config.yaml"


def _embedded_default(config_dir: Path, port: int = 8080) -> dict[str, Any]:
    """A config for one machine: SQLite and local storage beside the config dir, fresh secrets."""
    data_dir = config_dir.resolve().parent
    return {
        "SERVER_HOSTNAME": f"localhost:{port}",
        "PREFERRED_URL_SCHEME": "http",
        "SETUP_COMPLETE": True,
        "DB_URI": f"sqlite:///{data_dir / 'quaymaster.db'}",
        "DISTRIBUTED_STORAGE_CONFIG": {
            "default": ["LocalStorage", {"storage_path": str(data_dir / "storage")}]
        },
        "DISTRIBUTED_STORAGE_PREFERENCE": ["default"],
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_SECRET_KEY": secrets.token_urlsafe(48),
        "SUPER_USERS": [],
        "FEATURE_USER_CREATION": True,
        "FEATURE_ANONYMOUS_ACCESS": True,
        "CREATE_PRIVATE_REPO_ON_PUSH": True,
        "CREATE_NAMESPACE_ON_PUSH": False,
        "MAXIMUM_LAYER_SIZE": "20G",
        "FEATURE_REFERRERS_API": True,
        "DEFAULT_TAG_EXPIRATION": "2w",
        "TAG_EXPIRATION_OPTIONS": ["0s", "1d", "1w", "2w", "4w"],
    }


def read_config_file(config_dir: Path) -> dict[str, Any]:
    path = config_dir / CONFIG_FILE
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def write_config_file(config_dir: Path, data: dict[str, Any]) -> None:
    """Write atomically with owner-only permissions: the file holds secrets."""
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / CONFIG_FILE
    tmp = path.with_suffix(".yaml.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(data, fh, default_flow_style=False, sort_keys=False)
    os.replace(tmp, path)


def _resolve_paths(data: dict[str, Any], config_dir: Path) -> dict[str, Any]:
    """Relative SQLite and storage paths are taken relative to the config dir's parent (the data dir)."""
    base = config_dir.resolve().parent
    out = dict(data)
    uri = str(out.get("DB_URI", ""))
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////") and uri != "sqlite:///:memory:":
        out["DB_URI"] = f"sqlite:///{base / uri.removeprefix('sqlite:///')}"
    storage = {}
    for name, entry in (out.get("DISTRIBUTED_STORAGE_CONFIG") or {}).items():
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], dict):
            params = dict(entry[1])
            sp = params.get("storage_path")
            if entry[0] == "LocalStorage" and isinstance(sp, str) and sp and not os.path.isabs(sp):
                params["storage_path"] = str(base / sp)
            entry = [entry[0], params]
        storage[name] = entry
    if storage:
        out["DISTRIBUTED_STORAGE_CONFIG"] = storage
    return out


def load_settings(config_dir: Path | str | None = None, *, create: bool = False, port: int = 8080) -> Settings:
    """Load config_dir/config.yaml (creating the embedded default when asked); raise ConfigError."""
    config_dir = Path(config_dir) if config_dir else DEFAULT_CONFIG_DIR
    path = config_dir / CONFIG_FILE
    if not path.exists():
        if not create:
            raise ConfigError(
                f"{path} not found; start `quaymaster registry` once to create it, or pass --config-dir"
            )
        write_config_file(config_dir, _embedded_default(config_dir, port))
        log.info("created %s with the embedded default (SQLite, local storage)", path)
    data = read_config_file(config_dir)
    missing = [k for k in ("SECRET_KEY", "DATABASE_SECRET_KEY") if not data.get(k)]
    if missing:
        # Every node must share these; generating them per process would break sessions and tokens.
        for key in missing:
            data[key] = secrets.token_urlsafe(48)
        write_config_file(config_dir, data)
        log.warning("generated %s and saved them to %s", ", ".join(missing), path)
    # Keys left out fall back to the embedded default's locations beside the config dir,
    # never to the current directory.
    defaults = _embedded_default(config_dir, port)
    for key in ("DB_URI", "DISTRIBUTED_STORAGE_CONFIG", "DISTRIBUTED_STORAGE_PREFERENCE"):
        data.setdefault(key, defaults[key])
    override = os.environ.get("QUAY_OVERRIDE_CONFIG")
    if override:
        try:
            data.update(json.loads(override))
        except (ValueError, TypeError):
            raise ConfigError("QUAY_OVERRIDE_CONFIG: not a JSON object") from None
    settings = settings_from_dict(_resolve_paths(data, config_dir))
    settings.__dict__["config_dir"] = config_dir.resolve()
    return settings


def add_superuser(config_dir: Path, username: str) -> bool:
    """Append a name to SUPER_USERS in config.yaml; returns False when already there."""
    data = read_config_file(config_dir)
    users = list(data.get("SUPER_USERS") or [])
    if username in users:
        return False
    data["SUPER_USERS"] = users + [username]
    write_config_file(config_dir, data)
    return True
