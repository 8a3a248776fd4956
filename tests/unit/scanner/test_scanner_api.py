"""The Clair v4 API in-process: shapes Quay validates, status codes, auth, indexing and matching."""

from __future__ import annotations

import json

import jwt
import pytest
from support.clairschema import validate
from support.scannerimages import DATA, alpine_layer, blob_server, build_layer, debian_layer, python_layer
from support.scannerservice import PSK, auth, quay_token, scanner_config

DIGEST = "sha256:" + "d" * 64


def manifest(server, layers, digest=DIGEST, token="registry-token", prefix="blobs"):
    return {"hash": digest, "layers": [
        {"hash": layer.digest, "uri": f"{server.url}/{prefix}/{layer.digest}",
         "headers": {"Authorization": [f"Bearer {token}"], "Accept": ["application/gzip"]}}
        for layer in layers]}


def vulns_by_package(report):
    out = {}
    for pid, ids in report["package_vulnerabilities"].items():
        out[report["packages"][pid]["name"]] = {report["vulnerabilities"][i]["name"]: report["vulnerabilities"][i]
                                                for i in ids}
    return out


async def test_auth_is_required_except_robots_and_health(scanner):
    for path in ("/indexer/api/v1/index_state", "/matcher/api/v1/vulnerability_report/" + DIGEST,
                 "/notifier/api/v1/notification/00000000-0000-0000-0000-000000000001"):
        resp = await scanner.get(path)
        assert resp.status_code == 401 and resp.content == b""
    wrong_key = {"Authorization": "Bearer " + quay_token(key=b"x" * 32)}
    for headers in (wrong_key, auth(iss="not-quay"), auth(exp=1), {"Authorization": "Basic Zm9vOmJhcg=="}):
        assert (await scanner.get("/indexer/api/v1/index_state", headers=headers)).status_code == 401
    assert (await scanner.get("/indexer/api/v1/index_state", headers=auth())).status_code == 200
    robots = await scanner.get("/robots.txt")
    assert robots.status_code == 200 and "Disallow: /" in robots.text
    assert (await scanner.get("/healthz")).status_code == 200
    assert (await scanner.get("/readyz")).status_code == 200
    assert "quaymaster_scanner" in (await scanner.get("/metrics")).text


async def test_index_state_etag(scanner):
    resp = await scanner.get("/indexer/api/v1/index_state", headers=auth())
    validate(resp.json(), "State")
    assert resp.headers["etag"] == f'"{resp.json()["state"]}"'
    again = await scanner.get("/indexer/api/v1/index_state", headers={**auth(), "If-None-Match": resp.headers["etag"]})
    assert again.status_code == 304


