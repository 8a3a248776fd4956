"""Usage logs: who may read which log, paging, time ranges, performer filter, aggregates."""

from datetime import datetime, timedelta

from quaymaster.accounts import orgs
from quaymaster.accounts import service as accounts
from quaymaster.content import service as content
from quaymaster.db.base import utcnow

from .helpers import assert_error, bearer, signin


def day(when: datetime) -> str:
    return when.strftime("%m/%d/%Y")


async def make_repo(ctx, owner: str, name: str, visibility: str = "private") -> int:
    async with ctx.db.write() as session:
        ns = await accounts.get_namespace(session, owner)
        return (await content.create_repository(session, ns, name, visibility)).id


async def user_id(ctx, name: str) -> int:
    async with ctx.db.read() as session:
        return (await accounts.get_namespace(session, name)).id


async def test_users_see_their_own_last_action(http, ctx):
    await signin(http, "bob")
    await signin(http, "alice")
    r = await http.get("/api/v1/user/logs")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"start_time", "end_time", "logs"} and "next_page" not in body
    [entry] = body["logs"]  # bob's sign-in is not alice's business
    assert entry["kind"] == "login_success" and entry["metadata"] == {"type": "signin"}
    assert entry["performer"] == {"kind": "user", "name": "alice", "is_robot": False,
                                  "avatar": {"name": "alice", "kind": "user"}}
    assert entry["namespace"]["name"] == "alice" and entry["namespace"]["kind"] == "user"
    assert entry["datetime"].endswith("-0000") and entry["ip"]


async def test_user_logs_need_sign_in_and_the_user_admin_scope(http, ctx):
    assert_error(await http.get("/api/v1/user/logs"), 401)
    assert_error(await http.get("/api/v1/user/aggregatelogs"), 401)
    assert_error(await http.get("/api/v1/user/logs", headers=await bearer(ctx, "alice", "user:read")), 403)
    assert (await http.get("/api/v1/user/logs", headers=await bearer(ctx, "alice", "user:admin"))).status_code == 200


async def test_user_logs_leave_out_service_level_kinds(http, ctx):
    alice = await user_id(ctx, "alice")
    ctx.audit.record("service_key_create", account_id=alice, performer_id=alice, metadata={"kid": "k"})
    ctx.audit.record("create_message", account_id=alice, performer_id=alice)
    r = await http.get("/api/v1/user/logs", headers=await bearer(ctx, "alice"))
    assert [e["kind"] for e in r.json()["logs"]] == ["create_message"]


async def test_repository_logs_only_for_its_admins(http, ctx):
    secret = await make_repo(ctx, "alice", "secret")
    shown = await make_repo(ctx, "alice", "shown", "public")
    alice = await user_id(ctx, "alice")
    for repo in (secret, shown):
        ctx.audit.record("push_repo", account_id=alice, performer_id=alice, repository_id=repo,
                         metadata={"tag": "latest"})
    as_alice, as_bob = await bearer(ctx, "alice"), await bearer(ctx, "bob")

    r = await http.get("/api/v1/repository/alice/secret/logs", headers=as_alice)
    assert r.status_code == 200
    assert [(e["kind"], e["metadata"]) for e in r.json()["logs"]] == [("push_repo", {"tag": "latest"})]
    # A private repository of someone else does not exist for bob; a public one is readable but not his to audit.
    assert_error(await http.get("/api/v1/repository/alice/secret/logs", headers=as_bob), 404)
    assert_error(await http.get("/api/v1/repository/alice/secret/aggregatelogs", headers=as_bob), 404)
    assert_error(await http.get("/api/v1/repository/alice/shown/logs", headers=as_bob), 403)
    assert_error(await http.get("/api/v1/repository/alice/secret/logs"), 401)
    assert_error(await http.get("/api/v1/repository/alice/nothing/logs", headers=as_alice), 404)
    # repo:read is not enough to audit a repository.
    assert_error(await http.get("/api/v1/repository/alice/secret/logs",
                                headers=await bearer(ctx, "alice", "repo:read")), 403)


async def test_paging_twenty_at_a_time_newest_first(http, ctx):
    repo = await make_repo(ctx, "alice", "busy")
    alice = await user_id(ctx, "alice")
    start = utcnow() - timedelta(hours=2)
    for i in range(45):
        ctx.audit.record("pull_repo", account_id=alice, performer_id=alice, repository_id=repo,
                         metadata={"n": i}, datetime=start + timedelta(seconds=i))
    # Two entries in the same instant still page apart cleanly.
    ctx.audit.record("pull_repo", account_id=alice, performer_id=alice, repository_id=repo,
                     metadata={"n": 45}, datetime=start + timedelta(seconds=44))
    headers = await bearer(ctx, "alice")
    seen, token, pages = [], None, 0
    while True:
        params = {"next_page": token} if token else {}
        body = (await http.get("/api/v1/repository/alice/busy/logs", params=params, headers=headers)).json()
        pages += 1
        seen += [e["metadata"]["n"] for e in body["logs"]]
        token = body.get("next_page")
        if token is None:
            break
        assert len(body["logs"]) == 20
    assert pages == 3 and len(seen) == 46 and sorted(seen) == list(range(46))
    assert seen[:2] in ([45, 44], [44, 45]) and seen[-1] == 0
    assert_error(await http.get("/api/v1/repository/alice/busy/logs", params={"next_page": "forged"},
                                headers=headers), 400)


