"""The validators against real services: PostgreSQL and redis-server from Debian, local storage,
a real HTTP listener, and certificates made on the spot."""

import asyncio
import http.server
import threading
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from click.testing import CliRunner
from support.certs import TestCA
from support.redisserver import redis_server
from support.servers import free_port

from quaymaster.cli.main import main
from quaymaster.settings.bundle import ConfigBundle
from quaymaster.settings.validators import (
    ValidationIssue,
    cert_matches_host,
    check_database,
    check_fields,
    check_redis,
    check_scanner,
    check_storage,
    check_tls,
    validate_bundle,
)


def base_config(tmp_path, **extra):
    return {
        "SERVER_HOSTNAME": "registry.example.com",
        "DB_URI": f"sqlite:///{tmp_path / 'q.db'}",
        "DISTRIBUTED_STORAGE_CONFIG": {"default": ["LocalStorage", {"storage_path": str(tmp_path / "storage")}]},
        "DISTRIBUTED_STORAGE_PREFERENCE": ["default"],
        "SECRET_KEY": "a", "DATABASE_SECRET_KEY": "b",
        **extra,
    }


def keys(issues):
    return [i.key for i in issues]


def run(coro):
    return asyncio.run(coro)


# --- formats -----------------------------------------------------------------------------------

def test_a_good_config_has_no_field_issues(tmp_path):
    assert check_fields(base_config(tmp_path)) == []


def test_missing_required_keys_are_each_named():
    issues = check_fields({})
    assert keys(issues) == ["SERVER_HOSTNAME", "DB_URI", "DISTRIBUTED_STORAGE_CONFIG",
                            "DISTRIBUTED_STORAGE_PREFERENCE", "SECRET_KEY", "DATABASE_SECRET_KEY"]


@pytest.mark.parametrize("extra,key,fragment", [
    ({"SERVER_HOSTNAME": "bad_host!"}, "SERVER_HOSTNAME", "not a hostname"),
    ({"SERVER_HOSTNAME": "registry.example.com:70000"}, "SERVER_HOSTNAME", "1 to 65535"),
    ({"SERVER_HOSTNAME": "https://registry.example.com"}, "SERVER_HOSTNAME", "without a scheme"),
    ({"MAXIMUM_LAYER_SIZE": "lots"}, "MAXIMUM_LAYER_SIZE", "not a size"),
    ({"DEFAULT_TAG_EXPIRATION": "2 weeks"}, "DEFAULT_TAG_EXPIRATION", "not a duration"),
    ({"DEFAULT_TAG_EXPIRATION": "3w"}, "DEFAULT_TAG_EXPIRATION", "one of TAG_EXPIRATION_OPTIONS"),
    ({"TAG_EXPIRATION_OPTIONS": ["1d", "soon"]}, "TAG_EXPIRATION_OPTIONS", "not a duration"),
    ({"BUILDLOGS_REDIS": {"port": 6379}}, "BUILDLOGS_REDIS.host", "required"),
    ({"USER_EVENTS_REDIS": {"host": "r", "port": "many"}}, "USER_EVENTS_REDIS.port", "integer"),
    ({"SECURITY_SCANNER_V4_ENDPOINT": "clair:8081"}, "SECURITY_SCANNER_V4_ENDPOINT", "not a URL"),
    ({"SECURITY_SCANNER_V4_PSK": "not base64!"}, "SECURITY_SCANNER_V4_PSK", "base64"),
    ({"FEATURE_SECURITY_SCANNER": True}, "SECURITY_SCANNER_V4_ENDPOINT", "required when"),
    ({"DB_URI": "oracle://x"}, "DB_URI", "unsupported database"),
    ({"DISTRIBUTED_STORAGE_PREFERENCE": ["eu"]}, "DISTRIBUTED_STORAGE_PREFERENCE", "not in"),
    ({"DISTRIBUTED_STORAGE_CONFIG": {"default": ["FooStorage", {}]}}, "DISTRIBUTED_STORAGE_CONFIG.default",
     "unsupported driver"),
    ({"FEATURE_USER_CREATION": "perhaps"}, "FEATURE_USER_CREATION", "boolean"),
])
def test_format_problems_name_their_key(tmp_path, extra, key, fragment):
    issues = check_fields(base_config(tmp_path, **extra))
    assert any(i.key == key and fragment in i.message for i in issues), issues


def test_storage_problems_are_reported_even_when_other_fields_fail(tmp_path):
    config = base_config(tmp_path, MAXIMUM_LAYER_SIZE="lots",
                         DISTRIBUTED_STORAGE_CONFIG={"default": ["FooStorage", {}]})
    assert {"MAXIMUM_LAYER_SIZE", "DISTRIBUTED_STORAGE_CONFIG.default"} <= set(keys(check_fields(config)))


def test_ldap_requires_its_keys(tmp_path):
    issues = check_fields(base_config(tmp_path, AUTHENTICATION_TYPE="LDAP", LDAP_URI="http://x"))
    assert {"LDAP_BASE_DN", "LDAP_ADMIN_DN", "LDAP_ADMIN_PASSWD", "LDAP_URI"} <= set(keys(issues))


