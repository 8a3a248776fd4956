"""OSV advisories (JSON or YAML; a directory, a zip such as `PyPI/all.zip`, or one file).

PyPI and Go are read; other ecosystems are skipped because no detector reports them yet. GIT
ranges are skipped (commit hashes say nothing about release versions)."""

from __future__ import annotations

import json
import logging
from urllib.parse import urlencode

import yaml
from packaging.utils import canonicalize_name

from quaymaster.scanner.feeds.severity import from_word
from quaymaster.scanner.feeds.source import FeedFile

log = logging.getLogger(__name__)

ECOSYSTEMS = {
    # OSV ecosystem -> (version kind, repository name, repository uri)
    "pypi": ("pep440", "pypi", "https://pypi.org/simple"),
    "go": ("semver", "go", "https://pkg.go.dev/"),
}
RANGE_TYPES = {"pep440": "ECOSYSTEM", "semver": "SEMVER"}


def _load(f: FeedFile) -> dict | None:
    try:
        if f.name.endswith((".yaml", ".yml")):
            doc = yaml.safe_load(f.data)
        elif f.name.endswith(".json"):
            doc = json.loads(f.data)
        else:
            return None
    except (ValueError, yaml.YAMLError) as err:
        log.warning("osv: skipping unreadable %s: %s", f.name, err)
        return None
    return doc if isinstance(doc, dict) and doc.get("id") else None


def _intervals(events: list[dict]) -> list[tuple[str, str, str]]:
    """(introduced, fixed, last_affected) spans from an OSV event list."""
    spans, start = [], None
    for event in events or []:
        if "introduced" in event:
            if start is not None:
                spans.append((start, "", ""))
            start = str(event["introduced"])
        elif "fixed" in event and start is not None:
            spans.append((start, str(event["fixed"]), ""))
            start = None
        elif "last_affected" in event and start is not None:
            spans.append((start, "", str(event["last_affected"])))
            start = None
    if start is not None:
        spans.append((start, "", ""))
    return spans


def _fixed_in(kind: str, introduced: str, fixed: str, last_affected: str) -> str:
    """PyPI fixes use Clair's query-string form; SEMVER ones the plain fixed version."""
    if kind != "pep440":
        return fixed
    params = []
    if fixed:
        params.append(("fixed", fixed))
    if last_affected:
        params.append(("lastAffected", last_affected))
    if introduced and introduced != "0":
        params.append(("introduced", introduced))
    return urlencode(params)


def parse(files: list[FeedFile], updater: str = "osv") -> list[dict]:
    rows: list[dict] = []
    for f in files:
        doc = _load(f)
        if not doc or doc.get("withdrawn"):
            continue
        links = [r["url"] for r in doc.get("references") or [] if isinstance(r, dict) and r.get("url")]
        aliases = [a for a in doc.get("aliases") or [] if isinstance(a, str)]
        links += [f"https://nvd.nist.gov/vuln/detail/{a}" for a in aliases if a.startswith("CVE-")]
        severity = ""
        normalized = "Unknown"
        for sev in doc.get("severity") or []:
            if isinstance(sev, dict) and sev.get("score"):
                severity = str(sev["score"])
                break
        db_specific = doc.get("database_specific") or {}
        if isinstance(db_specific, dict) and isinstance(db_specific.get("severity"), str):
            severity = severity or db_specific["severity"]
            normalized = from_word(db_specific["severity"])
        base = {
            "updater": updater, "name": str(doc["id"]),
            "description": str(doc.get("details") or doc.get("summary") or ""),
            "issued": str(doc.get("published") or ""), "links": " ".join(dict.fromkeys(links)),
            "severity": severity, "normalized_severity": normalized, "package_kind": "binary",
        }
        for affected in doc.get("affected") or []:
            package = affected.get("package") or {}
            eco = ECOSYSTEMS.get(str(package.get("ecosystem", "")).lower())
            if not eco or not package.get("name"):
                continue
            kind, repo_name, repo_uri = eco
            name = str(canonicalize_name(package["name"])) if kind == "pep440" else str(package["name"])
            spans: list[tuple[str, str, str]] = []
            for rng in affected.get("ranges") or []:
                if rng.get("type") == RANGE_TYPES[kind]:
                    spans += _intervals(rng.get("events") or [])
            if not spans:  # no usable range: fall back to the explicit version list
                spans = [(str(v), "", str(v)) for v in affected.get("versions") or []]
            for introduced, fixed, last_affected in dict.fromkeys(spans):
                rows.append({**base, "package_name": name, "repo_name": repo_name, "repo_uri": repo_uri,
                             "version_kind": kind, "introduced": introduced, "fixed": fixed,
                             "last_affected": last_affected,
                             "fixed_in_version": _fixed_in(kind, introduced, fixed, last_affected)})
    return rows
