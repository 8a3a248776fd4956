"""Matching: candidate vulnerabilities by package name from the latest update operation of each
updater, then the ecosystem's version rule in code; then CVSS enrichment."""

from __future__ import annotations

import re
from collections import defaultdict

from packaging.utils import canonicalize_name
from sqlalchemy import func, select

from quaymaster.scanner.db import ScannerDB
from quaymaster.scanner.feeds.nvd import ENRICHMENT_TYPE
from quaymaster.scanner.matcher.versions import affected
from quaymaster.scanner.models import enrichment, update_operation, vulnerability

ZERO_TIME = "0001-01-01T00:00:00Z"
_CVE = re.compile(r"CVE-\d{4}-\d{4,}")
_CHUNK = 500


def _major_minor(version_id: str) -> str:
    return ".".join(version_id.split(".")[:2])


def record_matches(pkg: dict, env: dict, dist: dict | None, repos: dict, vuln) -> str | None:
    """The package version to compare when `vuln` concerns this package record, else None."""
    source = pkg.get("source") or {}
    kind = vuln.version_kind
    if kind in ("dpkg", "apk"):
        if not dist or dist.get("did") != vuln.dist_did or not env.get("distribution_id"):
            return None
        if kind == "dpkg":
            same = (vuln.dist_version_id == dist.get("version_id") if dist.get("version_id")
                    else vuln.dist_version_code_name == dist.get("version_code_name"))
        else:
            same = vuln.dist_version_id == _major_minor(dist.get("version_id", ""))
        if not same:
            return None
        if vuln.package_name == source.get("name"):
            return source.get("version") or pkg["version"]
        if vuln.package_name == pkg["name"]:
            return pkg["version"]
        return None
    repo_names = {repos.get(rid, {}).get("name") for rid in env.get("repository_ids") or []}
    if vuln.repo_name not in repo_names:
        return None
    name = str(canonicalize_name(pkg["name"])) if kind == "pep440" else pkg["name"]
    return pkg["version"] if name == vuln.package_name else None


def vulnerability_json(vuln) -> dict:
    """A Vulnerability as Clair emits it (no `range`; required strings never null)."""
    out = {
        "id": str(vuln.id), "updater": vuln.updater, "name": vuln.name, "description": vuln.description,
        "issued": vuln.issued or ZERO_TIME, "links": vuln.links, "severity": vuln.severity,
        "normalized_severity": vuln.normalized_severity,
        "package": {"id": "", "name": vuln.package_name, "version": "", "kind": vuln.package_kind},
        "distribution": {"id": "", "did": vuln.dist_did, "name": vuln.dist_name, "version": "",
                         "version_code_name": vuln.dist_version_code_name, "version_id": vuln.dist_version_id,
                         "arch": "", "cpe": "", "pretty_name": vuln.dist_pretty_name},
        "repository": {"name": vuln.repo_name, "uri": vuln.repo_uri} if vuln.repo_name else {},
        "fixed_in_version": vuln.fixed_in_version,
    }
    return out