def test_issue_prints_as_key_colon_message():
    assert str(ValidationIssue("DB_URI", "cannot connect")) == "DB_URI: cannot connect"


# --- TLS files -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca():
    return TestCA()


def tls_config(host="registry.example.com", scheme="https"):
    return {"SERVER_HOSTNAME": host, "PREFERRED_URL_SCHEME": scheme}


def test_matching_cert_and_key_pass(ca):
    issued = ca.issue("registry.example.com")
    assert check_tls(tls_config("registry.example.com:8443"), {"ssl.cert": issued.cert_pem + ca.cert_pem,
                                                                "ssl.key": issued.key_pem}) == []


def test_wildcard_and_ip_names(ca):
    issued = ca.issue("*.example.com", "127.0.0.1")
    files = {"ssl.cert": issued.cert_pem, "ssl.key": issued.key_pem}
    assert check_tls(tls_config("registry.example.com"), files) == []
    assert check_tls(tls_config("127.0.0.1:8443"), files) == []
    assert keys(check_tls(tls_config("a.b.example.com"), files)) == ["ssl.cert"]
    assert cert_matches_host("::1", [], ["0:0:0:0:0:0:0:1"])


def test_wrong_host_expired_and_mismatched_key(ca):
    good = ca.issue("other.example.com")
    issues = check_tls(tls_config(), {"ssl.cert": good.cert_pem, "ssl.key": good.key_pem})
    assert len(issues) == 1 and "not valid for SERVER_HOSTNAME registry.example.com" in issues[0].message

    now = datetime.now(UTC)
    old = ca.issue("registry.example.com", not_before=now - timedelta(days=3), not_after=now - timedelta(days=1))
    assert any("expired" in i.message for i in check_tls(tls_config(), {"ssl.cert": old.cert_pem,
                                                                          "ssl.key": old.key_pem}))
    future = ca.issue("registry.example.com", not_before=now + timedelta(days=1))
    assert any("not valid before" in i.message
               for i in check_tls(tls_config(), {"ssl.cert": future.cert_pem, "ssl.key": future.key_pem}))

    another = ca.issue("registry.example.com")
    issues = check_tls(tls_config(), {"ssl.cert": good.cert_pem, "ssl.key": another.key_pem})
    assert ValidationIssue("ssl.key", "does not match the certificate in ssl.cert") in issues


def test_missing_and_malformed_files(ca):
    issued = ca.issue("registry.example.com")
    assert keys(check_tls(tls_config(), {"ssl.cert": issued.cert_pem})) == ["ssl.key"]
    assert keys(check_tls(tls_config(), {"ssl.cert": b"junk", "ssl.key": issued.key_pem})) == ["ssl.cert"]
    assert keys(check_tls(tls_config(), {"ssl.cert": issued.cert_pem, "ssl.key": b"junk"})) == ["ssl.key"]
    assert "needed" in check_tls(tls_config(), {})[0].message  # https here, but no certificate
    assert check_tls(tls_config(scheme="http"), {}) == []
    assert check_tls({**tls_config(), "EXTERNAL_TLS_TERMINATION": True}, {}) == []
    no_san = ca.issue("registry.example.com", san=False)
    assert "subjectAltName" in check_tls(tls_config(), {"ssl.cert": no_san.cert_pem,
                                                        "ssl.key": no_san.key_pem})[0].message
    assert keys(check_tls(tls_config(scheme="http"), {"extra_ca_certs/x.crt": b"nope"})) == ["extra_ca_certs/x.crt"]


# --- database ------------------------------------------------------------------------------------

def test_sqlite(tmp_path):
    assert run(check_database({"DB_URI": f"sqlite:///{tmp_path / 'new.db'}"})) == []
    assert not (tmp_path / "new.db").exists()  # validation creates nothing
    issues = run(check_database({"DB_URI": f"sqlite:///{tmp_path / 'nodir' / 'x.db'}"}))
    assert keys(issues) == ["DB_URI"] and "does not exist" in issues[0].message
    import sqlite3

    conn = sqlite3.connect(tmp_path / "future.db")
    conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
    conn.execute("INSERT INTO alembic_version VALUES ('9999')")
    conn.commit()
    conn.close()
    issues = run(check_database({"DB_URI": f"sqlite:///{tmp_path / 'future.db'}"}))
    assert keys(issues) == ["DB_URI"] and "revision 9999" in issues[0].message


@pytest.mark.postgres
def test_postgres_connects_reads_revision_and_checks_pg_trgm(postgres):
    uri = postgres.create_database("validate_ok")
    assert run(check_database({"DB_URI": uri})) == []
    # The check proved pg_trgm could be created without leaving it behind.
    assert postgres.psql("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'", "validate_ok").strip() == "0"

    postgres.psql("CREATE TABLE alembic_version (version_num VARCHAR(32)); "
                  "INSERT INTO alembic_version VALUES ('zzzz')", "validate_ok")
    issues = run(check_database({"DB_URI": uri}))
    assert keys(issues) == ["DB_URI"] and "revision zzzz" in issues[0].message


