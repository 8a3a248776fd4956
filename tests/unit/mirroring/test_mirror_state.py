"""The mirror configuration's sync state on a real database (SQLite and PostgreSQL): which
configurations are due, claims that exactly one worker wins, and how a release moves the
schedule, as Quay does."""

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from quaymaster.accounts import orgs, robots
from quaymaster.accounts import service as accounts
from quaymaster.content import repositories
from quaymaster.content import service as content
from quaymaster.content.models import RepositoryState
from quaymaster.db.base import utcnow
from quaymaster.mirroring import service
from quaymaster.mirroring.models import MAX_SYNC_RETRIES, MirrorStatus, RepoMirrorConfig
from quaymaster.mirroring.service import MirrorConflict, MirrorError, MirrorNotFound

INTERVAL = 3600


async def _setup(ctx, *, state=RepositoryState.MIRROR, start_offset_s: int = -60) -> tuple:
    async with ctx.db.write() as session:
        alice = await accounts.require_user(session, "alice")
        org = await orgs.create_org(session, "acme", "acme@example.com", alice)
        await robots.create_robot(session, ctx.cipher, org, "mirror")
        await robots.create_robot(session, ctx.cipher, alice, "own")
        repo = await content.create_repository(session, org, "mirror")
        await repositories.set_state(session, repo.id, state)
    async with ctx.db.read() as session:
        repo = await content.get_repository(session, "acme", "mirror")
    body = {"external_reference": "quay.io/ns/repo", "sync_interval": INTERVAL, "robot_username": "acme+mirror",
            "sync_start_date": (utcnow() + timedelta(seconds=start_offset_s)).isoformat(),
            "root_rule": {"rule_kind": "tag_glob_csv", "rule_value": ["v1.*"]},
            "external_registry_username": "bob", "external_registry_password": "s3cret-pass"}
    if state == RepositoryState.MIRROR:
        changes = service.parse_changes(body, own_hostnames=["registry.test"], creating=True)
        async with ctx.db.write() as session:
            await service.create_config(session, ctx.cipher, repo, changes)
    return repo, body


async def _config(ctx, repo) -> RepoMirrorConfig:
    async with ctx.db.read() as session:
        return await service.get_config(session, repo.id)


async def _due(ctx) -> list[int]:
    async with ctx.db.read() as session:
        return [cid for cid, _ in await service.due_configs(session)]


async def _claim(ctx, config: RepoMirrorConfig, txn: str | None = None) -> str | None:
    async with ctx.db.write() as session:
        return await service.claim(session, config.id, txn or config.sync_transaction_id)


async def _release(ctx, config_id: int, txn: str, outcome: MirrorStatus) -> bool:
    async with ctx.db.write() as session:
        return await service.release(session, config_id, txn, outcome)


async def _set(ctx, config_id: int, **values) -> None:
    async with ctx.db.write() as session:
        await session.execute(update(RepoMirrorConfig).where(RepoMirrorConfig.id == config_id).values(**values))


async def test_create_stores_secrets_encrypted_and_grants_the_robot_write(ctx):
    repo, _ = await _setup(ctx)
    config = await _config(ctx, repo)
    assert config.sync_status == MirrorStatus.NEVER_RUN and config.sync_retries_remaining == MAX_SYNC_RETRIES
    assert config.external_registry_password.startswith("v0$$") and "s3cret" not in config.external_registry_password
    assert ctx.cipher.decrypt(config.external_registry_password) == "s3cret-pass"
    async with ctx.db.read() as session:
        view = await service.view(session, ctx.cipher, config)
        perms = {u.username: r for u, r in await service.permissions.user_permissions(session, repo.id)}
        robot = await robots.robot_by_name(session, "acme+mirror")
        assert await service.is_mirror_robot(session, repo.id, robot.id)
        assert not await service.is_mirror_robot(session, repo.id, (await accounts.require_user(session, "alice")).id)
    assert view.external_registry_username == "bob" and view.has_password and view.robot_username == "acme+mirror"
    assert "s3cret" not in repr(view)
    assert perms["acme+mirror"] == "write"


