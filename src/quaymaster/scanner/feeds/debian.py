"""The Debian security tracker's JSON (`/tracker/data/json`): source package -> CVE -> release."""

from __future__ import annotations

import json

from quaymaster.scanner.feeds.severity import from_debian_urgency
from quaymaster.scanner.feeds.source import FeedError, FeedFile

RELEASES = {  # code name -> VERSION_ID in os-release
    "squeeze": "6", "wheezy": "7", "jessie": "8", "stretch": "9", "buster": "10", "bullseye": "11",
    "bookworm": "12", "trixie": "13", "forky": "14",
}
TRACKER = "https://security-tracker.debian.org/tracker/"


def parse(files: list[FeedFile], updater: str = "debian") -> list[dict]:
    rows: list[dict] = []
    for f in files:
        try:
            doc = json.loads(f.data)
        except ValueError as err:
            raise FeedError(f"debian: {f.name}: not JSON: {err}") from None
        if not isinstance(doc, dict):
            raise FeedError(f"debian: {f.name}: expected an object of source packages")
        for source, cves in doc.items():
            if not isinstance(cves, dict):
                continue
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
                    rows.append({
                        "updater": updater, "name": name, "description": str(entry.get("description") or ""),
                        "issued": "", "links": TRACKER + name, "severity": urgency,
                        "normalized_severity": from_debian_urgency(urgency),
                        "package_name": source, "package_kind": "source",
                        "dist_did": "debian", "dist_name": "Debian GNU/Linux", "dist_version_id": version_id,
                        "dist_version_code_name": codename,
                        "dist_pretty_name": f"Debian GNU/Linux {version_id} ({codename})",
                        "version_kind": "dpkg", "fixed": fixed, "fixed_in_version": fixed,
                    })
    return rows