@pytest.mark.postgres
def test_postgres_user_who_may_not_create_pg_trgm(postgres):
    postgres.create_database("validate_trgm")
    postgres.psql("DO $$ BEGIN CREATE ROLE plain LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    uri = f"postgresql://plain@{postgres.host}:{postgres.port}/validate_trgm"
    issues = run(check_database({"DB_URI": uri}))
    assert keys(issues) == ["DB_URI"] and "pg_trgm" in issues[0].message and "permission denied" in issues[0].message
    postgres.psql("CREATE EXTENSION pg_trgm", "validate_trgm")  # once an administrator made it, all is well
    assert run(check_database({"DB_URI": uri})) == []


@pytest.mark.postgres
def test_postgres_unreachable_and_unknown_database(postgres):
    issues = run(check_database({"DB_URI": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}))
    assert keys(issues) == ["DB_URI"] and "cannot connect" in issues[0].message
    issues = run(check_database({"DB_URI": postgres.dsn("no_such_database")}))
    assert keys(issues) == ["DB_URI"] and "no_such_database" in issues[0].message


# --- redis -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


def test_redis_ping_with_password(redis):
    assert run(check_redis({"BUILDLOGS_REDIS": redis.config(), "USER_EVENTS_REDIS": redis.config()})) == []
    issues = run(check_redis({"BUILDLOGS_REDIS": redis.config("wrong"), "USER_EVENTS_REDIS": redis.config("")}))
    assert keys(issues) == ["BUILDLOGS_REDIS", "USER_EVENTS_REDIS"]
    assert "refused the password" in issues[0].message and "requires a password" in issues[1].message


def test_redis_unreachable():
    issues = run(check_redis({"USER_EVENTS_REDIS": {"host": "127.0.0.1", "port": free_port()}}))
    assert keys(issues) == ["USER_EVENTS_REDIS"] and "cannot reach Redis" in issues[0].message
    assert run(check_redis({})) == []  # not configured: events stay in-process


# --- storage and scanner ---------------------------------------------------------------------------

def test_local_storage_round_trip_leaves_nothing(tmp_path):
    config = base_config(tmp_path)
    assert run(check_storage(config)) == []
    assert not [p for p in (tmp_path / "storage").rglob("*") if p.is_file()]


def test_storage_that_cannot_be_written(tmp_path):
    (tmp_path / "a-file").write_text("x")
    config = base_config(tmp_path, DISTRIBUTED_STORAGE_CONFIG={
        "default": ["LocalStorage", {"storage_path": str(tmp_path / "storage")}],
        "broken": ["LocalStorage", {"storage_path": str(tmp_path / "a-file" / "below")}],
    })
    issues = run(check_storage(config))
    assert keys(issues) == ["DISTRIBUTED_STORAGE_CONFIG.broken"]


@pytest.fixture
def http_endpoint():
    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_scanner_endpoint_answers_any_status(http_endpoint):
    assert run(check_scanner({"SECURITY_SCANNER_V4_ENDPOINT": http_endpoint})) == []
    issues = run(check_scanner({"SECURITY_SCANNER_V4_ENDPOINT": f"http://127.0.0.1:{free_port()}"}))
    assert keys(issues) == ["SECURITY_SCANNER_V4_ENDPOINT"] and "no HTTP answer" in issues[0].message
    assert run(check_scanner({})) == []


# --- everything, and the command -------------------------------------------------------------------

@pytest.mark.postgres
def test_validate_bundle_against_every_service(tmp_path, postgres, redis, http_endpoint):
    config = base_config(tmp_path, DB_URI=postgres.create_database("validate_all"),
                         BUILDLOGS_REDIS=redis.config(), USER_EVENTS_REDIS=redis.config(),
                         SECURITY_SCANNER_V4_ENDPOINT=http_endpoint)
    assert run(validate_bundle(ConfigBundle(config))) == []
    config["USER_EVENTS_REDIS"] = redis.config("wrong")
    config["DB_URI"] = f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    assert keys(run(validate_bundle(ConfigBundle(config)))) == ["DB_URI", "USER_EVENTS_REDIS"]


def test_config_validate_command(tmp_path):
    conf = tmp_path / "config"
    conf.mkdir()
    (conf / "config.yaml").write_text(yaml.safe_dump(base_config(tmp_path)))
    result = CliRunner().invoke(main, ["config", "validate", "--config-dir", str(conf)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "configuration is valid"

    bad = base_config(tmp_path, SERVER_HOSTNAME="bad host", BUILDLOGS_REDIS={"host": "127.0.0.1",
                                                                              "port": free_port()})
    (conf / "config.yaml").write_text(yaml.safe_dump(bad))
    result = CliRunner().invoke(main, ["config", "validate", "--config-dir", str(conf)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("SERVER_HOSTNAME: ") and lines[1].startswith("BUILDLOGS_REDIS: cannot reach Redis")

    result = CliRunner().invoke(main, ["config", "validate", "--config-dir", str(tmp_path / "none")])
    assert result.exit_code == 2 and "not found" in result.output
