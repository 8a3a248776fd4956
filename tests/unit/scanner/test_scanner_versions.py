"""Version ordering per ecosystem, and Clair's affected-range rule."""

import pytest

from quaymaster.scanner.matcher import apkversion, semver
from quaymaster.scanner.matcher.versions import affected, compare, pep440_normalized


@pytest.mark.parametrize("lower,higher", [
    ("1.0", "1.0.1"), ("1.0_rc1", "1.0"), ("1.0_alpha", "1.0_beta"), ("1.0_beta2", "1.0_pre1"),
    ("1.0_pre1", "1.0_rc1"), ("1.0", "1.0_p1"), ("1.0_cvs", "1.0_p1"), ("1.0-r1", "1.0-r10"),
    ("1.2.3-r0", "1.2.3a-r0"), ("2.9.0-r0", "2.10.0-r0"), ("1.1.1d-r3", "1.1.1g-r0"), ("1.0a", "1.0.1"),
    ("1.0-r1", "1.0.1"), ("1.1.24-r2", "1.1.24-r3"),
])
def test_apk_order(lower, higher):
    assert apkversion.compare(lower, higher) == -1
    assert apkversion.compare(higher, lower) == 1
    assert apkversion.compare(lower, lower) == 0


def test_apk_rejects_garbage():
    assert not apkversion.is_valid("not-a-version")
    assert compare("apk", "x!", "1.0") is None


@pytest.mark.parametrize("lower,higher", [
    ("1.0.0-rc1", "1.0.0"), ("1.0.0-alpha.2", "1.0.0-alpha.10"), ("1.0.0-alpha", "1.0.0-alpha.1"),
    ("1.0.0-2", "1.0.0-alpha"), ("v0.0.0-20200101000000-abcdef", "v0.1.0"), ("1.6.0", "v1.10.0"),
])
def test_semver_order(lower, higher):
    assert semver.compare(lower, higher) == -1
    assert semver.compare(higher, lower) == 1
    assert semver.compare("v1.2.3", "1.2.3+build") == 0


def test_dpkg_order_through_python_debian():
    assert compare("dpkg", "252.39-1~deb12u2", "252.39-1") == -1
    assert compare("dpkg", "1:1.0", "2.0") == 1
    assert compare("dpkg", "1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u1") == -1


def test_affected_rules():
    assert affected("pep440", "1.24.1", fixed="1.24.3")
    assert not affected("pep440", "1.24.3", fixed="1.24.3")
    assert not affected("pep440", "5.0", introduced="5.1", fixed="5.3.1")
    assert affected("pep440", "5.3", introduced="5.1", fixed="5.3.1")
    assert affected("pep440", "2.0", last_affected="2.0")
    assert not affected("pep440", "2.0.1", last_affected="2.0")
    assert affected("dpkg", "9.1-1")  # open, no fix yet
    assert affected("semver", "v1.5.0", introduced="0", fixed="1.6.0")
    assert not affected("apk", "1.1.1g-r0", fixed="1.1.1g-r0")
    assert not affected("pep440", "garbage!", fixed="1.0")


def test_pep440_normalized_form():
    assert pep440_normalized("1.24.1") == "pep440:0.1.24.1.0.0.0.0.0.0"
    assert pep440_normalized("not a version") == ""
