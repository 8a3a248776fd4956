"""The mirroring rules that need no database: tag patterns, the configuration's validation, the
schedule grid, and the skopeo plumbing that keeps credentials private."""

import base64
import json
import os
import stat
from datetime import datetime, timedelta

import pytest

from quaymaster.mirroring import service
from quaymaster.mirroring.service import MirrorError, matching_tags, parse_changes, parse_external_reference
from quaymaster.mirroring.skopeo import Skopeo, scrub, subprocess_env, workspace

TAGS = ["latest", "v1.0", "v1.1", "v1.10", "v2.0", "dev-x", "dev-y", "V1.0", "v1a", "1.0-alpine"]
OWN = ["registry.example.com", "mirror-internal:8443"]


# --- tag patterns --------------------------------------------------------------------------------

@pytest.mark.parametrize(("globs", "expected"), [
    (["*"], sorted(TAGS)),
    (["v1.*"], ["v1.0", "v1.1", "v1.10"]),
    (["v1.?"], ["v1.0", "v1.1"]),
    (["dev-[xz]"], ["dev-x"]),
    (["dev-[!x]"], ["dev-y"]),
    (["v[0-9].0"], ["v1.0", "v2.0"]),
    (["v1.*", "latest"], ["latest", "v1.0", "v1.1", "v1.10"]),  # the union of the patterns
    (["latest", "lat*"], ["latest"]),  # a tag matched twice appears once
    (["nothing"], []),
])
def test_globs_match_as_fnmatch_over_the_union(globs, expected):
    assert matching_tags(TAGS, globs) == expected


def test_matching_is_case_sensitive_and_skips_invalid_tag_names():
    assert matching_tags(["V1.0", "v1.0"], ["v*"]) == ["v1.0"]
    assert matching_tags([".hidden", "-dash", "a" * 129, "ok"], ["*"]) == ["ok"]


def test_glob_list_validation():
    assert service.parse_globs(" v1.*, latest ,,") == ["v1.*", "latest"]
    assert service.parse_globs(["a", "a", "b"]) == ["a", "b"]
    for bad in ([], [""], "  ", None, [1], ["v 1"], ["a/b"], ["x" * 256], ["t"] * 0):
        with pytest.raises(MirrorError):
            service.parse_globs(bad)
    with pytest.raises(MirrorError, match="at most"):
        service.parse_globs([f"t{i}" for i in range(101)])
    with pytest.raises(MirrorError, match="tag_glob_csv"):
        service.parse_root_rule({"rule_kind": "regex", "rule_value": ["x"]})


# --- external reference and its safety -------------------------------------------------------------

@pytest.mark.parametrize(("text", "registry", "path"), [
    ("quay.io/projectquay/quay", "quay.io", "projectquay/quay"),
    ("127.0.0.1:5000/up/app", "127.0.0.1:5000", "up/app"),
    ("localhost/app", "localhost", "app"),
    ("[::1]:5000/a/b/c", "[::1]:5000", "a/b/c"),
    ("Registry.Example.COM/ns/my_repo-x", "registry.example.com", "ns/my_repo-x"),
])
def test_external_reference_grammar(text, registry, path):
    ref = parse_external_reference(text)
    assert (ref.registry, ref.path) == (registry, path)


@pytest.mark.parametrize(("text", "message"), [
    ("https://quay.io/ns/repo", "no scheme"),
    ("quay.io/ns/repo:latest", "not a tag"),
    ("quay.io/ns/repo@sha256:" + "a" * 64, "not a digest"),
    ("library/nginx", "registry host"),
    ("quay.io/NS/repo", "valid repository path"),
    ("quay.io", "host"),
    ("quay.io/", "host"),
    ("", "required"),
    ("quay.io:99999/ns/repo", "out of range"),
])
def test_external_reference_refusals(text, message):
    with pytest.raises(MirrorError, match=message):
        parse_external_reference(text)


@pytest.mark.parametrize("text", [
    "registry.example.com/ns/repo", "registry.example.com:443/ns/repo", "REGISTRY.example.com/ns/repo",
    "mirror-internal:8443/ns/repo", "169.254.169.254/latest/meta-data", "[fe80::1]/x", "0.0.0.0:5000/x",
])
def test_this_registry_and_link_local_sources_are_refused(text):
    with pytest.raises(MirrorError):
        service.check_reachable_safely(parse_external_reference(text), OWN)


