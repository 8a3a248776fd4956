"""Package database and release-file parsers, on real and real-format inputs."""

from support.scannerimages import APK_INSTALLED, DATA, PYYAML_METADATA, URLLIB3_METADATA

from quaymaster.scanner.indexer import detectors as d


def test_dpkg_status_of_a_debian_12_system():
    pkgs = d.parse_dpkg_status((DATA / "dpkg" / "bookworm.status").read_bytes(), "var/lib/dpkg/status")
    by_name = {p["name"]: p for p in pkgs}
    assert len(pkgs) == 10
    assert by_name["libsystemd0"]["source"] == {"name": "systemd", "version": by_name["libsystemd0"]["version"]}
    assert by_name["coreutils"]["source"] == {"name": "coreutils", "version": "9.1-1"}
    assert by_name["zlib1g"]["version"] == "1:1.2.13.dfsg-1"


def test_dpkg_source_with_explicit_version():
    pkgs = d.parse_dpkg_status((DATA / "dpkg" / "postgresql.status").read_bytes(), "var/lib/dpkg/status")
    sources = {p["source"]["name"]: p["source"]["version"] for p in pkgs}
    assert sources["postgresql-common"] == "200+deb10u5"


def test_dpkg_skips_packages_not_installed():
    text = b"Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\nPackage: here\nStatus: install ok installed\nVersion: 2.0\n"
    assert [p["name"] for p in d.parse_dpkg_status(text, "x")] == ["here"]


def test_vcpkg_status_path_is_not_a_dpkg_database():
    assert not d.DPKG_STATUS.match("installed/vcpkg/status")
    assert d.DPKG_STATUS.match("var/lib/dpkg/status")


def test_apk_installed():
    pkgs = d.parse_apk_installed(APK_INSTALLED)
    assert [(p["name"], p["version"], p["source"]["name"]) for p in pkgs] == [
        ("musl", "1.1.24-r2", "musl"), ("libssl1.1", "1.1.1d-r3", "openssl"), ("busybox", "1.31.1-r9", "busybox")]


def test_python_metadata_names_are_normalised():
    site = "usr/lib/python3/site-packages"
    yaml_pkg = d.parse_python_metadata(PYYAML_METADATA, site, site + "/pyyaml-5.3.dist-info")
    assert (yaml_pkg["name"], yaml_pkg["version"], yaml_pkg["package_db"]) == ("pyyaml", "5.3", "python:" + site)
    assert d.parse_python_metadata(URLLIB3_METADATA, site, "x")["normalized_version"] == "pep440:0.1.24.1.0.0.0.0.0.0"
    assert d.parse_python_metadata(b"Summary: nothing\n", site, "x") is None
    assert d.is_system_installer(b"dpkg\n") and not d.is_system_installer(b"pip\n")


def test_os_release_files():
    deb = d.parse_os_release((DATA / "os-release" / "debian-12").read_bytes())
    assert deb == {"did": "debian", "name": "Debian GNU/Linux", "version": "12 (bookworm)",
                   "version_code_name": "bookworm", "version_id": "12", "arch": "", "cpe": "",
                   "pretty_name": "Debian GNU/Linux 12 (bookworm)"}
    ubuntu = d.parse_os_release((DATA / "os-release" / "ubuntu-22.04").read_bytes())
    assert (ubuntu["did"], ubuntu["version_id"], ubuntu["version_code_name"]) == ("ubuntu", "22.04", "jammy")
    lucid = d.parse_lsb_release((DATA / "os-release" / "ubuntu-10.04-lsb-release").read_bytes())
    assert (lucid["did"], lucid["version_id"], lucid["version_code_name"]) == ("ubuntu", "10.04", "lucid")
    alpine = d.parse_os_release((DATA / "os-release" / "alpine-3.11").read_bytes())
    assert (alpine["did"], alpine["version_id"]) == ("alpine", "3.11.6")
    assert d.parse_os_release(b"# nothing\n") is None