async def test_create_refusals(ctx):
    repo, body = await _setup(ctx)
    changes = service.parse_changes(body, own_hostnames=[], creating=True)
    async with ctx.db.write() as session:
        with pytest.raises(MirrorConflict):
            await service.create_config(session, ctx.cipher, repo, changes)
    for robot_name in ("alice+own", "acme+missing"):  # another namespace's robot, a robot that does not exist
        other = service.parse_changes({"robot_username": robot_name}, own_hostnames=[], creating=False)
        async with ctx.db.write() as session:
            with pytest.raises(MirrorError, match="not a robot account of acme"):
                await service.update_config(session, ctx.cipher, repo, other)
    async with ctx.db.write() as session:
        await repositories.set_state(session, repo.id, RepositoryState.NORMAL)
    async with ctx.db.read() as session:
        normal = await content.get_repository(session, "acme", "mirror")
    async with ctx.db.write() as session:
        with pytest.raises(MirrorError, match="MIRROR state"):
            await service.update_config(session, ctx.cipher, normal, changes)


async def test_due_claim_and_success_moves_to_the_next_interval(ctx):
    repo, _ = await _setup(ctx, start_offset_s=-(2 * INTERVAL + 600))
    config = await _config(ctx, repo)
    original_start = config.sync_start_date
    assert await _due(ctx) == [config.id]

    txn = await _claim(ctx, config)
    assert txn is not None
    assert await _claim(ctx, config) is None  # the old transaction id no longer matches
    claimed = await _config(ctx, repo)
    assert claimed.sync_status == MirrorStatus.SYNCING and claimed.sync_expiration_date > utcnow()
    assert await _due(ctx) == []  # a live lease is not due

    assert await _release(ctx, config.id, txn, MirrorStatus.SUCCESS)
    done = await _config(ctx, repo)
    assert done.sync_status == MirrorStatus.SUCCESS and done.sync_expiration_date is None
    assert done.sync_retries_remaining == MAX_SYNC_RETRIES
    assert utcnow() < done.sync_start_date <= utcnow() + timedelta(seconds=INTERVAL)
    assert (done.sync_start_date - original_start).total_seconds() % INTERVAL == 0
    assert await _due(ctx) == []
    assert not await _release(ctx, config.id, txn, MirrorStatus.SUCCESS)  # a released claim is spent


async def test_two_workers_racing_for_one_config_exactly_one_wins(ctx):
    repo, _ = await _setup(ctx)
    config = await _config(ctx, repo)
    results = await asyncio.gather(*(_claim(ctx, config) for _ in range(4)))
    assert sum(r is not None for r in results) == 1


async def test_failures_keep_the_date_until_retries_run_out(ctx):
    repo, _ = await _setup(ctx)
    config = await _config(ctx, repo)
    start = config.sync_start_date
    for retries_left in (2, 1):
        txn = await _claim(ctx, await _config(ctx, repo))
        assert await _release(ctx, config.id, txn, MirrorStatus.FAIL)
        failed = await _config(ctx, repo)
        assert (failed.sync_status, failed.sync_retries_remaining, failed.sync_start_date) == (
            MirrorStatus.FAIL, retries_left, start)
        assert await _due(ctx) == [config.id]  # retried at the next pass
    txn = await _claim(ctx, await _config(ctx, repo))
    assert await _release(ctx, config.id, txn, MirrorStatus.FAIL)
    exhausted = await _config(ctx, repo)
    assert exhausted.sync_status == MirrorStatus.FAIL and exhausted.sync_retries_remaining == MAX_SYNC_RETRIES
    assert exhausted.sync_start_date > utcnow()
    assert await _due(ctx) == []


