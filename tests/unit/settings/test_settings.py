"""config.yaml loading: Quay keys, defaults, unknown keys kept, one-line errors naming the key."""

import os

import pytest
import yaml

from quaymaster.settings import ConfigError, load_settings
from quaymaster.settings.loader import add_superuser
from quaymaster.settings.units import parse_duration, parse_size


def write(config_dir, data):
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.yaml").write_text(yaml.safe_dump(data))


def test_first_run_writes_embedded_default(tmp_path):
    config_dir = tmp_path / "data" / "config"
    settings = load_settings(config_dir, create=True, port=9000)
    assert settings.SERVER_HOSTNAME == "localhost:9000"
    assert settings.DB_URI == f"sqlite:///{tmp_path / 'data' / 'quaymaster.db'}"
    assert settings.storage_locations[0].params["storage_path"] == str(tmp_path / "data" / "storage")
    assert len(settings.SECRET_KEY) > 30 and settings.SECRET_KEY != settings.DATABASE_SECRET_KEY
    assert oct(os.stat(config_dir / "config.yaml").st_mode & 0o777) == "0o600"
    again = load_settings(config_dir, create=True)
    assert again.SECRET_KEY == settings.SECRET_KEY  # second start reuses it


def test_missing_config_without_create(tmp_path):
    with pytest.raises(ConfigError, match="config.yaml not found"):
        load_settings(tmp_path / "nope")


def test_quay_config_with_unknown_keys_loads(tmp_path):
    write(tmp_path / "config", {
        "SERVER_HOSTNAME": "quay.example.com", "PREFERRED_URL_SCHEME": "https",
        "DB_URI": "postgresql://quay:pw@db.example.com:5432/quay",
        "DB_CONNECTION_ARGS": {"sslmode": "require"},
        "DISTRIBUTED_STORAGE_CONFIG": {"default": ["LocalStorage", {"storage_path": "/datastorage/registry"}]},
        "DISTRIBUTED_STORAGE_PREFERENCE": ["default"], "SECRET_KEY": "a", "DATABASE_SECRET_KEY": "b",
        "SUPER_USERS": ["quayadmin"], "BUILDLOGS_REDIS": {"host": "redis"}, "FEATURE_MAILING": False,
        "MAXIMUM_LAYER_SIZE": "20G", "CREATE_NAMESPACE_ON_PUSH": True,
    })
    s = load_settings(tmp_path / "config")
    assert s.base_url == "https://quay.example.com"
    assert s.BUILDLOGS_REDIS.host == "redis" and s.BUILDLOGS_REDIS.port == 6379  # a typed key now
    assert s.model_extra["FEATURE_MAILING"] is False
    assert s.max_layer_bytes == 20 * 1024**3
    assert s.is_superuser("quayadmin") and not s.is_superuser("other")


def test_relative_paths_are_relative_to_the_data_dir(tmp_path):
    write(tmp_path / "config", {"DB_URI": "sqlite:///db.sqlite", "SECRET_KEY": "a", "DATABASE_SECRET_KEY": "b",
                                "DISTRIBUTED_STORAGE_CONFIG": {"default": ["LocalStorage", {"storage_path": "blobs"}]}})
    s = load_settings(tmp_path / "config")
    assert s.DB_URI == f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert s.storage_locations[0].params["storage_path"] == str(tmp_path / "blobs")


def test_missing_secrets_are_generated_once_and_saved(tmp_path):
    write(tmp_path / "config", {"SERVER_HOSTNAME": "h:1"})
    first = load_settings(tmp_path / "config")
    saved = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    assert saved["SECRET_KEY"] == first.SECRET_KEY and "DB_URI" not in saved


@pytest.mark.parametrize("data,message", [
    ({"DB_URI": "mysql+pymysql://x"}, "DB_URI: unsupported database 'mysql'"),
    ({"MAXIMUM_LAYER_SIZE": "lots"}, "MAXIMUM_LAYER_SIZE: 'lots' is not a size"),
    ({"FEATURE_USER_CREATION": "perhaps"}, "FEATURE_USER_CREATION:"),
    ({"SERVER_HOSTNAME": "http://x"}, "SERVER_HOSTNAME: must be host[:port]"),
    ({"PREFERRED_URL_SCHEME": "ftp"}, "PREFERRED_URL_SCHEME:"),
    ({"DEFAULT_TAG_EXPIRATION": "2 weeks"}, "DEFAULT_TAG_EXPIRATION:"),
    ({"DISTRIBUTED_STORAGE_PREFERENCE": ["eu"]}, "DISTRIBUTED_STORAGE_PREFERENCE: 'eu' is not in"),
    ({"DISTRIBUTED_STORAGE_CONFIG": {"default": ["FooStorage", {}]}}, "DISTRIBUTED_STORAGE_CONFIG.default: unsupported driver"),
])
def test_wrong_values_name_the_key(tmp_path, data, message):
    write(tmp_path / "config", {"SECRET_KEY": "a", "DATABASE_SECRET_KEY": "b", **data})
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path / "config")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_invalid_yaml(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("SERVER_HOSTNAME: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(tmp_path / "config")


def test_add_superuser_keeps_other_keys(tmp_path):
    write(tmp_path / "config", {"SUPER_USERS": ["a"], "CUSTOM": {"x": 1}})
    assert add_superuser(tmp_path / "config", "b")
    assert not add_superuser(tmp_path / "config", "b")
    saved = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    assert saved == {"SUPER_USERS": ["a", "b"], "CUSTOM": {"x": 1}}


def test_units():
    assert parse_size("20G") == 20 * 1024**3 and parse_size("512M") == 512 * 1024**2
    assert parse_size(1234) == 1234 and parse_size("10MiB") == 10 * 1024**2
    assert parse_duration("2w") == 1209600 and parse_duration("0s") == 0
    for bad in ("-1", "1.5G", "G"):
        with pytest.raises(ValueError):
            parse_size(bad)
