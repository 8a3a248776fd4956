"""Prometheus counters for the background workers, and the /metrics endpoint that serves them.

Counters only, without labels: nothing here names a user, a repository or a secret.

When PROMETHEUS_MULTIPROC_DIR is set (the registry's supervisor sets it to a fresh directory
before it spawns its server processes) every process writes its counters to files there and a
scrape sums them, so /metrics tells the same story whichever process answers. prometheus_client
reads that variable once, when it is first imported: it must be in the environment before then.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from quaymaster.content.gc import GcReport

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

GC_RUNS = Counter("quaymaster_gc_runs", "Garbage collection passes run (failed ones included).")
GC_FAILURES = Counter("quaymaster_gc_failures", "Garbage collection passes that ended in an error or left items unfinished.")
GC_TAGS = Counter("quaymaster_gc_tags_reclaimed", "Tag rows deleted by garbage collection.")
GC_MANIFESTS = Counter("quaymaster_gc_manifests_reclaimed", "Manifests deleted by garbage collection.")
GC_BLOBS = Counter("quaymaster_gc_blobs_reclaimed", "Blobs deleted by garbage collection.")
GC_BYTES = Counter("quaymaster_gc_bytes_reclaimed", "Bytes of blob storage freed by garbage collection.")
GC_UPLOADS = Counter("quaymaster_gc_uploads_reclaimed", "Stale upload sessions removed by garbage collection.")
GC_REPOSITORIES = Counter("quaymaster_gc_repositories_reclaimed",
                          "Deleted repositories purged by garbage collection.")
GC_NAMESPACES = Counter("quaymaster_gc_namespaces_reclaimed", "Deleted namespaces purged by garbage collection.")
GC_MULTIPART = Counter("quaymaster_gc_multipart_uploads_aborted",
                       "Stale multipart uploads aborted in object storage by garbage collection.")
REPLICATION_COPIES = Counter("quaymaster_replication_copies",
                             "Blobs copied to a storage location that was missing them.")
REPLICATION_FAILURES = Counter("quaymaster_replication_failures", "Replication passes that ended in an error.")


def record_gc(report: GcReport) -> None:
    """Add one pass's report to the counters."""
    for counter, value in ((GC_TAGS, report.tags), (GC_MANIFESTS, report.manifests), (GC_BLOBS, report.blobs),
                           (GC_BYTES, report.bytes), (GC_UPLOADS, report.uploads),
                           (GC_REPOSITORIES, report.repositories), (GC_NAMESPACES, report.namespaces),
                           (GC_MULTIPART, report.multipart_aborted)):
        if value > 0:
            counter.inc(value)
    if report.failed:
        GC_FAILURES.inc()


def collector_registry() -> CollectorRegistry:
    """This process's registry, or one that sums the files of every process in multiprocess mode."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return REGISTRY
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    return registry


def render(accept: str | None = None) -> tuple[bytes, str]:
    """The exposition body and its content type, in the format the scraper asked for."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(collector_registry()), content_type


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: Prometheus text (or OpenMetrics when asked for)."""
    body, content_type = render(request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
