"""The Clair-report-to-Quay translation against Quay's own golden files, and the response checks."""

import copy
import json
from pathlib import Path

import pytest

from quaymaster.secscan import report as reports

DATA = Path(__file__).resolve().parents[2] / "data" / "secscan"
PAIRS = [
    ("vulnerabilityreport.json", "securityinformation.json"),
    ("vulnerabilityreport_duplicates.json", "securityinformation_deduped.json"),
    ("vulnerabilityreport_withenrichments.json", "securityinformation_withenrichments.json"),
]


def load(name: str):
    return json.loads((DATA / name).read_text())


def canonical(layer: dict) -> dict:
    """Quay builds features from dict iteration and CVE ids from a set: compare without order."""
    features = []
    for feature in layer["Layer"]["Features"]:
        feature = dict(feature, CVEIds=sorted(feature["CVEIds"]), BaseScores=sorted(feature["BaseScores"]),
                       Vulnerabilities=sorted(feature["Vulnerabilities"], key=lambda v: json.dumps(v, sort_keys=True)))
        features.append(feature)
    head = {k: v for k, v in layer["Layer"].items() if k != "Features"}
    return {**head, "Features": sorted(features, key=lambda f: json.dumps(f, sort_keys=True))}


@pytest.mark.parametrize(("source", "golden"), PAIRS)
def test_translation_matches_quays_golden_files(source, golden):
    expected = load(golden)
    if "data" in expected:
        assert expected["status"] == "scanned"
        expected = expected["data"]
    mine = reports.features_for(reports.check_vulnerability_report(load(source)))
    assert canonical(mine) == canonical(expected)


def test_duplicates_are_listed_once_per_package_version_and_name():
    report = load("vulnerabilityreport_duplicates.json")
    matched = sum(len(ids) for ids in report["package_vulnerabilities"].values())
    layer = reports.features_for(report)
    listed = [(f["Name"], f["Version"], v["Name"]) for f in layer["Layer"]["Features"] for v in f["Vulnerabilities"]]
    assert len(listed) == len(set(listed)) < matched


def test_unknown_severity_comes_from_the_highest_cvss_score():
    layer = reports.features_for(load("vulnerabilityreport_withenrichments.json"))
    (expat,) = [f for f in layer["Layer"]["Features"] if f["Name"] == "expat"]
    # Clair says Unknown; NVD's 7.5 makes it High, and the vector travels along.
    assert {v["Severity"] for v in expat["Vulnerabilities"]} == {"High"}
    assert expat["Vulnerabilities"][0]["Metadata"]["NVD"]["CVSSv3"]["Score"] == 7.5
    assert [reports.severity_from_score(s) for s in (0.0, 3.9, 4.0, 6.9, 7.0, 8.9, 9.0, 10.0)] == \
        ["Low", "Low", "Medium", "Medium", "High", "High", "Critical", "Critical"]


@pytest.mark.parametrize(("raw", "shown"), [
    ("", ""), ("0", ""), ("1.24.3", "1.24.3"), ("0:2.2.20-3.el8_6", "0:2.2.20-3.el8_6"),
    ("fixed=1.24.3&introduced=1.0", "1.24.3"), ("fixed=1.26.0%2Bbuild", "1.26.0+build"),
    ("introduced=0", ""),
])
def test_fixed_by(raw, shown):
    assert reports.fixed_by(raw) == shown


def test_summary_counts_by_severity():
    summary = reports.summarize(reports.features_for(load("vulnerabilityreport_withenrichments.json")))
    assert summary["total"] == sum(summary["counts"].values()) > 0
    assert summary["highest"] == "Critical"
    assert 0 < summary["fixable"] <= summary["total"]


@pytest.mark.parametrize("breakage", [
    lambda r: r.pop("package_vulnerabilities"),
    lambda r: r["vulnerabilities"][next(iter(r["vulnerabilities"]))].pop("normalized_severity"),
    lambda r: r["vulnerabilities"][next(iter(r["vulnerabilities"]))].update(name=None),
    lambda r: r["environments"].clear(),
    lambda r: r["package_vulnerabilities"].update({"1": ["no-such-vulnerability"]}),
    lambda r: r["packages"].update({"x": {"id": "x", "name": "x"}}),
])
def test_reports_outside_the_contract_are_refused(breakage):
    report = copy.deepcopy(load("vulnerabilityreport_withenrichments.json"))
    breakage(report)
    with pytest.raises(reports.ReportError):
        reports.check_vulnerability_report(report)
    with pytest.raises(reports.ReportError):
        reports.check_vulnerability_report([report])
