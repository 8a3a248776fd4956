"""The `clair.cvss` enricher: NVD CVE API 2.0 feeds (`nvdcve-2.0-<year>.json[.gz]`) -> CVSS v3 data."""

from __future__ import annotations

import json

from quaymaster.scanner.feeds.source import FeedError, FeedFile

ENRICHMENT_TYPE = ("message/vnd.clair.map.vulnerability; enricher=clair.cvss "
                   "schema=https://csrc.nist.gov/schema/nvd/api/2.0/cve_api_json_2.0.schema")


def _best_cvss(metrics: dict) -> dict | None:
    """NVD's own (Primary) v3.1 or v3.0 score first, then a CNA's (Secondary) one."""
    for want_primary in (True, False):
        for key in ("cvssMetricV31", "cvssMetricV30"):
            for metric in metrics.get(key) or []:
                if not isinstance(metric, dict) or not isinstance(metric.get("cvssData"), dict):
                    continue
                if want_primary and metric.get("type") != "Primary":
                    continue
                if isinstance(metric["cvssData"].get("baseScore"), (int, float)):
                    return metric["cvssData"]
    return None


def parse(files: list[FeedFile]) -> list[dict]:
    """Enrichment rows `{tag: CVE id, data: cvssData}`; every data item has a baseScore."""
    rows = []
    for f in files:
        if not f.name.endswith(".json"):
            continue  # e.g. the .meta sidecar
        try:
            doc = json.loads(f.data)
        except ValueError as err:
            raise FeedError(f"clair.cvss: {f.name}: not JSON: {err}") from None
        for item in doc.get("vulnerabilities") or []:
            cve = (item or {}).get("cve") or {}
            data = _best_cvss(cve.get("metrics") or {})
            if cve.get("id") and data:
                rows.append({"tag": str(cve["id"]), "data": data})
    return rows
