"""Background workers in a real `quaymaster registry`, and the commands that run them by hand.

- With two server processes, exactly one runs the workers; /metrics answers Prometheus text
  with the gc counters summed over both, so the count only grows whichever process answers
  (the other one answers alone while the first is stopped), and survives the worker process
  being killed (its replacement takes over the workers).
- `quaymaster gc` on an embedded data dir collects a deleted repository and prints its report.
- `quaymaster worker gc` runs alone beside a registry started with --no-workers, serves its
  counters on --metrics-port, and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.images import diff_id, image_config, random_layer, sha256_digest
from support.servers import QuaymasterServer, free_port, quaymaster_server, wait_for_http

from quaymaster.workers import human_bytes

from ._registry_http import OCI_MANIFEST, Account, upload_blob, v2_client

pytestmark = pytest.mark.integration

ADMIN = Account("admin", "admin-password")
GC_COUNTERS = [
    "quaymaster_gc_runs_total",
    "quaymaster_gc_failures_total",
    "quaymaster_gc_tags_reclaimed_total",
    "quaymaster_gc_manifests_reclaimed_total",
    "quaymaster_gc_blobs_reclaimed_total",
    "quaymaster_gc_bytes_reclaimed_total",
    "quaymaster_gc_uploads_reclaimed_total",
    "quaymaster_replication_copies_total",
]
RUNNING = re.compile(r"gc worker: running in this process \(pid (\d+)\)")


def scrape(url: str) -> dict[str, float]:
    """One scrape on a fresh connection (so the kernel may hand it to either process)."""
    response = httpx.get(url, trust_env=False, timeout=10, headers={"Connection": "close"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {sample.name: sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def wait_until(predicate, timeout: float, what: str, server: QuaymasterServer | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s" + (f"\n{server.log_tail()}" if server else ""))
        time.sleep(0.2)


def test_metrics_count_gc_passes_whichever_process_answers(tmp_path: Path) -> None:
    with quaymaster_server(tmp_path / "server", config={"GARBAGE_COLLECTION_FREQUENCY": 0.5},
                           args=("--workers", "2")) as server:
        url = f"{server.url}/metrics"
        first = wait_until(lambda: (m := scrape(url)).get("quaymaster_gc_runs_total", 0) >= 1 and m, 60,
                           "a first gc pass", server)
        for name in GC_COUNTERS:
            assert name in first, f"{name} missing from /metrics"
        # The count only grows from scrape to scrape, though two processes take turns answering
        # and only one of them runs the passes.
        previous = first["quaymaster_gc_runs_total"]
        for _ in range(30):
            metrics = scrape(url)
            assert metrics["quaymaster_gc_runs_total"] >= previous, (metrics, previous)
            previous = metrics["quaymaster_gc_runs_total"]
            time.sleep(0.1)
        assert previous > first["quaymaster_gc_runs_total"], "no gc pass in 3 seconds at a 0.5s frequency"
        assert previous >= 3
        assert metrics["quaymaster_gc_failures_total"] == 0, server.log_tail()

        # Exactly one process runs the workers. While it is stopped the other one answers alone,
        # and shows its counts.
        pids = RUNNING.findall(server.log_path.read_text())
        assert len(pids) == 1, server.log_tail()
        os.kill(int(pids[0]), signal.SIGSTOP)
        try:
            for _ in range(3):
                assert scrape(url)["quaymaster_gc_runs_total"] >= previous
        finally:
            os.kill(int(pids[0]), signal.SIGCONT)
        # Kill it: its replacement takes the workers over, and the dead one's counts stay in the sums.
        os.kill(int(pids[0]), signal.SIGKILL)
        wait_until(lambda: len(RUNNING.findall(server.log_path.read_text())) == 2, 60,
                   "a replacement process running the workers", server)
        replacement = RUNNING.findall(server.log_path.read_text())[1]
        assert replacement != pids[0]
        before = scrape(url)["quaymaster_gc_runs_total"]
        assert before >= previous
        wait_until(lambda: scrape(url)["quaymaster_gc_runs_total"] > before + 2, 60,
                   "gc passes in the replacement process", server)
        assert scrape(url)["quaymaster_gc_failures_total"] == 0, server.log_tail()
    assert "worker failed" not in server.log_path.read_text()


def _initialize(server: QuaymasterServer) -> str:
    """The first user and an OAuth token for /api/v1."""
    response = httpx.post(f"{server.url}/api/v1/user/initialize", trust_env=False, timeout=30, json={
        "username": ADMIN.name, "password": ADMIN.password, "email": "admin@example.com", "access_token": True})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _push_image(server: QuaymasterServer, repository: str) -> int:
    """One small image pushed over /v2; returns the bytes of its two blobs."""
    layer = random_layer(32 * 1024, seed=repository)
    config = json.dumps(image_config("amd64", "linux", [diff_id(layer)], nonce=repository)).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256_digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256_digest(layer),
                    "size": len(layer)}],
    }).encode()
    with v2_client(server.url, server.host, ADMIN, repository) as client:
        for blob in (config, layer):
            upload_blob(client, repository, blob, sha256_digest(blob))
        response = client.put(f"/v2/{repository}/manifests/latest", content=manifest,
                              headers={"Content-Type": OCI_MANIFEST})
        assert response.status_code == 201, response.text
    return len(config) + len(layer)


def _report(output: str) -> dict[str, str]:
    lines = output.strip().splitlines()
    assert lines[0].startswith("garbage collection done in"), output
    return {label.strip(): value.strip()
            for label, value in (line.strip().rsplit("  ", 1) for line in lines[1:])}


def test_gc_command_collects_a_deleted_repository(tmp_path: Path) -> None:
    # --no-workers: nothing but the command collects, so its report is predictable.
    with quaymaster_server(tmp_path / "server", config={"FEATURE_USER_INITIALIZE": True},
                           args=("--workers", "1", "--no-workers")) as server:
        token = _initialize(server)
        size = _push_image(server, "admin/doomed")
        _push_image(server, "admin/kept")
        deleted = httpx.delete(f"{server.url}/api/v1/repository/admin/doomed", trust_env=False, timeout=30,
                               headers={"Authorization": f"Bearer {token}"})
        assert deleted.status_code == 204, deleted.text

        report = _report(server.cli("gc"))
        assert report["repositories"] == "1" and report["namespaces"] == "0", report
        assert report["manifests"] == "1" and report["tags"] == "1", report
        assert report["blobs"] == "2" and report["bytes"] == human_bytes(size), report
        assert report["uploads"] == "0", report

        # Nothing left to collect; the kept repository still pulls.
        again = _report(server.cli("gc"))
        assert set(again.values()) == {"0", "0 B"}, again
        with v2_client(server.url, server.host, ADMIN, "admin/kept", actions="pull") as client:
            response = client.get("/v2/admin/kept/manifests/latest", headers={"Accept": OCI_MANIFEST})
            assert response.status_code == 200
            for layer in response.json()["layers"]:
                assert client.get(f"/v2/admin/kept/blobs/{layer['digest']}").status_code == 200

        # While another process holds the gc lock the command waits, then gives up clearly.
        result = asyncio.run(_gc_while_locked(server))
        assert result.returncode == 1, result.stdout + result.stderr
        assert "waiting for the garbage collection pass running elsewhere" in result.stderr
        assert "lock stayed taken" in result.stderr
    assert "gc worker: running" not in server.log_path.read_text()


async def _gc_while_locked(server: QuaymasterServer) -> subprocess.CompletedProcess:
    from quaymaster.db.engine import Database
    from quaymaster.events import build_events
    from quaymaster.settings import load_settings

    settings = load_settings(server.config_dir)
    db = Database(settings.DB_URI)
    _, locks = build_events(settings, db)
    try:
        async with locks.hold("gc", 60) as taken:
            assert taken
            return await asyncio.to_thread(
                subprocess.run, [server.binary, "gc", "--config-dir", str(server.config_dir), "--lock-timeout", "2"],
                capture_output=True, text=True, timeout=60, env=server.env, check=False)
    finally:
        await locks.close()
        await db.dispose()


def test_gc_command_without_a_config_says_so(tmp_path: Path) -> None:
    result = subprocess.run([_binary(), "gc", "--config-dir", str(tmp_path / "missing")], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2 and "not found" in result.stderr


def _binary() -> str:
    from support.servers import quaymaster_binary

    return quaymaster_binary()


def test_worker_command_runs_gc_alone_and_stops_on_sigterm(tmp_path: Path) -> None:
    with quaymaster_server(tmp_path / "server", config={"GARBAGE_COLLECTION_FREQUENCY": 0.3},
                           args=("--workers", "1", "--no-workers")) as server:
        port = free_port()
        log_path = tmp_path / "worker.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [server.binary, "worker", "gc", "--config-dir", str(server.config_dir), "--metrics-port", str(port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=server.env, cwd=server.data_dir)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/metrics", 60, statuses=(200,), process=process,
                          log_path=log_path)
            url = f"http://127.0.0.1:{port}/metrics"
            wait_until(lambda: scrape(url).get("quaymaster_gc_runs_total", 0) >= 3, 60,
                       f"three passes of the standalone worker\n{log_path.read_text()}")
            assert scrape(url)["quaymaster_gc_failures_total"] == 0, log_path.read_text()
            # The registry itself ran none.
            assert scrape(f"{server.url}/metrics")["quaymaster_gc_runs_total"] == 0
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, log_path.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "gc worker: stopped" in log_path.read_text()


def test_deleting_a_repository_wakes_gc_early(tmp_path: Path) -> None:
    # A pass an hour, so only the wake-up event can explain a second one.
    with quaymaster_server(tmp_path / "server", config={"FEATURE_USER_INITIALIZE": True,
                                                        "GARBAGE_COLLECTION_FREQUENCY": 3600},
                           args=("--workers", "1")) as server:
        url = f"{server.url}/metrics"
        token = _initialize(server)
        _push_image(server, "admin/doomed")
        wait_until(lambda: scrape(url)["quaymaster_gc_runs_total"] >= 1, 60, "the first pass after start", server)
        deleted = httpx.delete(f"{server.url}/api/v1/repository/admin/doomed", trust_env=False, timeout=30,
                               headers={"Authorization": f"Bearer {token}"})
        assert deleted.status_code == 204, deleted.text
        metrics = wait_until(lambda: (m := scrape(url))["quaymaster_gc_repositories_reclaimed_total"] == 1 and m,
                             30, "the deleted repository collected", server)
        assert metrics["quaymaster_gc_runs_total"] == 2
        assert metrics["quaymaster_gc_blobs_reclaimed_total"] == 2
        assert metrics["quaymaster_gc_failures_total"] == 0