async def test_index_and_match_debian_and_python(scanner):
    assert (await scanner.get(f"/matcher/api/v1/vulnerability_report/{DIGEST}", headers=auth())).status_code == 202
    results = await scanner.runtime.run_updates()
    assert [r.outcome for r in results] == ["new"] * 4

    base, py = debian_layer(), python_layer()
    with blob_server({base.digest: base.blob, py.digest: py.blob}, token="registry-token") as srv:
        resp = await scanner.post("/indexer/api/v1/index_report", json=manifest(srv, [base, py]), headers=auth())
        assert resp.status_code == 201, resp.text
        report = resp.json()
        validate(report, "IndexReport")
        assert report["state"] == "IndexFinished" and report["success"] and report["err"] == ""
        state = (await scanner.get("/indexer/api/v1/index_state", headers=auth())).json()["state"]
        assert resp.headers["etag"] == f'"{state}"'
        assert resp.headers["location"] == f"/indexer/api/v1/index_report/{DIGEST}"
        assert len(resp.headers.get_list("link")) == 2
        fetched = len(srv.requests)
        assert all(r["headers"]["Authorization"] == "Bearer registry-token" for r in srv.requests)

        again = await scanner.post("/indexer/api/v1/index_report", json=manifest(srv, [base, py]), headers=auth())
        assert again.status_code == 201 and again.json() == report and len(srv.requests) == fetched
        refused = await scanner.post("/indexer/api/v1/index_report", json=manifest(srv, [base, py]),
                                     headers={**auth(), "If-None-Match": f'"{state}"'})
        assert refused.status_code == 412 and refused.json()["code"]

    got = await scanner.get(f"/indexer/api/v1/index_report/{DIGEST}", headers=auth())
    assert got.status_code == 200 and got.json() == report
    assert (await scanner.get(f"/indexer/api/v1/index_report/{DIGEST}",
                              headers={**auth(), "If-None-Match": f'"{state}"'})).status_code == 304

    resp = await scanner.get(f"/matcher/api/v1/vulnerability_report/{DIGEST}", headers=auth())
    assert resp.status_code == 200
    vr = resp.json()
    validate(vr, "VulnerabilityReport")
    for vuln in vr["vulnerabilities"].values():
        validate(vuln, "Vulnerability")
        assert "range" not in vuln
    found = vulns_by_package(vr)
    assert found["urllib3"]["PYSEC-2019-132"]["fixed_in_version"] == "fixed=1.24.3"
    assert "CVE-2019-11236" in found["urllib3"]["PYSEC-2019-132"]["links"]
    assert "PYSEC-2019-133" in found["urllib3"]
    assert found["pyyaml"]["PYSEC-2020-96"]["fixed_in_version"] == "fixed=5.3.1&introduced=5.1"
    coreutils = found["coreutils"]["CVE-2016-2781"]
    assert (coreutils["severity"], coreutils["normalized_severity"], coreutils["fixed_in_version"]) == ("low", "Medium", "")
    assert found["zlib1g"]["CVE-2023-45853"]["fixed_in_version"] == "1:1.2.13.dfsg-1+deb12u1"
    assert "CVE-2005-2541" in found["tar"] and "CVE-2013-4392" in found["libsystemd0"]
    assert "login" not in found  # CVE-2007-5686 is "0" (never affected), CVE-2099-0001 fixed earlier
    (enrich_key, [mapping]), = vr["enrichments"].items()
    assert "enricher=clair.cvss" in enrich_key
    cvss = mapping[coreutils["id"]]
    assert cvss[0]["baseScore"] == 6.5 and all("baseScore" in item for items in mapping.values() for item in items)

    missing = await scanner.get("/matcher/api/v1/vulnerability_report/sha256:" + "e" * 64, headers=auth())
    assert missing.status_code == 404 and missing.json()["code"] == "not-found"
    validate(missing.json(), "Error")


async def test_alpine_image(scanner):
    await scanner.runtime.run_updates()
    layer = alpine_layer()
    with blob_server({layer.digest: layer.blob}) as srv:
        resp = await scanner.post("/indexer/api/v1/index_report", json=manifest(srv, [layer]), headers=auth())
    assert resp.json()["state"] == "IndexFinished"
    vr = (await scanner.get(f"/matcher/api/v1/vulnerability_report/{DIGEST}", headers=auth())).json()
    validate(vr, "VulnerabilityReport")
    found = vulns_by_package(vr)
    assert set(found["libssl1.1"]) == {"CVE-2020-1967"}  # via origin openssl; 1.1.1d-r1 fix already in
    assert set(found["musl"]) == {"CVE-2020-28928"}
    assert "busybox" not in found


@pytest.mark.parametrize("case", ["corrupt", "no-forwarded-auth", "bad-scheme", "airgap",
                                  "airgap-redirect", "missing-layer", "redirect"])
