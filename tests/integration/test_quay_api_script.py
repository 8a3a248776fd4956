"""A Quay API script, unchanged, against a real `quaymaster registry` (SQLite).

What an administrator automating a fresh Red Hat Quay would run: bootstrap the first user with
POST /api/v1/user/initialize, then, with the OAuth token it returns, create an organization, a
team, a robot and a repository, grant the robot write and the team read, push with the robot's
credentials (skopeo), list tags, read the repository's action logs, delete the tag and read the
organization's logs. Plain httpx calls; paths, JSON fields and status codes as Quay documents them.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from support.clients import Skopeo
from support.images import write_oci_layout
from support.servers import quaymaster_server

pytestmark = pytest.mark.integration

ADMIN, PASSWORD, EMAIL = "quayadmin", "quayadmin-password", "quayadmin@example.com"
ORG, TEAM, ROBOT_SHORT, REPO = "acme", "devs", "bot", "app"
ROBOT = f"{ORG}+{ROBOT_SHORT}"
LOG_WAIT_S = 10.0  # entries are written in batches, by whichever server process took the request


def _logs_until(api: httpx.Client, path: str, wanted: set[str]) -> list[dict]:
    """GET a /logs path until every wanted kind is there (or the wait runs out)."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        r = api.get(path)
        assert r.status_code == 200, r.text
        body = r.json()
        assert {"start_time", "end_time", "logs"} <= set(body)
        logs = body["logs"]
        if wanted <= {entry["kind"] for entry in logs} or time.monotonic() > deadline:
            return logs
        time.sleep(0.2)


