"""Alpine secdb documents (`v3.N/main.json`, YAML accepted too): package -> {fixed version: [CVE]}."""

from __future__ import annotations

import json

import yaml

from quaymaster.scanner.feeds.source import FeedError, FeedFile


def parse(files: list[FeedFile], updater: str = "alpine") -> list[dict]:
    rows: list[dict] = []
    for f in files:
        try:
            doc = yaml.safe_load(f.data) if f.name.endswith((".yaml", ".yml")) else json.loads(f.data)
        except (ValueError, yaml.YAMLError) as err:
            raise FeedError(f"alpine: {f.name}: unreadable: {err}") from None
        if not isinstance(doc, dict) or "packages" not in doc:
            continue
        version_id = str(doc.get("distroversion", "")).lstrip("v")
        for item in doc.get("packages") or []:
            pkg = (item or {}).get("pkg") or {}
            name = pkg.get("name")
            for fixed, ids in (pkg.get("secfixes") or {}).items():
                fixed = str(fixed)
                if not name or fixed == "0":
                    continue  # "0": never affected in this release
                for text in ids or []:
                    for vuln_id in str(text).split():
                        rows.append({
                            "updater": updater, "name": vuln_id, "description": "", "issued": "",
                            "links": f"https://security.alpinelinux.org/vuln/{vuln_id}", "severity": "",
                            "normalized_severity": "Unknown", "package_name": str(name), "package_kind": "binary",
                            "dist_did": "alpine", "dist_name": "Alpine Linux", "dist_version_id": version_id,
                            "dist_pretty_name": f"Alpine Linux v{version_id}",
                            "version_kind": "apk", "fixed": fixed, "fixed_in_version": fixed,
                        })
    return rows
