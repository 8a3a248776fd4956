import pytest

from quaymaster.oci.errors import OCIError
from quaymaster.oci.reference import (
    is_reference_digest,
    is_valid_tag,
    split_repository,
    validate_tag,
)


@pytest.mark.parametrize("path, expected", [
    ("library/busybox", ("library", "busybox")),
    ("ab/c", ("ab", "c")),
    ("my-org/my_app.v2", ("my-org", "my_app.v2")),
    ("org.name/1app", ("org.name", "1app")),
    ("a_b/x-", ("a_b", "x-")),
    ("x" * 255 + "/" + "y" * 255, ("x" * 255, "y" * 255)),
])
def test_valid_repositories(path, expected):
    assert split_repository(path) == expected


@pytest.mark.parametrize("path", [
    "",
    "busybox",                      # single component
    "a/b/c",                        # nested
    "a/b",                          # namespace too short
    "x" * 256 + "/app",             # namespace too long
    "ns/" + "y" * 256,              # name too long
    "Library/busybox",              # uppercase namespace
    "library/BusyBox",              # uppercase name
    "-org/app", ".org/app", "_org/app",  # leading punctuation in namespace
    "org-/app", "or--g/app",        # trailing or doubled separator
    "org/-app", "org/.app", "org/_app",  # leading punctuation in name
    "org/", "/app", "org//app", "/org/app",
    "org/app:tag", "org/app@x", "org/äpp", "org/app\n",
])
def test_invalid_repositories(path):
    with pytest.raises(OCIError) as info:
        split_repository(path)
    assert info.value.code == "NAME_INVALID"
    assert info.value.message


def test_single_component_message_is_clear():
    with pytest.raises(OCIError) as info:
        split_repository("busybox")
    assert "<namespace>/<name>" in info.value.message


@pytest.mark.parametrize("tag", ["latest", "v1.0.0", "1", "_x", "a" * 128, "A-b_c.D"])
def test_valid_tags(tag):
    assert is_valid_tag(tag)
    validate_tag(tag)


@pytest.mark.parametrize("tag", ["", "a" * 129, ".hidden", "-x", "tag:x", "a/b",
                                 "täg", "ｔａｇ", "latest\n", "a b"])
def test_invalid_tags(tag):
    assert not is_valid_tag(tag)
    with pytest.raises(OCIError) as info:
        validate_tag(tag)
    assert info.value.code == "TAG_INVALID"


@pytest.mark.parametrize("ref, expected", [
    ("sha256:" + "a" * 64, True),
    ("latest", False),
    ("v1.2", False),
])
def test_is_reference_digest(ref, expected):
    assert is_reference_digest(ref) is expected
