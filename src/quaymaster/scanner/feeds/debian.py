"""The Debian security tracker's JSON (`/tracker/data/json`): source package -> CVE -> release."""

from __future__ import annotations

import io
from collections.abc import Iterator

import ijson

from quaymaster.scanner.feeds.severity import from_debian_urgency
from quaymaster.scanner.feeds.source import FeedError, FeedFile

RELEASES = {  # code name -> VERSION_ID in os-release
    "squeeze": "6", "wheezy": "7", "jessie": "8", "stretch": "9", "buster": "10", "bullseye": "11",
    "bookworm": "12", "trixie": "13", "forky": "14",
}
TRACKER = "https://security-tracker.debian.org/tracker/"


def parse(files: list[FeedFile], updater: str = "debian") -> Iterator[dict]:
    """Rows one source package at a time: the tracker's JSON is hundreds of megabytes, and held
    whole as Python objects it would take several times that (ijson reads it as a stream)."""
    for f in files:
        try:
            packages = ijson.kvitems(io.BytesIO(f.data), "", use_float=True)
            first = True
            for source, cves in packages:
                first = False
                if isinstance(cves, dict):
                    yield from _rows(source, cves, updater)
            if first and not f.data.lstrip().startswith(b"{"):
                raise FeedError(f"debian: {f.name}: expected an object of source packages")
        except ijson.JSONError as err:
            raise FeedError(f"debian: {f.name}: not JSON: {err}") from None


def _rows(source: str, cves: dict, updater: str) -> Iterator[dict]:
    for name, entry in cves.items():
        if not isinstance(entry, dict):
            continue
        for codename, rel in (entry.get("releases") or {}).items():
            version_id = RELEASES.get(codename)
            if not version_id or not isinstance(rel, dict):
                continue
            status = rel.get("status", "")
            fixed = str(rel.get("fixed_version") or "") if status == "resolved" else ""
            if fixed == "0" or (status == "resolved" and not fixed):
                continue  # "0": this release was never affected
            urgency = str(rel.get("urgency") or "")
            yield {
                "updater": updater, "name": name, "description": str(entry.get("description") or ""),
                "issued": "", "links": TRACKER + name, "severity": urgency,
                "normalized_severity": from_debian_urgency(urgency),
                "package_name": source, "package_kind": "source",
                "dist_did": "debian", "dist_name": "Debian GNU/Linux", "dist_version_id": version_id,
                "dist_version_code_name": codename,
                "dist_pretty_name": f"Debian GNU/Linux {version_id} ({codename})",
                "version_kind": "dpkg", "fixed": fixed, "fixed_in_version": fixed,
            }
