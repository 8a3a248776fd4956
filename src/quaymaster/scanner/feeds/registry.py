"""The updater sets Clair's config names, with their default feed locations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from quaymaster.scanner.feeds import alpine, debian, nvd, osv
from quaymaster.scanner.feeds.source import FeedFile


@dataclass(frozen=True)
class UpdaterSpec:
    name: str
    kind: str  # vulnerability | enrichment
    parse: Callable[[list[FeedFile]], list[dict]]
    default_urls: tuple[str, ...]


_ALPINE = tuple(f"https://secdb.alpinelinux.org/v3.{n}/{repo}.json" for n in range(16, 22)
                for repo in ("main", "community"))
KNOWN_UPDATERS: dict[str, UpdaterSpec] = {
    "osv": UpdaterSpec("osv", "vulnerability", osv.parse, (
        "https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip",
        "https://osv-vulnerabilities.storage.googleapis.com/Go/all.zip")),
    "debian": UpdaterSpec("debian", "vulnerability", debian.parse,
                          ("https://security-tracker.debian.org/tracker/data/json",)),
    "alpine": UpdaterSpec("alpine", "vulnerability", alpine.parse, _ALPINE),
    "clair.cvss": UpdaterSpec("clair.cvss", "enrichment", nvd.parse, ()),
}


def urls_for(spec: UpdaterSpec, config: dict) -> list[str]:
    """`updaters.config.<name>.url`: one location or a list; else the defaults."""
    url = (config or {}).get("url")
    if url:
        return [str(u) for u in url] if isinstance(url, list) else [str(url)]
    return list(spec.default_urls)
