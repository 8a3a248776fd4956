"""Reading layers as streams (gzip, zstd, plain tar) and coalescing them across whiteouts."""

import pytest
from support.scannerimages import (
    SITE,
    alpine_layer,
    build_layer,
    debian_layer,
    python_layer,
    status_without,
)

from quaymaster.scanner.indexer import layer as layer_mod
from quaymaster.scanner.indexer.coalesce import coalesce
from quaymaster.scanner.indexer.layer import LayerError, scan_layer_bytes

MANIFEST = "sha256:" + "1" * 64


def _names(report):
    return sorted(p["name"] for p in report["packages"].values())


def _report(*layers):
    return coalesce(MANIFEST, [x.digest for x in layers], [scan_layer_bytes(x.blob) for x in layers])


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_compression_is_sniffed(compression):
    layer = build_layer({"lib/apk/db/installed": b"P:musl\nV:1.1.24-r2\n\n"}, compression=compression)
    assert [p["name"] for p in scan_layer_bytes(layer.blob)["packages"]] == ["musl"]


def test_debian_layer_reads_os_release_through_symlink_and_dpkg():
    report = _report(debian_layer())
    dist = report["distributions"]["1"]
    assert (dist["did"], dist["version_id"], dist["version_code_name"]) == ("debian", "12", "bookworm")
    assert len(report["packages"]) == 10
    for pid, pkg in report["packages"].items():
        env = report["environments"][pid][0]
        assert env == {"package_db": "var/lib/dpkg/status", "introduced_in": debian_layer().digest,
                       "distribution_id": "1", "repository_ids": None}
        assert pkg["source"]["kind"] == "source"


def test_two_layers_keep_introduced_in_and_python_repository():
    base, py = debian_layer(), python_layer()
    report = _report(base, py)
    assert {"urllib3", "pyyaml", "coreutils"} <= set(_names(report))
    by_name = {p["name"]: pid for pid, p in report["packages"].items()}
    env = report["environments"][by_name["urllib3"]][0]
    assert env["introduced_in"] == py.digest and env["distribution_id"] == ""
    assert env["package_db"] == f"python:{SITE}"
    assert report["repository"][env["repository_ids"][0]]["name"] == "pypi"
    assert report["environments"][by_name["coreutils"]][0]["introduced_in"] == base.digest


def test_whiteouts_remove_packages_of_lower_layers():
    base, py = debian_layer(), python_layer()
    purge = build_layer({
        "var/lib/dpkg/status": status_without("tar"),
        f"{SITE}/.wh.urllib3-1.24.1.dist-info": b"",
    })
    names = _names(_report(base, py, purge))
    assert "tar" not in names and "urllib3" not in names
    assert "pyyaml" in names and "coreutils" in names
    # the surviving dpkg packages keep their original layer
    report = _report(base, py, purge)
    core = next(pid for pid, p in report["packages"].items() if p["name"] == "coreutils")
    assert report["environments"][core][0]["introduced_in"] == base.digest


def test_whited_out_database_and_opaque_dir():
    gone = build_layer({"var/lib/dpkg/.wh.status": b""})
    assert not [n for n in _names(_report(debian_layer(), gone))]
    opaque = build_layer({f"{SITE}/.wh..wh..opq": b""})
    assert _names(_report(python_layer(), opaque)) == []
    # a whiteout in the same layer does not hide that layer's own files
    same = build_layer({"lib/apk/db/installed": b"P:musl\nV:1\n\n", "lib/apk/db/.wh.installed": b""})
    assert _names(_report(same)) == ["musl"]


def test_alpine_layer():
    report = _report(alpine_layer())
    assert report["distributions"]["1"]["pretty_name"] == "Alpine Linux v3.11"
    assert _names(report) == ["busybox", "libssl1.1", "musl"]


def test_member_names_never_escape(tmp_path):
    layer = build_layer({"../../../../etc/os-release": b"ID=alpine\nVERSION_ID=3.11.6\n"})
    assert scan_layer_bytes(layer.blob)["dist"]["did"] == "alpine"  # a key, never a write path


def test_size_cap_refuses_huge_status(monkeypatch):
    monkeypatch.setitem(layer_mod.CAPS, "dpkg", 100)
    with pytest.raises(LayerError, match="limit"):
        scan_layer_bytes(debian_layer().blob)


def test_not_an_archive():
    with pytest.raises(LayerError):
        scan_layer_bytes(b"\x1f\x8b" + b"garbage" * 100)
    assert scan_layer_bytes(b"")["packages"] == []
