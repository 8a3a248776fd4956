import hashlib

import pytest

from quaymaster.oci.digest import compute_digest, is_digest, new_hasher, parse_digest
from quaymaster.oci.errors import OCIError

HEX256 = "a" * 64
HEX512 = "b" * 128


def test_parse_sha256():
    assert parse_digest(f"sha256:{HEX256}") == ("sha256", HEX256)


def test_parse_sha512():
    assert parse_digest(f"sha512:{HEX512}") == ("sha512", HEX512)


@pytest.mark.parametrize("value", [
    f"sha256:{'A' * 64}",           # uppercase hex
    f"sha256:{'a' * 63}",           # too short
    f"sha256:{'a' * 65}",           # too long
    f"sha512:{HEX256}",             # wrong length for algorithm
    f"sha384:{'a' * 96}",           # unknown algorithm
    f"md5:{'a' * 32}",
    HEX256,                         # missing colon
    f"sha256{HEX256}",
    f":{HEX256}",
    "sha256:",
    f"SHA256:{HEX256}",             # uppercase algorithm
    f"sha256:{'g' * 64}",           # not hex
    f"sha256:{HEX256}\n",
    f" sha256:{HEX256}",
    "",
])
def test_invalid_digests(value):
    with pytest.raises(OCIError) as info:
        parse_digest(value)
    assert info.value.code == "DIGEST_INVALID"
    assert not is_digest(value)


def test_non_string_digest():
    with pytest.raises(OCIError) as info:
        parse_digest(None)  # type: ignore[arg-type]
    assert info.value.code == "DIGEST_INVALID"


def test_is_digest_true():
    assert is_digest(f"sha256:{HEX256}")


@pytest.mark.parametrize("data", [b"", b"hello", bytes(range(256)) * 10])
def test_compute_digest_matches_hashlib(data):
    assert compute_digest(data) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert compute_digest(data, "sha512") == "sha512:" + hashlib.sha512(data).hexdigest()
    assert is_digest(compute_digest(data))


def test_new_hasher_incremental():
    hasher = new_hasher("sha256")
    hasher.update(b"hel")
    hasher.update(b"lo")
    assert f"sha256:{hasher.hexdigest()}" == compute_digest(b"hello")


def test_new_hasher_unknown_algorithm():
    with pytest.raises(OCIError) as info:
        new_hasher("md5")
    assert info.value.code == "UNSUPPORTED"


def test_error_attributes():
    err = OCIError("DIGEST_INVALID", "bad", {"x": 1})
    assert (err.code, err.message, err.detail) == ("DIGEST_INVALID", "bad", {"x": 1})
    assert str(err) == "bad"
    assert OCIError("UNSUPPORTED", "m").detail is None