class Matcher:
    def __init__(self, db: ScannerDB):
        self.db = db

    async def initialized(self) -> bool:
        """True once any updater has completed (before that Clair answers 202)."""
        async with self.db.read() as conn:
            return bool((await conn.execute(select(func.count()).select_from(update_operation))).scalar())

    async def latest_operations(self, kind: str | None = None) -> dict[str, int]:
        """updater name -> id of its newest update operation."""
        query = select(update_operation.c.updater, func.max(update_operation.c.id)).group_by(update_operation.c.updater)
        if kind:
            query = query.where(update_operation.c.kind == kind)
        async with self.db.read() as conn:
            return {row[0]: row[1] for row in (await conn.execute(query)).all()}

    async def candidates(self, names: set[str], uo_ids: list[int]) -> list:
        if not names or not uo_ids:
            return []
        rows: list = []
        ordered = sorted(names)
        async with self.db.read() as conn:
            for start in range(0, len(ordered), _CHUNK):
                rows += (await conn.execute(select(vulnerability).where(
                    vulnerability.c.uo_id.in_(uo_ids),
                    vulnerability.c.package_name.in_(ordered[start:start + _CHUNK])))).all()
        return rows

    def match_rows(self, report: dict, rows: list) -> dict[str, list]:
        """package id -> matching vulnerability rows (deduplicated)."""
        by_name: dict[str, list] = defaultdict(list)
        for row in rows:
            by_name[row.package_name].append(row)
        dists = report.get("distributions") or {}
        repos = report.get("repository") or {}
        found: dict[str, list] = {}
        for pid, pkg in (report.get("packages") or {}).items():
            envs = (report.get("environments") or {}).get(pid) or []
            names = {pkg["name"], str(canonicalize_name(pkg["name"])), (pkg.get("source") or {}).get("name", "")}
            hits: dict[int, object] = {}
            for env in envs:
                dist = dists.get(env.get("distribution_id") or "")
                for name in names:
                    for vuln in by_name.get(name, ()):
                        version = record_matches(pkg, env, dist, repos, vuln)
                        if version is not None and affected(vuln.version_kind, version, introduced=vuln.introduced,
                                                            fixed=vuln.fixed, last_affected=vuln.last_affected):
                            hits[vuln.id] = vuln
            if hits:
                found[pid] = sorted(hits.values(), key=lambda v: v.id)
        return found

    async def report(self, index_report: dict) -> dict:
        latest = await self.latest_operations("vulnerability")
        names: set[str] = set()
        for pkg in (index_report.get("packages") or {}).values():
            names |= {pkg["name"], str(canonicalize_name(pkg["name"]))}
            if (pkg.get("source") or {}).get("name"):
                names.add(pkg["source"]["name"])
        rows = await self.candidates(names, list(latest.values()))
        matched = self.match_rows(index_report, rows)
        vulns: dict[str, dict] = {}
        package_vulns: dict[str, list[str]] = {}
        for pid, hits in matched.items():
            package_vulns[pid] = [str(v.id) for v in hits]
            for v in hits:
                vulns.setdefault(str(v.id), vulnerability_json(v))
        return {
            "manifest_hash": index_report["manifest_hash"],
            "packages": index_report.get("packages") or {},
            "distributions": index_report.get("distributions") or {},
            "repository": index_report.get("repository") or {},
            "environments": index_report.get("environments") or {},
            "vulnerabilities": vulns,
            "package_vulnerabilities": package_vulns,
            "enrichments": await self.enrich(vulns),
        }

    async def enrich(self, vulns: dict[str, dict]) -> dict:
        """clair.cvss: CVE ids found in each vulnerability's name and links -> NVD cvssData."""
        wanted: dict[str, set[str]] = {}
        for vid, v in vulns.items():
            cves = set(_CVE.findall(v["name"] + " " + v["links"]))
            if cves:
                wanted[vid] = cves
        if not wanted:
            return {}
        latest = await self.latest_operations("enrichment")
        if "clair.cvss" not in latest:
            return {}
        tags = sorted(set().union(*wanted.values()))
        data: dict[str, list[dict]] = defaultdict(list)
        async with self.db.read() as conn:
            for start in range(0, len(tags), _CHUNK):
                for row in (await conn.execute(select(enrichment.c.tag, enrichment.c.data).where(
                        enrichment.c.uo_id == latest["clair.cvss"],
                        enrichment.c.tag.in_(tags[start:start + _CHUNK])))).all():
                    data[row.tag].append(row.data)
        mapping = {}
        for vid, cves in wanted.items():
            items = [d for cve in sorted(cves) for d in data.get(cve, ())]
            if items:
                mapping[vid] = items
        return {ENRICHMENT_TYPE: [mapping]} if mapping else {}