async def test_sync_now_cancel_and_expired_leases(ctx):
    repo, _ = await _setup(ctx, start_offset_s=INTERVAL)  # scheduled in the future
    await _set(ctx, (await _config(ctx, repo)).id, is_enabled=False)
    config = await _config(ctx, repo)
    assert await _due(ctx) == []
    async with ctx.db.write() as session:
        await service.request_sync_now(session, repo)
    assert await _due(ctx) == [config.id]  # sync-now runs even when the schedule is disabled

    txn = await _claim(ctx, await _config(ctx, repo))
    async with ctx.db.write() as session:
        with pytest.raises(MirrorConflict, match="running"):
            await service.request_sync_now(session, repo)
        assert await service.renew_lease(session, config.id, txn, 300)
    async with ctx.db.write() as session:
        await service.cancel_sync(session, repo)
    async with ctx.db.write() as session:
        assert not await service.renew_lease(session, config.id, txn, 300)  # the worker learns of the cancel
    assert not await _release(ctx, config.id, txn, MirrorStatus.SUCCESS)
    cancelled = await _config(ctx, repo)
    assert (cancelled.sync_status, cancelled.sync_start_date, cancelled.sync_retries_remaining) == (
        MirrorStatus.CANCEL, None, 0)
    async with ctx.db.write() as session:
        with pytest.raises(MirrorError, match="no sync"):
            await service.cancel_sync(session, repo)

    # A worker that died: its lease runs out and the sync is due again.
    async with ctx.db.write() as session:
        await service.request_sync_now(session, repo)
    txn = await _claim(ctx, await _config(ctx, repo))
    await _set(ctx, config.id, sync_expiration_date=utcnow() - timedelta(seconds=1))
    assert await _due(ctx) == [config.id]
    taken = await _claim(ctx, await _config(ctx, repo))
    assert taken is not None and not await _release(ctx, config.id, txn, MirrorStatus.SUCCESS)
    # A stopping worker gives its claim back at once.
    async with ctx.db.write() as session:
        await service.abandon(session, config.id, taken)
    assert await _due(ctx) == [config.id]

    # Releasing a cancel clears the schedule; a new start date brings the retries back.
    assert await _release(ctx, config.id, taken, MirrorStatus.CANCEL)
    changes = service.parse_changes({"sync_start_date": utcnow().isoformat(), "is_enabled": True},
                                    own_hostnames=[], creating=False)
    async with ctx.db.write() as session:
        await service.update_config(session, ctx.cipher, repo, changes)
    assert (await _config(ctx, repo)).sync_retries_remaining == MAX_SYNC_RETRIES
    assert await _due(ctx) == [config.id]


async def test_only_repositories_in_mirror_state_are_due(ctx):
    repo, _ = await _setup(ctx)
    async with ctx.db.write() as session:
        await repositories.set_state(session, repo.id, RepositoryState.READ_ONLY)
    assert await _due(ctx) == []
    async with ctx.db.write() as session:
        await repositories.set_state(session, repo.id, RepositoryState.MIRROR)
    assert len(await _due(ctx)) == 1


async def test_deleting_the_robot_leaves_a_config_that_explains_itself(ctx):
    repo, _ = await _setup(ctx)
    async with ctx.db.write() as session:
        await robots.delete_robot(session, await robots.robot_by_name(session, "acme+mirror"))
    config = await _config(ctx, repo)
    assert config.internal_robot_id is None
    async with ctx.db.read() as session:
        job = await service.sync_job(session, ctx.cipher, config.id, config.sync_transaction_id)
        rows = (await session.execute(select(RepoMirrorConfig.id))).all()
    assert len(rows) == 1 and "robot account no longer exists" in job.problem
    assert job.password == "s3cret-pass" and "s3cret" not in repr(job)


async def test_sync_now_and_cancel_need_a_config(ctx):
    repo, _ = await _setup(ctx, state=RepositoryState.NORMAL)
    async with ctx.db.write() as session:
        with pytest.raises(MirrorError, match="MIRROR state"):
            await service.request_sync_now(session, repo)
        with pytest.raises(MirrorNotFound):
            await service.cancel_sync(session, repo)


async def test_garbage_collecting_a_deleted_repository_takes_its_mirror_config(ctx):
    from quaymaster.content.gc import collect_garbage

    repo, _ = await _setup(ctx)
    async with ctx.db.write() as session:
        await repositories.mark_for_deletion(session, repo.id)
    assert await _due(ctx) == []
    await collect_garbage(ctx, full=True)
    async with ctx.db.read() as session:
        assert (await session.execute(select(RepoMirrorConfig.id))).all() == []


async def test_a_missing_skopeo_fails_the_sync_clearly(ctx, monkeypatch):
    from quaymaster.auditlog import service as auditlog
    from quaymaster.mirroring import worker

    repo, _ = await _setup(ctx)
    monkeypatch.setenv("PATH", "/nonexistent")
    results = await worker.mirror_pass(ctx)
    assert [(r.path, r.status) for r in results] == [("acme/mirror", MirrorStatus.FAIL)]
    assert "skopeo is not installed" in results[0].line()
    config = await _config(ctx, repo)
    assert (config.sync_status, config.sync_retries_remaining) == (MirrorStatus.FAIL, MAX_SYNC_RETRIES - 1)
    assert await worker.mirror_pass(ctx) != []  # retries left and still due: the next pass tries again
    async with ctx.db.read() as session:
        kinds = [e.kind for e in await auditlog.entries(session, repository_id=repo.id)]
    assert kinds.count("repo_mirror_sync_failed") == 2 and "repo_mirror_sync_started" in kinds
