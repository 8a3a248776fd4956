"""Checks on what the scanner answers, and the translation of a Clair vulnerability report into
Quay's security-information shape (`{Layer: {..., Features: [...]}}`), rule for rule, so the UI
and API clients written for Quay read ours unchanged."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

SEVERITY_ORDER = ("Unknown", "Negligible", "Low", "Medium", "High", "Critical")
SEVERITY_SCORE = {"Unknown": 0, "Negligible": 1, "Low": 3, "Medium": 6, "High": 9, "Critical": 10}
CVE_RE = re.compile(r"CVE-\d{4}-\d{4,}")


class ReportError(ValueError):
    """A scanner response that does not have the shape the Clair v4 contract promises."""


# --- validation: the fields Quay's copy of the Clair OpenAPI spec requires ---------------------

def _require(obj: Any, where: str, fields: dict[str, type | tuple[type, ...]]) -> dict:
    if not isinstance(obj, dict):
        raise ReportError(f"{where}: expected an object")
    for name, kind in fields.items():
        if name not in obj:
            raise ReportError(f"{where}: missing {name!r}")
        if not isinstance(obj[name], kind):
            raise ReportError(f"{where}.{name}: wrong type {type(obj[name]).__name__}")
    return obj


def _check_packages(packages: Any, where: str) -> None:
    if not isinstance(packages, dict):
        raise ReportError(f"{where}: expected an object")
    for pkg_id, pkg in packages.items():
        _require(pkg, f"{where}[{pkg_id}]", {"id": str, "name": str, "version": str})


def _check_environments(report: dict, where: str) -> None:
    envs = report["environments"]
    if not isinstance(envs, dict):
        raise ReportError(f"{where}.environments: expected an object")
    for pkg_id in report["packages"]:
        items = envs.get(pkg_id)
        if not isinstance(items, list) or not items:
            raise ReportError(f"{where}.environments[{pkg_id}]: every package needs an environment")
        for env in items:
            _require(env, f"{where}.environments[{pkg_id}]", {"package_db": str, "introduced_in": str,
                                                              "distribution_id": str})


def check_state(body: Any) -> str:
    return _require(body, "index_state", {"state": str})["state"]


def check_index_report(body: Any) -> dict:
    report = _require(body, "index_report", {
        "manifest_hash": str, "state": str, "packages": dict, "distributions": dict, "environments": dict,
        "success": bool, "err": str})
    _check_packages(report["packages"], "index_report.packages")
    return report


def check_vulnerability_report(body: Any) -> dict:
    report = _require(body, "vulnerability_report", {
        "manifest_hash": str, "packages": dict, "distributions": dict, "environments": dict,
        "vulnerabilities": dict, "package_vulnerabilities": dict})
    _check_packages(report["packages"], "vulnerability_report.packages")
    _check_environments(report, "vulnerability_report")
    for vuln_id, vuln in report["vulnerabilities"].items():
        _require(vuln, f"vulnerability_report.vulnerabilities[{vuln_id}]", {
            "id": str, "updater": str, "name": str, "description": str, "links": str, "severity": str,
            "normalized_severity": str, "fixed_in_version": str})
    for pkg_id, ids in report["package_vulnerabilities"].items():
        if not isinstance(ids, list) or any(i not in report["vulnerabilities"] for i in ids):
            raise ReportError(f"vulnerability_report.package_vulnerabilities[{pkg_id}]: unknown vulnerability")
    enrichments = report.get("enrichments") or {}
    if not isinstance(enrichments, dict):
        raise ReportError("vulnerability_report.enrichments: expected an object")
    for key, items in enrichments.items():
        if not isinstance(items, list):
            raise ReportError(f"vulnerability_report.enrichments[{key}]: expected a list")
    return report


def check_notification_page(body: Any) -> dict:
    page = _require(body, "notification_page", {"page": dict, "notifications": list})
    for item in page["notifications"]:
        _require(item, "notification", {"id": str, "manifest": str, "reason": str})
    return page


# --- translation ----------------------------------------------------------------------------

def fixed_by(fixed_in_version: str) -> str:
    """Clair's fixed_in_version as Quay shows it: "0" (Debian: not affected) means no fix, and
    OSV-style query strings (`fixed=1.24.3&introduced=1.0`) give their `fixed` value."""
    if not fixed_in_version or fixed_in_version == "0":
        return ""
    if "=" in fixed_in_version:
        parsed = parse_qs(fixed_in_version)
        if parsed:
            return parsed.get("fixed", [""])[0]
    return fixed_in_version


def severity_from_score(score: float) -> str:
    if score < 4.0:
        return "Low"
    if score < 7.0:
        return "Medium"
    if score < 9.0:
        return "High"
    return "Critical"


def _cvss_by_vulnerability(report: dict) -> dict[str, dict]:
    """vuln id -> the CVSS v3 entry with the highest base score, from the first enrichment."""
    enrichments = report.get("enrichments") or {}
    if not enrichments:
        return {}
    first = next(iter(enrichments.values()))
    if not first or not isinstance(first[0], dict):
        return {}
    best = {}
    for vuln_id, entries in first[0].items():
        scored = [e for e in entries or () if isinstance(e, dict) and isinstance(e.get("baseScore"), (int, float))]
        if scored:
            best[vuln_id] = max(scored, key=lambda e: e["baseScore"])
    return best


def _vulnerability(vuln: dict, report: dict, cvss: dict | None) -> dict:
    severity = vuln["normalized_severity"]
    if severity not in SEVERITY_SCORE:
        severity = "Unknown"
    if severity == "Unknown" and cvss is not None:
        severity = severity_from_score(float(cvss["baseScore"]))
    distribution = vuln.get("distribution") if isinstance(vuln.get("distribution"), dict) else {}
    repository = vuln.get("repository") if isinstance(vuln.get("repository"), dict) else {}
    return {
        "Severity": severity,
        "NamespaceName": vuln["updater"],
        "Link": vuln["links"],
        "FixedBy": fixed_by(vuln["fixed_in_version"]),
        "Description": vuln["description"],
        "Name": vuln["name"],
        "Metadata": {
            "UpdatedBy": vuln["updater"],
            "RepoName": repository.get("name"),
            "RepoLink": repository.get("uri"),
            "DistroName": distribution.get("name", ""),
            "DistroVersion": distribution.get("version", ""),
            "NVD": {"CVSSv3": {"Vectors": cvss.get("vectorString", "") if cvss else "",
                               "Score": cvss["baseScore"] if cvss else ""}},
        },
    }


def features_for(report: dict) -> dict:
    """Quay's `{Layer: ...}` for a checked vulnerability report. A vulnerability is listed once per
    package name + version + vulnerability name, however many times the scanner matched it."""
    cvss = _cvss_by_vulnerability(report)
    seen: set[tuple[str, str, str]] = set()
    features = []
    for pkg_id, pkg in report["packages"].items():
        vulns = []
        for vuln_id in report["package_vulnerabilities"].get(pkg_id, []):
            vuln = report["vulnerabilities"][vuln_id]
            key = (pkg["name"], pkg["version"], vuln["name"])
            if key in seen:
                continue
            seen.add(key)
            vulns.append(vuln)
        cve_ids = sorted({cve for vuln in vulns for cve in CVE_RE.findall(vuln["links"])})
        features.append({
            "Name": pkg["name"],
            "VersionFormat": "",
            "NamespaceName": "",
            "AddedBy": report["environments"][pkg_id][0]["introduced_in"],
            "Version": pkg["version"],
            "BaseScores": [cvss[v["id"]]["baseScore"] for v in vulns if v["id"] in cvss],
            "CVEIds": cve_ids,
            "Vulnerabilities": [_vulnerability(v, report, cvss.get(v["id"])) for v in vulns],
        })
    return {"Layer": {"Name": report["manifest_hash"], "ParentName": "", "NamespaceName": "",
                      "IndexedByVersion": 4, "Features": features}}


def summarize(layer: dict) -> dict:
    """Counts for the tags column: vulnerabilities by severity, fixable ones, packages affected."""
    counts = {name: 0 for name in SEVERITY_ORDER}
    fixable = 0
    affected = 0
    for feature in layer["Layer"]["Features"]:
        if feature["Vulnerabilities"]:
            affected += 1
        for vuln in feature["Vulnerabilities"]:
            counts[vuln["Severity"]] = counts.get(vuln["Severity"], 0) + 1
            fixable += bool(vuln["FixedBy"])
    total = sum(counts.values())
    highest = next((s for s in reversed(SEVERITY_ORDER) if counts.get(s)), None)
    return {"counts": counts, "total": total, "fixable": fixable, "packages": affected, "highest": highest}
