"""config.yaml in Quay's keys: the model, its loading, defaults and first-run generation."""

from quaymaster.settings.model import ConfigError, Settings, StorageLocation
from quaymaster.settings.loader import DEFAULT_CONFIG_DIR, load_settings

__all__ = ["ConfigError", "Settings", "StorageLocation", "DEFAULT_CONFIG_DIR", "load_settings"]