def test_loopback_names_are_one_host():
    own = ["localhost:8080"]
    with pytest.raises(MirrorError, match="this registry"):
        service.check_reachable_safely(parse_external_reference("127.0.0.1:8080/a/b"), own)
    service.check_reachable_safely(parse_external_reference("127.0.0.1:5000/a/b"), own)
    service.check_reachable_safely(parse_external_reference("registry.example.com:5000/ns/repo"), OWN)


# --- the whole body --------------------------------------------------------------------------------

def _body(**overrides):
    body = {"external_reference": "quay.io/ns/repo", "sync_interval": 3600, "sync_start_date": "2026-01-02T03:04:05Z",
            "robot_username": "acme+bot", "root_rule": {"rule_kind": "tag_glob_csv", "rule_value": ["v1.*"]}}
    body.update(overrides)
    return body


def test_create_needs_the_required_fields():
    for name in service.REQUIRED_FIELDS:
        body = _body()
        del body[name]
        with pytest.raises(MirrorError, match=name):
            parse_changes(body, own_hostnames=OWN, creating=True)
    parse_changes({"sync_interval": 60}, own_hostnames=OWN, creating=False)  # an update may carry one field


def test_values_are_normalised():
    changes = parse_changes(_body(sync_start_date="2026-01-02T04:04:05+01:00", external_registry_username="u",
                                  external_registry_password="pw-XYZ", architecture_filter=["arm64", "amd64", "arm64"],
                                  external_registry_config={"verify_tls": False, "extra": 1,
                                                            "proxy": {"https_proxy": "http://proxy:3128"}}),
                            own_hostnames=OWN, creating=True)
    v = changes.values
    assert v["sync_start_date"] == datetime(2026, 1, 2, 3, 4, 5)
    assert v["architecture_filter"] == ["arm64", "amd64"]
    assert v["external_registry_config"] == {"verify_tls": False, "unsigned_images": False, "proxy": {
        "http_proxy": None, "https_proxy": "http://proxy:3128", "no_proxy": None}}
    assert (changes.username, changes.password, changes.robot_username) == ("u", "pw-XYZ", "acme+bot")
    assert "pw-XYZ" not in repr(changes)


@pytest.mark.parametrize(("override", "message"), [
    ({"sync_interval": 59}, "sync_interval"),
    ({"sync_interval": "often"}, "sync_interval"),
    ({"sync_interval": True}, "sync_interval"),
    ({"skopeo_timeout_interval": 299}, "skopeo_timeout_interval"),
    ({"skopeo_timeout_interval": 43201}, "skopeo_timeout_interval"),
    ({"sync_start_date": "tomorrow"}, "sync_start_date"),
    ({"architecture_filter": ["sparc"]}, "architecture_filter"),
    ({"architecture_filter": "amd64"}, "architecture_filter"),
    ({"external_registry_config": {"verify_tls": "yes"}}, "verify_tls"),
    ({"external_registry_config": {"proxy": {"http_proxy": "proxy:3128"}}}, "http_proxy"),
    ({"external_registry_config": {"proxy": {"no_proxy": "a\nb"}}}, "no_proxy"),
    ({"robot_username": "alice"}, "robot"),
    ({"external_registry_username": "a:b"}, "':'"),
    ({"is_enabled": "true"}, "is_enabled"),
    ({"external_reference": "registry.example.com/ns/repo"}, "this registry"),
])
def test_invalid_values_are_refused_with_the_field_named(override, message):
    with pytest.raises(MirrorError, match=message):
        parse_changes(_body(**override), own_hostnames=OWN, creating=True)


def test_next_start_stays_on_the_schedule_grid():
    start = datetime(2026, 1, 1, 0, 0, 0)
    now = datetime(2026, 1, 1, 2, 30, 0)
    assert service.next_start(start, 3600, now) == datetime(2026, 1, 1, 3, 0, 0)
    assert service.next_start(start, 3600, datetime(2026, 1, 1, 3, 0, 0)) == datetime(2026, 1, 1, 4, 0, 0)
    future = now + timedelta(days=1)
    assert service.next_start(future, 3600, now) == future
    assert service.next_start(None, 60, now) == now + timedelta(seconds=60)