async def test_time_ranges(http, ctx):
    alice = await user_id(ctx, "alice")
    now = utcnow()
    for days_ago in (10, 3, 0):
        ctx.audit.record("user_change_email", account_id=alice, performer_id=alice, metadata={"days_ago": days_ago},
                         datetime=now - timedelta(days=days_ago))
    headers = await bearer(ctx, "alice")

    async def ages(**params) -> list[int]:
        r = await http.get("/api/v1/user/logs", params=params, headers=headers)
        assert r.status_code == 200, r.text
        return [e["metadata"]["days_ago"] for e in r.json()["logs"] if e["kind"] == "user_change_email"]

    assert await ages() == [0]  # the default window is the last day
    assert await ages(starttime=day(now - timedelta(days=4)), endtime=day(now)) == [0, 3]
    assert await ages(starttime=day(now - timedelta(days=11)), endtime=day(now - timedelta(days=5))) == [10]
    body = (await http.get("/api/v1/user/logs", params={"starttime": "01/02/2024", "endtime": "01/05/2024"},
                           headers=headers)).json()
    assert body["start_time"] == "Tue, 02 Jan 2024 00:00:00 -0000"
    assert body["end_time"] == "Sat, 06 Jan 2024 00:00:00 -0000"  # the end day is included
    for bad in ({"starttime": "2024-01-01"}, {"endtime": "02/30/2024"}, {"endtime": "12/31/9999"}):
        assert_error(await http.get("/api/v1/user/logs", params=bad, headers=headers), 400)
    assert_error(await http.get("/api/v1/user/logs", params={"starttime": "01/10/2024", "endtime": "01/01/2024"},
                                headers=headers), 400)


async def test_performer_filter(http, ctx):
    repo = await make_repo(ctx, "alice", "shared")
    alice, bob = await user_id(ctx, "alice"), await user_id(ctx, "bob")
    for performer in (alice, bob, bob):
        ctx.audit.record("push_repo", account_id=alice, performer_id=performer, repository_id=repo)
    headers = await bearer(ctx, "alice")
    r = await http.get("/api/v1/user/logs", params={"performer": "bob"}, headers=headers)
    assert [e["performer"]["name"] for e in r.json()["logs"]] == ["bob", "bob"]
    r = await http.get("/api/v1/user/logs", params={"performer": "nobody"}, headers=headers)
    assert r.json()["logs"] == []


async def test_aggregates_count_kinds_per_day(http, ctx):
    repo = await make_repo(ctx, "alice", "counted")
    alice = await user_id(ctx, "alice")
    noon = utcnow().replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=2)
    for kind, when, times in (("push_repo", noon, 3), ("pull_repo", noon, 2),
                              ("push_repo", noon - timedelta(days=1), 1),
                              ("push_repo", noon - timedelta(days=9), 4)):  # outside the range asked for
        for i in range(times):
            ctx.audit.record(kind, account_id=alice, performer_id=alice, repository_id=repo,
                             datetime=when + timedelta(minutes=i))
    headers = await bearer(ctx, "alice")
    params = {"starttime": day(noon - timedelta(days=1)), "endtime": day(noon)}
    for path in ("/api/v1/repository/alice/counted/aggregatelogs", "/api/v1/user/aggregatelogs"):
        r = await http.get(path, params=params, headers=headers)
        assert r.status_code == 200, r.text
        got = {(a["kind"], a["datetime"]): a["count"] for a in r.json()["aggregated"]}
        first = (noon - timedelta(days=1)).strftime("%a, %d %b %Y 00:00:00 -0000")
        second = noon.strftime("%a, %d %b %Y 00:00:00 -0000")
        assert got == {("push_repo", first): 1, ("push_repo", second): 3, ("pull_repo", second): 2}
    r = await http.get("/api/v1/user/aggregatelogs", params={"starttime": "01/01/2024", "endtime": "03/01/2024"},
                       headers=headers)
    assert_error(r, 400)


async def test_organization_logs_for_admins_only(http, ctx):
    async with ctx.db.write() as session:
        alice = await accounts.get_user(session, "alice")
        bob = await accounts.get_user(session, "bob")
        org = await orgs.create_org(session, "acme", None, alice)
        team, _ = await orgs.upsert_team(session, org, "readers", "member")
        await orgs.add_team_member(session, org, team, bob)
        org_id, alice_id = org.id, alice.id
    ctx.audit.record("org_create_team", account_id=org_id, performer_id=alice_id, metadata={"team": "readers"})
    r = await http.get("/api/v1/organization/acme/logs", headers=await bearer(ctx, "alice"))
    assert r.status_code == 200
    [entry] = r.json()["logs"]
    assert entry["namespace"] == {"kind": "org", "name": "acme", "avatar": {"name": "acme", "kind": "org"}}
    r = await http.get("/api/v1/organization/acme/aggregatelogs", headers=await bearer(ctx, "alice"))
    assert [a["kind"] for a in r.json()["aggregated"]] == ["org_create_team"]
    assert_error(await http.get("/api/v1/organization/acme/logs", headers=await bearer(ctx, "bob")), 403)
    assert_error(await http.get("/api/v1/organization/acme/logs"), 401)
    assert_error(await http.get("/api/v1/organization/nowhere/logs", headers=await bearer(ctx, "alice")), 404)
    assert_error(await http.get("/api/v1/organization/acme/logs", headers=await bearer(ctx, "alice", "repo:admin")),
                 403)