async def test_layer_fetch_failures_become_index_errors(scanner, tmp_path, case):
    layer = debian_layer()
    with blob_server({layer.digest: layer.blob}, token="registry-token", corrupt=case == "corrupt") as srv:
        body = manifest(srv, [layer], token="wrong" if case == "no-forwarded-auth" else "registry-token",
                        prefix="redirect" if case == "redirect" else "blobs")
        if case == "bad-scheme":
            body["layers"][0]["uri"] = f"file://{tmp_path}/layer"
        if case.startswith("airgap"):
            scanner.runtime.indexer.airgap = True
            body["layers"][0]["uri"] = f"http://8.8.8.8/blobs/{layer.digest}"
        if case == "missing-layer":  # the second of two layers is not served: the whole index fails
            body = manifest(srv, [layer, python_layer()])
        if case == "airgap-redirect":  # a loopback URL that redirects to the internet
            body["layers"][0]["uri"] = f"{srv.url}/redirect-to/http://8.8.8.8/blobs/{layer.digest}"
        resp = await scanner.post("/indexer/api/v1/index_report", json=body, headers=auth())
    assert resp.status_code == 201
    report = resp.json()
    validate(report, "IndexReport")
    if case == "redirect":
        assert report["state"] == "IndexFinished"
        return
    assert report["state"] == "IndexError" and report["success"] is False and report["err"]
    expected = {"corrupt": "digest mismatch", "no-forwarded-auth": "401", "bad-scheme": "only http and https",
                "airgap": "airgap", "airgap-redirect": "airgap", "missing-layer": "404"}[case]
    assert expected in report["err"]
    await scanner.runtime.run_updates()
    assert (await scanner.get(f"/matcher/api/v1/vulnerability_report/{DIGEST}", headers=auth())).status_code == 404


async def test_bad_requests_and_deletes(scanner):
    post = "/indexer/api/v1/index_report"
    for body in (b"not json", json.dumps({"hash": DIGEST, "layers": []}).encode(),
                 json.dumps({"hash": "nope", "layers": [{}]}).encode()):
        resp = await scanner.post(post, content=body, headers=auth())
        assert resp.status_code == 400 and resp.json()["code"] == "bad-request"
    assert (await scanner.get("/indexer/api/v1/index_report/notadigest", headers=auth())).status_code == 400
    unknown = await scanner.get("/indexer/api/v1/nothing-here", headers=auth())
    assert unknown.status_code == 404 and unknown.json()["code"] == "not-found"
    assert (await scanner.put("/indexer/api/v1/index_state", headers=auth())).json()["code"] == "method-not-allowed"

    layer = build_layer({"etc/hostname": b"x\n"})
    with blob_server({layer.digest: layer.blob}) as srv:
        for digest in (DIGEST, "sha256:" + "f" * 64):
            report = (await scanner.post(post, json=manifest(srv, [layer], digest=digest), headers=auth())).json()
            assert report["state"] == "IndexFinished" and report["packages"] == {}
    deleted = await scanner.request("DELETE", post, json=[DIGEST, "sha256:" + "9" * 64], headers=auth())
    assert deleted.status_code == 200 and deleted.json() == [DIGEST]
    assert (await scanner.delete(f"{post}/sha256:{'f' * 64}", headers=auth())).status_code == 204
    assert (await scanner.get(f"{post}/sha256:{'f' * 64}", headers=auth())).status_code == 404