def test_quay_api_script(tmp_path: Path, skopeo: Skopeo) -> None:
    with quaymaster_server(tmp_path / "server", config={"FEATURE_USER_INITIALIZE": True}) as server:
        base = f"{server.url}/api/v1"

        # 1. Bootstrap the first user and get an OAuth access token.
        r = httpx.post(f"{base}/user/initialize", trust_env=False, timeout=30, json={
            "username": ADMIN, "password": PASSWORD, "email": EMAIL, "access_token": True})
        assert r.status_code == 200, r.text
        first = r.json()
        assert {"username", "email", "encrypted_password", "access_token"} <= set(first)
        assert first["username"] == ADMIN and first["email"] == EMAIL and first["access_token"]
        token = first["access_token"]
        # Initializing twice is refused.
        again = httpx.post(f"{base}/user/initialize", trust_env=False, timeout=30, json={
            "username": "second", "password": PASSWORD, "email": "second@example.com", "access_token": True})
        assert again.status_code == 400

        with httpx.Client(base_url=base, trust_env=False, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as api:
            me = api.get("/user/")
            assert me.status_code == 200 and me.json()["username"] == ADMIN

            # 2. Organization.
            r = api.post("/organization/", json={"name": ORG, "email": "acme@example.com"})
            assert r.status_code == 201, r.text
            assert r.json() == "Created"
            org = api.get(f"/organization/{ORG}").json()
            assert org["name"] == ORG and org["is_admin"] is True

            # 3. Team with the member role.
            r = api.put(f"/organization/{ORG}/team/{TEAM}", json={"role": "member", "description": "developers"})
            assert r.status_code == 200, r.text
            team = r.json()
            assert team["name"] == TEAM and team["role"] == "member" and team["new_team"] is True
            assert team["description"] == "developers"

            # 4. Robot account in the organization.
            r = api.put(f"/organization/{ORG}/robots/{ROBOT_SHORT}", json={"description": "CI pusher"})
            assert r.status_code == 201, r.text
            robot = r.json()
            assert robot["name"] == ROBOT and robot["token"] and robot["description"] == "CI pusher"

            # 5. Repository.
            r = api.post("/repository", json={"repository": REPO, "namespace": ORG, "visibility": "private",
                                              "description": "the app", "repo_kind": "image"})
            assert r.status_code == 201, r.text
            assert r.json() == {"namespace": ORG, "name": REPO, "kind": "image"}

            # 6. Permissions: the robot writes, the team reads.
            r = api.put(f"/repository/{ORG}/{REPO}/permissions/user/{ROBOT}", json={"role": "write"})
            assert r.status_code == 200, r.text
            granted = r.json()
            assert granted["role"] == "write" and granted["name"] == ROBOT and granted["is_robot"] is True
            r = api.put(f"/repository/{ORG}/{REPO}/permissions/team/{TEAM}", json={"role": "read"})
            assert r.status_code == 200, r.text
            assert r.json()["role"] == "read" and r.json()["name"] == TEAM
            users = api.get(f"/repository/{ORG}/{REPO}/permissions/user/").json()["permissions"]
            assert users[ROBOT]["role"] == "write"
            teams = api.get(f"/repository/{ORG}/{REPO}/permissions/team/").json()["permissions"]
            assert teams[TEAM]["role"] == "read"

            # 7. Push an image as the robot.
            layout = write_oci_layout(tmp_path / "layout", seed="quay-api-script")
            skopeo.copy(layout.ref, f"docker://{server.host}/{ORG}/{REPO}:v1", dest_creds=f"{ROBOT}:{robot['token']}")

            # 8. Tags through the API.
            r = api.get(f"/repository/{ORG}/{REPO}/tag/", params={"onlyActiveTags": "true"})
            assert r.status_code == 200, r.text
            listing = r.json()
            assert listing["page"] == 1 and listing["has_additional"] is False
            assert [t["name"] for t in listing["tags"]] == ["v1"]
            tag = listing["tags"][0]
            assert tag["manifest_digest"] == layout.top_digest
            assert tag["is_manifest_list"] is False and tag["size"] > 0
            assert {"reversion", "start_ts", "last_modified"} <= set(tag) and "end_ts" not in tag
            repo = api.get(f"/repository/{ORG}/{REPO}").json()
            assert repo["tags"]["v1"]["manifest_digest"] == layout.top_digest
            assert repo["is_public"] is False and repo["can_admin"] is True

            # 9. Repository logs: the robot's push and the repository's creation.
            logs = _logs_until(api, f"/repository/{ORG}/{REPO}/logs", {"push_repo", "create_repo"})
            pushes = [e for e in logs if e["kind"] == "push_repo"]
            assert pushes, [e["kind"] for e in logs]
            assert pushes[0]["performer"]["name"] == ROBOT and pushes[0]["performer"]["is_robot"] is True
            assert pushes[0]["metadata"]["repo"] == REPO and pushes[0]["metadata"]["namespace"] == ORG
            assert pushes[0]["namespace"]["name"] == ORG
            created = [e for e in logs if e["kind"] == "create_repo"]
            assert created and created[0]["performer"]["name"] == ADMIN
            assert created[0]["performer"]["is_robot"] is False
            assert {"datetime", "ip", "metadata"} <= set(created[0])

            # 10. Delete the tag.
            r = api.delete(f"/repository/{ORG}/{REPO}/tag/v1")
            assert r.status_code == 204, r.text
            listing = api.get(f"/repository/{ORG}/{REPO}/tag/", params={"onlyActiveTags": "true"}).json()
            assert listing["tags"] == []

            # 11. Organization logs: everything above, in the organization's namespace.
            wanted = {"org_create", "org_create_team", "create_robot", "create_repo", "add_repo_permission",
                      "push_repo", "delete_tag"}
            logs = _logs_until(api, f"/organization/{ORG}/logs", wanted)
            kinds = {e["kind"] for e in logs}
            assert wanted <= kinds, sorted(kinds)
            deleted = [e for e in logs if e["kind"] == "delete_tag"]
            assert deleted[0]["metadata"]["tag"] == "v1" and deleted[0]["performer"]["name"] == ADMIN
            grants = [e["metadata"] for e in logs if e["kind"] == "add_repo_permission"]
            assert {(g.get("username") or g.get("team"), g["role"]) for g in grants} == {(ROBOT, "write"),
                                                                                        (TEAM, "read")}
            # Entries come newest first, as in Quay.
            assert logs[0]["kind"] == "delete_tag"

        # The robot's credentials do not open the API.
        r = httpx.get(f"{base}/repository/{ORG}/{REPO}", trust_env=False, timeout=30,
                      headers={"Authorization": f"Bearer {robot['token']}"})
        assert r.status_code == 401
