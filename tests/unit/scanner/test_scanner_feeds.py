"""Updaters' parsers on real feed excerpts, and the fingerprint that skips unchanged feeds."""

import asyncio
import gzip
import zipfile

import pytest
from sqlalchemy import func, select
from support.scannerimages import DATA

from quaymaster.scanner.db import ScannerDB
from quaymaster.scanner.feeds import alpine, debian, nvd, osv
from quaymaster.scanner.feeds.runner import BATCH, run_one
from quaymaster.scanner.feeds.severity import from_cvss_score, from_debian_urgency
from quaymaster.scanner.feeds.source import (
    FeedError,
    FeedFile,
    fingerprint,
    read_location,
)
from quaymaster.scanner.models import update_operation, vulnerability


def _files(location):
    return asyncio.run(read_location(str(location)))


def test_osv_pypi_yaml_directory():
    rows = osv.parse(_files(DATA / "osv-pypi"))
    pysec132 = [r for r in rows if r["name"] == "PYSEC-2019-132"]
    assert len(pysec132) == 1
    row = pysec132[0]
    assert (row["package_name"], row["repo_name"], row["version_kind"]) == ("urllib3", "pypi", "pep440")
    assert row["fixed_in_version"] == "fixed=1.24.3"
    assert "https://nvd.nist.gov/vuln/detail/CVE-2019-11236" in row["links"].split()
    pyyaml = [r for r in rows if r["name"] == "PYSEC-2020-96"]
    assert pyyaml[0]["fixed_in_version"] == "fixed=5.3.1&introduced=5.1"


def test_osv_skips_git_ranges():
    rows = [r for r in osv.parse(_files(DATA / "osv-pypi")) if r["name"] == "PYSEC-2018-28"]
    assert rows and all(r["fixed"] == "2.20.0" for r in rows)  # the ECOSYSTEM range, not the GIT one


def test_osv_go_json_and_zip(tmp_path):
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in (DATA / "osv-go").iterdir():
            zf.write(f, f.name)
    rows = osv.parse(_files(archive))
    gin = [r for r in rows if r["name"] == "GO-2020-0001"]
    assert gin[0]["package_name"] == "github.com/gin-gonic/gin"
    assert (gin[0]["version_kind"], gin[0]["fixed_in_version"]) == ("semver", "1.6.0")
    assert not [r for r in rows if r["name"] == "GO-2022-0617"]  # withdrawn


def test_debian_tracker_excerpt():
    rows = list(debian.parse(_files(DATA / "debian" / "tracker-excerpt.json")))
    assert rows and all(r["version_kind"] == "dpkg" and r["package_kind"] == "source" for r in rows)
    assert not [r for r in rows if r["fixed_in_version"] == "0"]  # "0" means never affected
    proto = [r for r in rows if r["name"] == "CVE-2008-7220" and r["dist_version_code_name"] == "buster"]
    assert proto[0]["fixed_in_version"] == "1.6.0.2-1" and proto[0]["dist_version_id"] == "10"
    assert proto[0]["severity"] == "high**" and proto[0]["normalized_severity"] == "Unknown"
    assert not [r for r in rows if r["dist_version_code_name"] == "sid"]


def test_debian_urgency_mapping():
    assert [from_debian_urgency(u) for u in ("unimportant", "low", "medium", "high", "low**", "not yet assigned")] == [
        "Low", "Medium", "High", "Critical", "Unknown", "Unknown"]
    assert [from_cvss_score(s) for s in (0, 3.9, 6.5, 8.8, 9.8)] == ["Negligible", "Low", "Medium", "High", "Critical"]


def test_alpine_secdb():
    rows = alpine.parse(_files(DATA / "alpine" / "v3.10-community.json"))
    botan = [r for r in rows if r["package_name"] == "botan"]
    assert {(r["name"], r["fixed_in_version"]) for r in botan} >= {("CVE-2018-20187", "2.9.0-r0")}
    assert botan[0]["dist_version_id"] == "3.10" and botan[0]["dist_pretty_name"] == "Alpine Linux v3.10"
    synthetic = alpine.parse(_files(DATA / "alpine" / "v3.11-main-synthetic.json"))
    assert not [r for r in synthetic if r["name"] == "CVE-2000-0001"]


def test_nvd_enrichment_keeps_base_scores(tmp_path):
    packed = tmp_path / "nvdcve-2.0-2016.json.gz"
    packed.write_bytes(gzip.compress((DATA / "nvd" / "nvdcve-2.0-excerpt.json").read_bytes()))
    rows = nvd.parse(_files(packed))
    by_tag = {r["tag"]: r["data"] for r in rows}
    assert by_tag["CVE-2016-2781"]["baseScore"] == 6.5
    assert all(isinstance(r["data"]["baseScore"], (int, float)) for r in rows)


def test_fingerprint_changes_only_with_content(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    first = fingerprint(_files(tmp_path))
    assert fingerprint(_files(f"file://{tmp_path}")) == first
    (tmp_path / "a.json").write_text('{"x": 1}')
    assert fingerprint(_files(tmp_path)) != first


def test_debian_feed_is_read_as_a_stream_and_bad_json_is_a_feed_error():
    rows = debian.parse(_files(DATA / "debian" / "tracker-excerpt.json"))
    assert not isinstance(rows, list) and next(rows)["updater"] == "debian"  # rows come one by one
    with pytest.raises(FeedError, match="not JSON"):
        list(debian.parse([FeedFile("debian.json", b'{"pkg": {"CVE-1": {"releases": ')]))
    with pytest.raises(FeedError, match="expected an object"):
        list(debian.parse([FeedFile("debian.json", b"[1, 2]")]))


async def test_a_feed_broken_half_way_keeps_the_previous_operation(tmp_path):
    db = ScannerDB(f"sqlite+aiosqlite:///{tmp_path / 'scanner.db'}")
    await db.create_schema()
    good = tmp_path / "good.json"
    good.write_bytes((DATA / "debian" / "tracker-excerpt.json").read_bytes())
    first = await run_one(db, "debian", {"url": str(good)})
    assert first.outcome == "new" and first.count > 0
    # Valid for more than one batch of rows, then cut off: the rows already inserted must go.
    entry = '{"releases": {"bookworm": {"status": "open", "urgency": "low"}}}'
    body = ", ".join(f'"pkg{i}": {{"CVE-2020-{i}": {entry}}}' for i in range(BATCH + 10))
    broken = tmp_path / "broken.json"
    broken.write_text("{" + body + ', "pkgX": {')
    second = await run_one(db, "debian", {"url": str(broken)})
    assert second.outcome == "error" and "not JSON" in second.message
    async with db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(update_operation))).scalar() == 1
        assert (await conn.execute(select(func.count()).select_from(vulnerability))).scalar() == first.count
    await db.engine.dispose()