# --- skopeo plumbing -------------------------------------------------------------------------------

def test_scrub_removes_secrets_and_their_base64_forms():
    pair = base64.b64encode(b"bob:s3cret-pass").decode()
    text = f"auth failed for s3cret-pass ({pair}) token TOKEN123"
    out = scrub(text, ["s3cret-pass", "bob:s3cret-pass", "TOKEN123", ""])
    assert "s3cret-pass" not in out and pair not in out and "TOKEN123" not in out and out.count("***") == 3


def test_workspace_is_private_and_removed_and_authfiles_are_0600():
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    with workspace([pem]) as (workdir, cert_dir):
        assert stat.S_IMODE(os.stat(workdir).st_mode) == 0o700
        assert sorted(p.name for p in cert_dir.iterdir()) == ["extra-0.crt"]
        skopeo = Skopeo("/bin/false", workdir, 300, {})
        path = skopeo.authfile("src", "quay.io", "bob", "s3cret")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        entry = json.loads(path.read_text())["auths"]["quay.io"]["auth"]
        assert base64.b64decode(entry) == b"bob:s3cret"
        assert "s3cret" in skopeo.secrets and "bob:s3cret" in skopeo.secrets
        anonymous = skopeo.authfile("anon", "quay.io", None, None)
        assert json.loads(anonymous.read_text()) == {"auths": {}}
    assert not workdir.exists()
    with workspace() as (_, no_certs):
        assert no_certs is None


def test_subprocess_env_uses_only_the_mirror_proxies(tmp_path, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://ambient:1")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", "/root/auth.json")
    env = subprocess_env({}, tmp_path)
    assert "HTTPS_PROXY" not in env and "REGISTRY_AUTH_FILE" not in env and env["HOME"] == str(tmp_path / "home")
    env = subprocess_env({"https_proxy": "http://proxy:3128", "no_proxy": "internal"}, tmp_path,
                         extra_no_proxy=["registry.local:8080"])
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://proxy:3128"
    assert env["NO_PROXY"] == "internal,registry.local:8080"


def test_sync_job_repr_hides_secrets():
    job = service.SyncJob(config_id=1, transaction_id="t", repository_id=1, namespace_id=1, namespace="acme",
                          repository="m", external_reference="quay.io/a/b", globs=("*",), architectures=(),
                          verify_tls=True, unsigned_images=False, proxy={"https_proxy": "http://u:pw@proxy"},
                          timeout_s=300, robot_id=2, robot_username="acme+bot", username="bob",
                          password="s3cret", robot_token="TOKEN")
    text = repr(job)
    assert "s3cret" not in text and "TOKEN" not in text and "pw@" not in text
    assert job.secrets() == ["s3cret", "TOKEN"]


def test_repomirror_once_refuses_when_the_feature_is_off(tmp_path):
    from click.testing import CliRunner

    from quaymaster.cli.main import main

    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "config.yaml").write_text(f"SERVER_HOSTNAME: localhost:1\nDB_URI: sqlite:///{tmp_path / 'x.db'}\n")
    result = CliRunner().invoke(main, ["repomirror", "--once", "--config-dir", str(config_dir)])
    assert result.exit_code == 1 and "FEATURE_REPO_MIRROR is off" in result.output
    assert not (tmp_path / "x.db").exists()  # refused before touching the database


def test_skopeo_errors_are_reduced_to_their_messages():
    from quaymaster.mirroring.skopeo import tidy_error

    stderr = ('time="2026-01-01T00:00:00Z" level=fatal msg="Error listing repository tags: unable to retrieve '
              'auth token: invalid username/password: unauthorized: \\"quay\\""\n')
    assert tidy_error(stderr) == ('Error listing repository tags: unable to retrieve auth token: '
                                  'invalid username/password: unauthorized: "quay"')
    assert tidy_error("  something else\n") == "something else"
