"""Prometheus counters of the scanner (served on /metrics)."""

from prometheus_client import Counter

INDEX_REPORTS = Counter("quaymaster_scanner_index_reports_total", "Index requests that ran, by final state",
                        ["state"])
LAYERS_SCANNED = Counter("quaymaster_scanner_layers_scanned_total", "Layers fetched and scanned")
VULN_REPORTS = Counter("quaymaster_scanner_vulnerability_reports_total", "Vulnerability reports served")
UPDATER_RUNS = Counter("quaymaster_scanner_updater_runs_total", "Updater runs, by updater and outcome",
                       ["updater", "outcome"])
WEBHOOKS = Counter("quaymaster_scanner_webhook_deliveries_total", "Notifier webhook deliveries, by outcome",
                   ["outcome"])
