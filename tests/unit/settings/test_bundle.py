"""quay-config.tar.gz: built from a config dir, unpacked by real tar into a dir the loader starts from,
and read back without trusting its contents."""

import io
import os
import shutil
import stat
import subprocess
import tarfile

import pytest
from support.env import missing_dependency
import yaml

from quaymaster.settings import load_settings
from quaymaster.settings.bundle import (
    BundleError,
    ConfigBundle,
    build_tarball,
    check_file_name,
    extract_tarball,
    read_config_dir,
    read_tarball,
)

CONFIG = {
    "SERVER_HOSTNAME": "registry.example.com",
    "DB_URI": "sqlite:///quaymaster.db",
    "DISTRIBUTED_STORAGE_CONFIG": {"default": ["LocalStorage", {"storage_path": "storage"}]},
    "DISTRIBUTED_STORAGE_PREFERENCE": ["default"],
    "SECRET_KEY": "s1", "DATABASE_SECRET_KEY": "s2",
    "SOME_FUTURE_KEY": {"kept": [1, 2, 3]},
}


def make_config_dir(path):
    (path / "extra_ca_certs").mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    (path / "ssl.cert").write_bytes(b"CERT")
    (path / "ssl.key").write_bytes(b"KEY")
    (path / "extra_ca_certs" / "corp.crt").write_bytes(b"CA1")
    (path / "notes.txt").write_text("not part of the bundle")
    return path


def test_config_dir_round_trips_through_real_tar(tmp_path):
    bundle = read_config_dir(make_config_dir(tmp_path / "conf"))
    assert sorted(bundle.files) == ["extra_ca_certs/corp.crt", "ssl.cert", "ssl.key"]
    archive = tmp_path / "quay-config.tar.gz"
    archive.write_bytes(build_tarball(bundle))

    if not shutil.which("tar"):
        missing_dependency("tar not installed")
    listing = subprocess.run(["tar", "tzvf", str(archive)], capture_output=True, text=True, check=True).stdout
    assert "config.yaml" in listing and "extra_ca_certs/" in listing
    out = tmp_path / "unpacked" / "config"
    out.mkdir(parents=True)
    subprocess.run(["tar", "xvf", str(archive)], cwd=out, check=True, capture_output=True)
    assert (out / "ssl.cert").read_bytes() == b"CERT"
    assert (out / "extra_ca_certs" / "corp.crt").read_bytes() == b"CA1"
    assert stat.S_IMODE(os.stat(out / "ssl.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out / "config.yaml").st_mode) == 0o600
    settings = load_settings(out)  # the registry starts from it
    assert settings.SERVER_HOSTNAME == "registry.example.com"
    assert settings.DB_URI == f"sqlite:///{tmp_path / 'unpacked' / 'quaymaster.db'}"
    assert settings.model_extra["SOME_FUTURE_KEY"] == {"kept": [1, 2, 3]}


def test_read_tarball_gives_back_what_was_built(tmp_path):
    bundle = ConfigBundle(dict(CONFIG), {"ssl.cert": b"C", "extra_ca_certs/a.pem": b"A"})
    again = read_tarball(build_tarball(bundle))
    assert again.config == CONFIG and again.files == bundle.files
    extract_tarball(build_tarball(bundle), tmp_path / "x")
    assert read_config_dir(tmp_path / "x").files == bundle.files


def _tar(*members) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize("member,complaint", [
    (_file("/etc/cron.d/evil"), "absolute"),
    (_file("../config.yaml"), "'..'"),
    (_file("extra_ca_certs/../../escape"), "'..'"),
    (_link("ssl.cert", "/etc/shadow"), "links"),
    (_link("ssl.key", "config.yaml", tarfile.LNKTYPE), "links"),
    (_link("extra_ca_certs", "/etc"), "links"),
])
def test_unsafe_members_are_refused(member, complaint, tmp_path):
    data = _tar(_file("config.yaml", b"SERVER_HOSTNAME: h\n"), member)
    with pytest.raises(BundleError, match=complaint):
        read_tarball(data)
    with pytest.raises(BundleError):
        extract_tarball(data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_device_files_and_garbage_are_refused():
    fifo = tarfile.TarInfo("ssl.cert")
    fifo.type = tarfile.FIFOTYPE
    with pytest.raises(BundleError, match="regular files"):
        read_tarball(_tar(_file("config.yaml", b"{}"), (fifo, None)))
    with pytest.raises(BundleError, match="not a tar"):
        read_tarball(b"definitely not a tarball")
    with pytest.raises(BundleError, match="no config.yaml"):
        read_tarball(_tar(_file("ssl.cert")))
    with pytest.raises(BundleError, match="mapping"):
        read_tarball(_tar(_file("config.yaml", b"- a list\n")))


def test_leading_dot_slash_and_unknown_names():
    data = _tar(_file("./config.yaml", b"A: 1\n"), _file("./ssl.cert", b"C"), _file("deep/dir/file", b"?"))
    bundle = read_tarball(data)
    assert bundle.config == {"A": 1} and bundle.files == {"ssl.cert": b"C"}


@pytest.mark.parametrize("name", ["ssl.cert", "ssl.key", "ldap.crt", "extra_ca_certs/corp-ca.crt"])
def test_certificate_names_accepted(name):
    assert check_file_name(name) == name


@pytest.mark.parametrize("name", ["../x", "/etc/x", "extra_ca_certs/../x", "extra_ca_certs/a/b", "config.yaml",
                                  ".hidden", "a b"])
def test_certificate_names_refused(name):
    with pytest.raises(BundleError):
        check_file_name(name)


# --- the combined CA bundle for outbound TLS (settings/tls.py) ------------------------------------

def test_extra_ca_certs_join_the_system_and_env_bundles(tmp_path):
    from support.certs import TestCA

    from quaymaster.settings.tls import (
        CA_ENV_VARS,
        client_ssl_context,
        install_ca_bundle,
        system_ca_bundle,
    )

    corp, env_ca = TestCA("Corp CA"), TestCA("Env CA")
    conf = tmp_path / "config"
    (conf / "extra_ca_certs").mkdir(parents=True)
    (conf / "extra_ca_certs" / "corp.crt").write_bytes(corp.cert_pem)
    (conf / "extra_ca_certs" / "README").write_text("not a certificate")
    env_file = tmp_path / "env-ca.pem"
    env_file.write_bytes(env_ca.cert_pem)
    environ = {"SSL_CERT_FILE": str(env_file)}

    path = install_ca_bundle(conf, environ)
    assert path is not None and all(environ[var] == str(path) for var in CA_ENV_VARS)
    combined = path.read_bytes()
    assert corp.cert_pem in combined and env_ca.cert_pem in combined
    system = system_ca_bundle()
    if system is not None:
        assert system.read_bytes().strip() in combined
    assert len(client_ssl_context([corp.cert_pem]).get_ca_certs()) >= 1

    assert install_ca_bundle(tmp_path / "no-extra", environ={}) is None  # nothing to add: env untouched