async def test_notifications_after_a_feed_change(scanner, webhook, tmp_path):
    feed = tmp_path / "debian.json"
    full = json.loads((DATA / "debian" / "bookworm-synthetic.json").read_text())
    feed.write_text(json.dumps({k: v for k, v in full.items() if k not in ("coreutils", "tar")}))
    scanner.runtime.config.updater_config["debian"] = {"url": str(feed)}
    await scanner.runtime.run_updates()
    assert await scanner.runtime.notifier.process() == []  # first operations are the baseline

    base, py = debian_layer(), python_layer()
    with blob_server({base.digest: base.blob, py.digest: py.blob}) as srv:
        for digest, layers in ((DIGEST, [base]), ("sha256:" + "c" * 64, [base, py])):
            await scanner.post("/indexer/api/v1/index_report", json=manifest(srv, layers, digest=digest), headers=auth())

    feed.write_text(json.dumps(full))
    results = {r.updater: r.outcome for r in await scanner.runtime.run_updates()}
    assert results == {"osv": "unchanged", "debian": "new", "alpine": "unchanged", "clair.cvss": "unchanged"}
    [set_id] = await scanner.runtime.notifier.process()
    assert await scanner.runtime.notifier.deliver() == 1

    [call] = webhook.calls
    assert call["body"] == {"notification_id": set_id,
                            "callback": f"http://scanner/notifier/api/v1/notification/{set_id}"}
    claims = jwt.decode(call["authorization"].removeprefix("Bearer "), PSK, algorithms=["HS256"])
    assert claims["iss"] == "clair-notifier" and {"iat", "nbf", "exp"} <= set(claims)

    url = f"/notifier/api/v1/notification/{set_id}"
    first = (await scanner.get(url, params={"page_size": 1}, headers=auth())).json()
    validate(first, "PagedNotifications")
    assert first["page"]["size"] == 1 and first["page"]["next"]
    second = (await scanner.get(url, params={"page_size": 1, "next": first["page"]["next"]}, headers=auth())).json()
    assert "next" not in second["page"]
    notes = first["notifications"] + second["notifications"]
    assert {n["manifest"] for n in notes} == {DIGEST, "sha256:" + "c" * 64}
    for note in notes:
        validate(note, "Notification")
        assert note["reason"] == "added"
        vuln = note["vulnerability"]
        # the most severe of the added ones: coreutils (low -> Medium) beats tar (unimportant -> Low)
        assert vuln["name"] == "CVE-2016-2781" and vuln["package"]["name"] == "coreutils"
        assert vuln["severity"] == vuln["normalized_severity"] == "Medium"

    ops = (await scanner.get("/matcher/api/v1/internal/update_operation", params={"latest": "true"},
                             headers=auth())).json()
    assert set(ops) == {"osv", "debian", "alpine", "clair.cvss"}
    all_ops = (await scanner.get("/matcher/api/v1/internal/update_operation", headers=auth())).json()
    prev, cur = all_ops["debian"][1]["ref"], all_ops["debian"][0]["ref"]
    diff = (await scanner.get("/matcher/api/v1/internal/update_diff", params={"prev": prev, "cur": cur},
                              headers=auth())).json()
    assert {v["name"] for v in diff["added"]} == {"CVE-2016-2781", "CVE-2005-2541"} and diff["removed"] == []

    assert (await scanner.delete(url, headers=auth())).status_code == 200
    assert (await scanner.get(url, headers=auth())).status_code == 404


async def test_modes_mount_only_their_routes(tmp_path):
    import httpx

    from quaymaster.scanner.api.app import build_app, build_introspection_app
    from quaymaster.scanner.runtime import Runtime

    runtime = Runtime(scanner_config(tmp_path), "indexer")
    await runtime.dbs.create_schema()
    try:
        transport = httpx.ASGITransport(app=build_app(runtime, manage_lifecycle=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
            assert (await client.get("/indexer/api/v1/index_state", headers=auth())).status_code == 200
            gone = await client.get(f"/matcher/api/v1/vulnerability_report/{DIGEST}", headers=auth())
            assert gone.status_code == 404 and gone.json()["code"] == "not-found"
        transport = httpx.ASGITransport(app=build_introspection_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/indexer/api/v1/index_state")).status_code == 404
    finally:
        await runtime.stop()


async def test_service_runs_updaters_on_start(tmp_path):
    import asyncio

    from quaymaster.scanner.runtime import Runtime

    runtime = Runtime(scanner_config(tmp_path, matcher={"disable_updaters": False, "period": "1h"}), "combo")
    await runtime.start()
    try:
        for _ in range(200):
            if await runtime.matcher.initialized() and len(await runtime.matcher.latest_operations()) == 4:
                break
            await asyncio.sleep(0.05)
        assert set(await runtime.matcher.latest_operations()) == {"osv", "debian", "alpine", "clair.cvss"}
    finally:
        await runtime.stop()
