"""Merge per-layer results into one index report, honouring whiteouts from later layers.

Layers are not squashed into a filesystem: for each package database the newest layer holding it
wins (each layer that touches dpkg or apk carries the whole database), unless a later layer
whited it out; a package's `introduced_in` is the oldest layer from which it was continuously
present. Python distributions are tracked per *.dist-info directory the same way."""

from __future__ import annotations

from quaymaster.scanner.indexer.paths import is_under

PYPI_REPOSITORY = {"name": "pypi", "key": "", "uri": "https://pypi.org/simple", "cpe": ""}


def _hidden_after(path: str, index: int, layers: list[dict]) -> bool:
    """Whether a layer above `index` whites out `path` (a file whiteout or an opaque parent)."""
    for later in layers[index + 1:]:
        if any(is_under(path, w) for w in later["whiteouts"]):
            return True
        if any(path != o and is_under(path, o) for o in later["opaques"]):
            return True
    return False


def _key(pkg: dict) -> tuple:
    return pkg["name"], pkg["version"], pkg.get("arch", "")


def _current_by_db(layers: list[dict], db_of, has_db) -> list[tuple[dict, int]]:
    """(package, introduced layer index) for the newest visible copy of every package database."""
    out: list[tuple[dict, int]] = []
    dbs = sorted({db_of(p) for layer in layers for p in layer["packages"]} |
                 {db for layer in layers for db in has_db(layer)})
    for db in dbs:
        holders = [i for i, layer in enumerate(layers) if db in has_db(layer)]
        if not holders:
            continue
        newest = holders[-1]
        db_path = db.removeprefix("python:")
        if _hidden_after(db_path, newest, layers):
            continue
        current = [p for p in layers[newest]["packages"] if db_of(p) == db]
        for pkg in current:
            introduced = newest
            for i in reversed(holders[:-1]):
                if any(_key(q) == _key(pkg) for q in layers[i]["packages"] if db_of(q) == db):
                    introduced = i
                else:
                    break
            out.append((pkg, introduced))
    return out


def coalesce(manifest_hash: str, layer_hashes: list[str], layers: list[dict]) -> dict:
    """Build the IndexReport body (state IndexFinished) from ordered per-layer results."""
    found: list[tuple[dict, int]] = []
    # OS package databases: identified by their database path.
    found += _current_by_db(
        layers, db_of=lambda p: p["package_db"],
        has_db=lambda layer: [db for db in layer["dbs"]],
    )
    # Python: each *.dist-info / *.egg-info directory is its own little database.
    found = [(p, i) for p, i in found if p["ecosystem"] != "python"]
    found += _current_by_db(
        layers, db_of=lambda p: p["filepath"] if p["ecosystem"] == "python" else "\0",
        has_db=lambda layer: [p["filepath"] for p in layer["packages"] if p["ecosystem"] == "python"],
    )
    found = [(p, i) for p, i in found if p["ecosystem"] != "python" or not _hidden_after(p["filepath"], i, layers)]

    dist = None
    for i in range(len(layers) - 1, -1, -1):
        candidate = layers[i].get("dist")
        if candidate and not _hidden_after(candidate.get("source_path", ""), i, layers):
            dist = candidate
            break

    report: dict = {
        "manifest_hash": manifest_hash, "state": "IndexFinished", "packages": {}, "distributions": {},
        "repository": {}, "environments": {}, "success": True, "err": "",
    }
    dist_id = ""
    if dist:
        dist_id = "1"
        report["distributions"][dist_id] = {"id": dist_id, **{k: dist.get(k, "") for k in (
            "did", "name", "version", "version_code_name", "version_id", "arch", "cpe", "pretty_name")}}
    found.sort(key=lambda item: (item[0]["package_db"], item[0]["name"], item[0]["version"], item[0].get("arch", "")))
    next_id = len(found) + 1
    for n, (pkg, introduced) in enumerate(found, start=1):
        pid = str(n)
        out = {"id": pid, "name": pkg["name"], "version": pkg["version"], "kind": "binary",
               "normalized_version": pkg.get("normalized_version", ""), "arch": pkg.get("arch", ""), "cpe": ""}
        if pkg.get("source"):
            out["source"] = {"id": str(next_id), "name": pkg["source"]["name"], "version": pkg["source"]["version"],
                             "kind": "source", "normalized_version": "", "cpe": ""}
            next_id += 1
        repo_ids = None
        if pkg.get("repository") == "pypi":
            report["repository"]["1"] = {"id": "1", **PYPI_REPOSITORY}
            repo_ids = ["1"]
        is_os = pkg["ecosystem"] in ("dpkg", "apk")
        report["packages"][pid] = out
        report["environments"][pid] = [{
            "package_db": pkg["package_db"], "introduced_in": layer_hashes[introduced],
            "distribution_id": dist_id if is_os else "", "repository_ids": repo_ids,
        }]
    return report
