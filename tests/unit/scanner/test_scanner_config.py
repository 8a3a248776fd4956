"""Clair-style config parsing: defaults, durations, connstrings, one-line errors."""

import base64

import pytest

from quaymaster.scanner.config import ConfigError, connstring_to_url, load_config, parse_config, parse_duration


def test_defaults_without_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None)
    assert cfg.http_listen_addr == ("127.0.0.1", 8081)
    assert cfg.indexer_url == f"sqlite+aiosqlite:///{tmp_path}/quaymaster-scanner-data/scanner.db"
    assert cfg.matcher_url == cfg.indexer_url == cfg.notifier_url
    assert cfg.updater_sets == ["osv", "debian", "alpine"] and cfg.psk_key is None  # Clair's default sets
    assert parse_config({"updaters": {"sets": []}}, data_dir=tmp_path).updater_sets == []  # an explicit empty list means none


def test_full_config(tmp_path):
    path = tmp_path / "config.yaml"
    key = base64.b64encode(b"0123456789abcdef").decode()
    path.write_text(f"""
http_listen_addr: ":6060"
introspection_addr: 127.0.0.1:8089
log_level: debug
indexer: {{connstring: "host=db port=5433 user=clair dbname=clair sslmode=disable", airgap: true}}
matcher: {{connstring: "postgresql://clair:pw@db/matcher", period: 1h30m, disable_updaters: true}}
updaters: {{sets: [osv, debian], config: {{osv: {{url: /feeds/osv}}}}}}
notifier:
  poll_interval: 5m
  webhook: {{target: http://quay/secscan/notification, callback: http://clair/notifier/api/v1/notification}}
auth: {{psk: {{key: {key}, iss: [quay, clairctl]}}}}
trace: {{name: jaeger}}
""")
    cfg = load_config(path)
    assert cfg.http_listen_addr == ("0.0.0.0", 6060)
    assert cfg.indexer_url == "postgresql+asyncpg://clair@db:5433/clair"
    assert cfg.matcher_url == "postgresql+asyncpg://clair:pw@db/matcher"
    assert cfg.notifier_url == cfg.matcher_url
    assert cfg.matcher_period == 5400 and cfg.notifier_poll_interval == 300
    assert cfg.indexer_airgap and cfg.matcher_disable_updaters
    assert cfg.psk_key == b"0123456789abcdef" and cfg.psk_issuers == ["quay", "clairctl"]
    assert cfg.raw["trace"] == {"name": "jaeger"}  # unknown keys are kept


@pytest.mark.parametrize("raw,message", [
    ({"http_listen_addr": "nowhere"}, "http_listen_addr"),
    ({"indexer": {"connstring": "mysql://x"}}, "indexer.connstring"),
    ({"matcher": {"period": "soon"}}, "matcher.period"),
    ({"updaters": {"sets": ["nope"]}}, "unknown updater"),
    ({"auth": {"psk": {"key": "***"}}}, "base64"),
    ({"auth": {"keyserver": {}}}, "keyserver"),
    ({"indexer": {"airgap": "yes"}}, "indexer.airgap"),
])
def test_bad_values_name_the_key(raw, message):
    raw.setdefault("indexer", {}).setdefault("connstring", "sqlite:///tmp/x.db")
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_connstrings_and_durations():
    assert connstring_to_url("sqlite:///var/lib/s.db", "k") == "sqlite+aiosqlite:///var/lib/s.db"
    assert connstring_to_url("postgres://u@h/d", "k") == "postgresql+asyncpg://u@h/d"
    assert parse_duration("6h", "k") == 21600 and parse_duration(30, "k") == 30 and parse_duration("500ms", "k") == 0.5
